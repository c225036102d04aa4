"""Availability estimate: from one unit's availability to an application's and the cloud's.

Terms.  *Availability* A is the fraction of time a service answers; *unavailability* U = 1 − A.
Figures are computed as unavailabilities (small numbers kept exact in floating point) and shown
the way seed 001's table shows them: percent, nines (−log10 U) and downtime per year (365 days) and
per day.

Inputs.  ``a`` is the availability of one unit *together with the machine it runs on*; units on one
machine fail together (the machine is the failure domain).  It defaults to
:data:`DEFAULT_UNIT_AVAILABILITY` (0.99) and is settable globally (bundle ``stackha:
unit_availability``, or the ``unit_availability`` argument of :func:`estimate`, which overrides the
bundle's) and per application (option ``unit_availability``, which wins).  ``MTTR`` (bundle
``stackha: unit_mttr_hours``, default 4 h) turns ``a`` into how often a unit fails: a unit that is up
a fraction ``a`` of the time and takes MTTR to repair fails (1 − a) / MTTR times per unit of time.

Models (per kind, :class:`stackha.model.kinds.Model`):

- *majority of n* (quorum clusters: Galera, RabbitMQ, Corosync, Ceph monitors): up while more than
  half the units are up — U = Σ_{j < ⌊n/2⌋+1} C(n, j) a^j (1−a)^(n−j) when each unit has its own
  machine; with several units on one machine, the count of surviving units is summed over machines.
- *1 of n* (stateless active/active behind a load balancer): up while one unit is — U = (1−a)^n.
  haproxy retries a failed connection on another server (``option redispatch``), so the short time
  before its health check marks a server down is not counted.
- *active/passive* (one unit serves, another takes over): 1 of n, plus the failover outages: each
  failure of the active unit costs ``t_f`` seconds, so U += (1 − a)·t_f / MTTR.  The same penalty is
  added to any application reached through a VIP (the VIP moves when its holder fails) and to a
  Galera cluster written through haproxy (one writer, the others ``backup``).  Failover times
  (:data:`DEFAULT_FAILOVER_SECONDS`) are the upper ends of what was measured on the lab with
  stackha's timers: keepalived 1 s (advert_int 0.2 s; a power-off of the VIP holder gave a
  0.66–0.73 s gap, 2.9–3.5 s with the stock advert_int 1), Pacemaker 6 s (token 1000 ms, then
  fencing and the IPaddr2 start elsewhere: 2.9–6.0 s; 9.7–11.4 s with stock timers), haproxy
  backup server 2.5 s (Galera writer loss: 2.0–2.5 s write gap), other active/passive services
  60 s (an estimate).  ``stackha verify`` measures the real ones for a deployed cloud.
- *replicated* (Ceph OSDs, Swift storage): a piece of data is kept on min(3, machines) machines and
  is available while a majority of its replicas are.  A tier split into one application per zone
  (:func:`storage_tiers`) is computed once, over the units of all its applications.

The cloud's availability for a user request is the product of the availabilities of the
applications the request passes through (in series): by default the API services, the haproxy in
front of them, and what they call while serving (database, message queue, identity), following the
relations; or the bundle's ``stackha: request_path``.  Subordinates are not counted separately: they
fail with their principal's unit, and a VIP provider's effect is the failover penalty above.
"""

from __future__ import annotations

import math
import re
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from stackha.model import options as opts
from stackha.model.kinds import KINDS, Model

if TYPE_CHECKING:
    from stackha.model.bundle import Bundle

__all__ = [
    "DEFAULT_FAILOVER_SECONDS",
    "DEFAULT_MTTR_HOURS",
    "DEFAULT_UNIT_AVAILABILITY",
    "AppAvailability",
    "AvailabilityReport",
    "CloudAvailability",
    "Figure",
    "estimate",
    "failover_unavailability",
    "format_duration",
    "k_of_groups_unavailability",
    "k_of_n",
    "majority",
    "nines",
    "one_of_n",
    "request_path",
    "serial",
    "storage_tiers",
]

DEFAULT_UNIT_AVAILABILITY = 0.99
DEFAULT_MTTR_HOURS = 4.0
#: Failover time of each VIP provider or kind of takeover, seconds (see the module docstring).
DEFAULT_FAILOVER_SECONDS: dict[str, float] = {
    "keepalived": 1.0,
    "pacemaker": 6.0,
    "haproxy-backup": 2.5,
    "active-passive": 60.0,
}
SECONDS_PER_DAY = 86_400.0
SECONDS_PER_YEAR = 365 * SECONDS_PER_DAY


def _check_a(a: float) -> None:
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"availability {a} is not in [0, 1]")


# ----------------------------------------------------------------------------- the math


def k_of_groups_unavailability(group_sizes: Sequence[int], k: int, a: float) -> float:
    """Probability that fewer than ``k`` units are up, units grouped on machines.

    Args:
        group_sizes: number of units on each machine (a machine is up with probability ``a``, and
            its units with it; machines fail independently).
        k: units needed.
        a: availability of one machine (0 ≤ a ≤ 1).

    Returns:
        The unavailability (0 ≤ U ≤ 1), computed exactly by summing the distribution of the
        number of surviving units.

    Raises:
        ValueError: ``a`` outside [0, 1], ``k`` < 0, or a negative group size.
    """
    _check_a(a)
    if k < 0 or any(s < 0 for s in group_sizes):
        raise ValueError("k and group sizes must be ≥ 0")
    if k == 0:
        return 0.0
    u = 1.0 - a
    if all(size == 1 for size in group_sizes):
        return _binomial_below(len(group_sizes), k, a)
    # dist[c] = P(c units survive so far), c < k; dist[k] = P(k or more): O(groups × k)
    dist = [1.0] + [0.0] * k
    for size in group_sizes:
        new = [0.0] * (k + 1)
        for c, p in enumerate(dist):
            if p:
                new[c] += p * u
                new[min(c + size, k)] += p * a
        dist = new
    return min(1.0, math.fsum(dist[:k]))


def _binomial_below(n: int, k: int, a: float) -> float:
    """P(fewer than ``k`` of ``n`` independent units up), each up with ``a``: Σ_{j<k} C(n,j) a^j (1−a)^(n−j).

    Terms are computed in log space (no overflow for thousands of units); O(k)."""
    if k > n:
        return 1.0
    if a <= 0.0:
        return 1.0
    if a >= 1.0:
        return 0.0
    la, lu = math.log(a), math.log1p(-a)
    terms = [math.exp(math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * la + (n - j) * lu)
             for j in range(k)]
    return min(1.0, math.fsum(terms))


def k_of_n(k: int, n: int, a: float) -> float:
    """Availability of a service needing ``k`` of its ``n`` independent units (each up with ``a``).

    The binomial sum Σ_{j ≥ k} C(n, j) a^j (1−a)^(n−j).  Raises ValueError for a outside [0, 1]
    or n < 0.
    """
    if n < 0:
        raise ValueError("n must be ≥ 0")
    return 1.0 - k_of_groups_unavailability([1] * n, k, a)


def majority(n: int, a: float) -> float:
    """Availability of a quorum cluster of ``n`` units: ⌊n/2⌋ + 1 of them must be up (n ≥ 1)."""
    if n < 1:
        raise ValueError("a quorum cluster needs n ≥ 1")
    return k_of_n(n // 2 + 1, n, a)


def one_of_n(n: int, a: float) -> float:
    """Availability of ``n`` redundant units of which one suffices: 1 − (1 − a)^n (n ≥ 0)."""
    _check_a(a)
    if n < 0:
        raise ValueError("n must be ≥ 0")
    return 1.0 - (1.0 - a) ** n


def failover_unavailability(a: float, failover_s: float, mttr_hours: float) -> float:
    """Unavailability added by failovers: the active unit fails (1 − a)/MTTR times per second and
    each failure costs ``failover_s`` seconds.  Returns a fraction of time (≥ 0)."""
    _check_a(a)
    if failover_s < 0 or mttr_hours <= 0:
        raise ValueError("failover must be ≥ 0 s and MTTR > 0 h")
    return (1.0 - a) * failover_s / (mttr_hours * 3600.0)


def serial(availabilities: Iterable[float]) -> float:
    """Availability of services a request passes through one after the other: their product."""
    return 1.0 - _serial_u([1.0 - a for a in availabilities])


def _serial_u(unavail: Iterable[float]) -> float:
    total = 0.0
    for u in unavail:
        if u >= 1.0:
            return 1.0
        total += math.log1p(-u)
    return -math.expm1(total)


def nines(availability: float) -> float:
    """−log10(1 − A): 2.0 for 99 %, 4.0 for 99.99 %; ``inf`` for A = 1."""
    u = 1.0 - availability
    return math.inf if u <= 0 else -math.log10(u)


def format_duration(seconds: float) -> str:
    """A duration the way seed 001's table gives it: ``~52.6 minutes``, ``~8.64 seconds``."""
    if seconds >= SECONDS_PER_DAY:
        value, unit = seconds / SECONDS_PER_DAY, "days"
    elif seconds >= 3600:
        value, unit = seconds / 3600, "hours"
    elif seconds >= 60:
        value, unit = seconds / 60, "minutes"
    elif seconds >= 1e-3 or seconds == 0:
        value, unit = seconds, "seconds"
    else:
        value, unit = seconds * 1e6, "µs"
    return f"~{value:.3g} {unit}"


class Figure(BaseModel):
    """One availability figure.

    Attributes:
        availability: fraction of time up (0–1).
        unavailability: 1 − availability, kept separately for precision.
        percent: availability × 100.
        nines: −log10(unavailability) (``inf`` when 0).
        downtime_per_year_s, downtime_per_day_s: expected downtime, seconds (year = 365 days).
    """

    model_config = ConfigDict(frozen=True)

    availability: float
    unavailability: float
    percent: float
    nines: float
    downtime_per_year_s: float
    downtime_per_day_s: float

    @classmethod
    def from_unavailability(cls, u: float) -> Figure:
        """Build a figure from an unavailability in [0, 1]."""
        u = min(1.0, max(0.0, u))
        return cls(availability=1.0 - u, unavailability=u, percent=(1.0 - u) * 100,
                   nines=math.inf if u <= 0 else -math.log10(u),
                   downtime_per_year_s=u * SECONDS_PER_YEAR, downtime_per_day_s=u * SECONDS_PER_DAY)

    def percent_text(self) -> str:
        """The percentage with enough decimals to show its nines (``99.9997 %``)."""
        if self.unavailability <= 0:
            return "100 %"
        decimals = min(max(int(math.floor(self.nines)) + 1, 2), 12)
        return f"{self.percent:.{decimals}f} %"

    def nines_text(self) -> str:
        """Nines with one decimal (``5.3``); ``> 15`` beyond double precision."""
        return "> 15" if self.nines > 15 else f"{self.nines:.1f}"


class AppAvailability(BaseModel):
    """The availability of one application.

    Attributes:
        application: its name; kind: its stackha kind.
        model: how it was computed, in words ("majority of 3 on 3 machines").
        units: number of units; machines: number of distinct machines they run on.
        unit_availability: the per-unit availability used.
        failover_seconds: failover time added as a penalty, or None.
        figure: the result.
    """

    application: str
    kind: str
    model: str
    units: int
    machines: int
    unit_availability: float
    failover_seconds: float | None = None
    figure: Figure


class CloudAvailability(BaseModel):
    """The cloud's availability for a user request.

    Attributes:
        path: the applications the request passes through, in order.
        derived: True when the path was derived from the relations (else ``stackha:
            request_path``).
        figure: the product of the path's figures.
    """

    path: list[str]
    derived: bool
    figure: Figure


class AvailabilityReport(BaseModel):
    """Per-application figures and the cloud's.

    Attributes:
        unit_availability: the global per-unit availability used.
        unit_mttr_hours: the mean time to repair used.
        applications: by name (principals with a known kind).
        cloud: the cloud's figure, or None when no application could be computed.
    """

    unit_availability: float
    unit_mttr_hours: float
    applications: dict[str, AppAvailability]
    cloud: CloudAvailability | None


# ----------------------------------------------------------------------------- the bundle


def vip_provider_of(bundle: Bundle, app_name: str) -> str | None:
    """Who moves ``app_name``'s VIP: "keepalived", "pacemaker", or None (no VIP provider).

    The declared ``vip_provider`` when the matching subordinate is related; else a related
    hacluster (Pacemaker), else a related keepalived.  An application without a ``vip`` of its
    own is held by a related keepalived carrying ``virtual_ip``.
    """
    app = bundle.applications[app_name]
    related = {n: bundle.applications[n].kind for n in bundle.related(app_name)}
    kinds = set(related.values())
    declared = opts.vip_provider(app.options)
    if declared == "keepalived":
        return "keepalived" if "keepalived" in kinds else None
    if declared == "pacemaker":
        return "pacemaker" if "hacluster" in kinds else None
    if "hacluster" in kinds:
        return "pacemaker"
    if "keepalived" in kinds:
        return "keepalived"
    return None


def has_vip(bundle: Bundle, app_name: str) -> bool:
    """``app_name`` is reached on a VIP: its own ``vip``, or a related keepalived's ``virtual_ip``."""
    app = bundle.applications[app_name]
    if opts.vip_addresses({"vip": app.options.get("vip")}):
        return True
    for n in bundle.related(app_name):
        other = bundle.applications[n]
        if other.kind == "keepalived" and opts.vip_addresses(
                {"virtual_ip": other.options.get("virtual_ip")}, "keepalived"):
            return True
    return False


def request_path(bundle: Bundle) -> tuple[list[str], bool]:
    """The principal applications a user request passes through, and whether it was derived.

    ``stackha: request_path`` when given.  Otherwise: start from the API services (keystone,
    glance, nova-cloud-controller, …; every principal with a known kind if there is none), add the
    haproxy applications related to an application on the path (the request or its database
    connection goes through them) and, following relations, what each calls while serving
    (:attr:`KindInfo.depends_on`: database — directly or through a mysql-router subordinate —
    message queue, identity, storage).  Ordered: load balancers, then API services, then the rest.
    """
    apps = bundle.applications
    if bundle.settings.request_path:
        return [a for a in bundle.settings.request_path if a in apps], False
    entries = [n for n, a in apps.items() if a.kind and KINDS[a.kind].api and not a.subordinate]
    if not entries:
        entries = [n for n, a in apps.items() if a.kind and not a.subordinate]
    seen: list[str] = []
    seen_set: set[str] = set()
    queue = deque(entries)
    while queue:
        name = queue.popleft()
        if name in seen_set:
            continue
        seen.append(name)
        seen_set.add(name)
        info = KINDS.get(apps[name].kind or "")
        deps = set(info.depends_on) if info else set()
        if "db" in deps:
            deps |= {"galera", "mysql-router"}
        for other in sorted(bundle.related(name)):
            okind = apps[other].kind
            if okind is None or other in seen_set:
                continue
            if okind == "haproxy" or okind in deps or (
                    "*backends" in deps and not apps[other].subordinate):
                queue.append(other)
    def tier(name: str) -> int:
        kind = apps[name].kind
        if kind == "haproxy":
            return 0
        return 1 if kind in KINDS and KINDS[kind].api else 2

    principals = sorted((n for n in seen if not apps[n].subordinate), key=tier)
    return principals, True


def storage_tiers(bundle: Bundle) -> dict[str, list[str]]:
    """Storage tiers split into one application per zone: member → every member, bundle order.

    Applications of one replicated kind (Swift storage, Ceph OSDs: :attr:`Model.REPLICATED`) with
    the same charm that relate to the same, non-empty set of principals (``swift-storage-z1``,
    ``-z2``, ``-z3`` each related to ``swift-proxy``: the layout of the Swift charms' test
    bundles, one application per ring zone) hold one data set replicated across them: they are
    one tier.  Applications in no such group are not in the result.
    """
    groups: dict[tuple[str, str, frozenset[str]], list[str]] = {}
    apps = bundle.applications
    for name, app in apps.items():
        info = KINDS.get(app.kind or "")
        if info is None or info.model is not Model.REPLICATED or app.subordinate:
            continue
        related = frozenset(o for o in bundle.related(name) if not apps[o].subordinate)
        if not related:
            continue
        charm = re.sub(r"-\d+$", "", app.charm.rsplit("/", 1)[-1])
        groups.setdefault((app.kind or "", charm, related), []).append(name)
    return {m: members for members in groups.values() if len(members) > 1 for m in members}


def _app_figure(bundle: Bundle, name: str, a: float, mttr: float,
                tier: list[str] | None = None) -> AppAvailability | None:
    app = bundle.applications[name]
    info = KINDS.get(app.kind or "")
    if info is None or app.subordinate or info.model is Model.NONE:
        return None
    units = [u for m in tier for u in bundle.units(m)] if tier else bundle.units(name)
    n = len(units)
    groups = list(Counter(u.machine for u in units).values())
    m = len(groups)
    settings_f = bundle.settings.failover_seconds
    app_f = opts.failover_seconds(app.options)

    def failover(default_key: str) -> float:
        if app_f is not None:
            return app_f
        if settings_f is not None:
            return settings_f
        return DEFAULT_FAILOVER_SECONDS[default_key]

    penalty_s: float | None = None
    if info.model is Model.QUORUM:
        k = n // 2 + 1 if n else 1
        u = k_of_groups_unavailability(groups, k, a)
        text = f"majority of {n} ({k} up) on {m} machine(s)"
    elif info.model is Model.REPLICATED:
        r = min(3, m)
        u = k_of_groups_unavailability([1] * r, r // 2 + 1, a) if r else 1.0
        text = f"{r // 2 + 1} of {r} replicas up ({n} units on {m} machine(s))"
        if tier:
            text = f"tier {', '.join(tier)}: {text}"
    else:
        u = k_of_groups_unavailability(groups, 1, a)
        text = f"1 of {n} on {m} machine(s)"
        if info.model is Model.SINGLE_ACTIVE and n >= 2:
            penalty_s = failover("active-passive")
            text = f"active/passive, {text}"
    if has_vip(bundle, name):
        provider = vip_provider_of(bundle, name)
        if provider is None:
            # nothing moves the VIP: it lives on one unit's machine
            u = max(u, 1.0 - a)
            text += ", VIP without HA provider (as one unit)"
            penalty_s = None
        elif n >= 2:
            penalty_s = failover(provider)
            text += f", VIP via {provider}"
    elif app.kind == "galera" and n >= 2 and any(
            bundle.applications[o].kind == "haproxy" for o in bundle.related(name)):
        penalty_s = failover("haproxy-backup")
        text += ", one writer via haproxy"
    if penalty_s is not None:
        u = _serial_u([u, failover_unavailability(a, penalty_s, mttr)])
        text += f" (failover {penalty_s:g} s)"
    if n == 0:
        u, text = 1.0, "no units"
    return AppAvailability(application=name, kind=app.kind or "", model=text, units=n, machines=m,
                           unit_availability=a, failover_seconds=penalty_s,
                           figure=Figure.from_unavailability(u))


def estimate(bundle: Bundle, unit_availability: float | None = None) -> AvailabilityReport:
    """Estimate each application's availability and the cloud's (see the module docstring).

    Args:
        bundle: a loaded bundle.
        unit_availability: global per-unit availability (0 < a < 1), overriding the bundle's
            ``stackha: unit_availability``; per-application options still win.

    Raises:
        ValueError: ``unit_availability`` not strictly between 0 and 1.
    """
    if unit_availability is not None and not 0 < unit_availability < 1:
        raise ValueError(f"unit availability {unit_availability} is not strictly between 0 and 1")
    global_a = (unit_availability if unit_availability is not None
                else bundle.settings.unit_availability or DEFAULT_UNIT_AVAILABILITY)
    mttr = bundle.settings.unit_mttr_hours
    figures: dict[str, AppAvailability] = {}
    tiers = storage_tiers(bundle)
    for name, app in bundle.applications.items():
        a = opts.unit_availability(app.options) or global_a
        tier = tiers.get(name)
        if tier and tier[0] != name and tier[0] in figures:  # computed once per tier
            figures[name] = figures[tier[0]].model_copy(update={"application": name})
            continue
        fig = _app_figure(bundle, name, a, mttr, tier)
        if fig is not None:
            figures[name] = fig
    path, derived = request_path(bundle)
    kept: list[str] = []
    tiers_seen: set[str] = set()
    for p in path:  # a tier is one step of the request, however many applications it has
        if p not in figures or (p in tiers and tiers[p][0] in tiers_seen):
            continue
        if p in tiers:
            tiers_seen.add(tiers[p][0])
        kept.append(p)
    path = kept
    cloud = None
    if path:
        u = _serial_u([figures[p].figure.unavailability for p in path])
        cloud = CloudAvailability(path=path, derived=derived, figure=Figure.from_unavailability(u))
    return AvailabilityReport(unit_availability=global_a, unit_mttr_hours=mttr,
                              applications=figures, cloud=cloud)

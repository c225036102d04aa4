"""Analysis of a valid bundle: single points of failure, quorum, conflicts, missing relations.

:func:`analyze` returns an :class:`AnalysisReport`: a list of :class:`Finding` (each with a
severity, a code, the bundle path it is about and a fix), the classification of every application
per the OpenStack HA guide, and the availability estimate of :mod:`stackha.model.availability`.

Finding codes:

========================= ======== =================================================================
code                      severity meaning
========================= ======== =================================================================
``spof``                  error    one failure domain (a machine) whose loss stops an application:
                                   one unit, every unit on one machine, or one machine holding the
                                   majority of a quorum cluster; or a VIP nothing moves
``spof-zone``             warning  as ``spof``, for an availability zone
``quorum``                warning  a quorum cluster (Galera, RabbitMQ, Corosync, Ceph monitors) of
                                   2 or of an even size
``cluster-count``         error    hacluster ``cluster_count`` larger than its principal's units: the
                                   Pacemaker cluster never forms
``vip-provider``          error    ``vip_provider`` names a provider that is not related
``vip-providers``         warning  both hacluster and keepalived related, no ``vip_provider``
``vrrp-router-id``        error    two keepalived applications with one VRRP router id
``corosync-mcast``        error    two hacluster applications on one Corosync multicast address
``missing-relation``      warning  a relation an operator would expect is absent (keystone without a
                                   database; nova-cloud-controller without amqp, database, identity…)
``missing-certificates``  warning  vault is in the bundle and gives other API services certificates,
                                   not this one (seed 004's masakari)
``no-units``              warning  a principal with 0 units
``keepalived-no-vip``     warning  a keepalived whose principal declares no VIP
``hacluster-no-vip``      warning  an hacluster beside a principal with no ``vip`` and no DNS HA
                                   (``dns-ha``, ``os-*-hostname``): the Pacemaker cluster manages
                                   no address a client can reach
``duplicate-key``         warning  a mapping key given twice (the last value is used, as in Juju)
``unknown-charm``         warning  a charm stackha does not know (not analysed, not deployable)
``unknown-key``           warning  a key neither Juju nor stackha defines (a typo?)
``unknown-option``        warning  an option close to one stackha reads (a typo?)
``not-deployable``        info     a known kind stackha cannot deploy yet
``ignored-key``           info     a Juju key stackha keeps but does not read
``ignored-options``       info     charm options stackha keeps but does not read
``cross-model``           info     a relation to a ``saas:`` offer (another model): not analysed
``unused-machine``        info     a machine no unit is placed on
``swift-zones``           warning  fewer Swift zones than replicas: one zone's loss takes several
                                   copies of some objects (seed 003: one replica per zone)
``swift-devices``         error    fewer Swift storage units than replicas: the ring cannot place
                                   every replica on its own device
========================= ======== =================================================================

Failure domains: the machine (a unit in ``lxd:1`` fails with machine 1) and, when the bundle
gives at least two zones, the availability zone.  Corosync's cluster is the hacluster's principal
units; Pacemaker remote nodes do not vote.

A storage tier split into one application per zone (``swift-storage-z1``, ``-z2``, ``-z3``, one
unit each, the layout of the Swift charms' own bundles) is analysed as one tier across its zones
(:func:`stackha.model.availability.storage_tiers`), not as three single points of failure.

Every check is linear in the number of applications, units and relations
(``bench/analyze_scale.py`` measures it).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel

from stackha.model import options as opts
from stackha.model.availability import (
    AvailabilityReport,
    estimate,
    has_vip,
    storage_tiers,
    vip_provider_of,
)
from stackha.model.kinds import DEPLOYABLE_KINDS, KINDS, Model
from stackha.model.loader import (
    APP_JUJU_KEYS,
    APP_KEYS,
    MACHINE_JUJU_KEYS,
    MACHINE_KEYS,
    TOP_JUJU_KEYS,
    TOP_KEYS,
    suggest,
)
from stackha.model.problems import Finding

if TYPE_CHECKING:
    from stackha.model.bundle import Bundle

__all__ = ["AnalysisReport", "Classification", "Finding", "analyze"]

_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
Add = Callable[[Finding], None]


class Classification(BaseModel):
    """An application's place in the OpenStack HA guide's vocabulary.

    Attributes:
        application, kind: the application and its stackha kind (None if unknown).
        state: "stateful", "stateless" or "unknown".
        mode: "active/active", "active/passive", "-" (a subordinate) or "unknown".
        note: how stackha makes it HA, in a few words.
    """

    application: str
    kind: str | None
    state: str
    mode: str
    note: str = ""


class AnalysisReport(BaseModel):
    """The result of :func:`analyze`.

    Attributes:
        findings: every finding, errors first, then warnings, then info.
        classification: per application.
        availability: per application and for the cloud.
    """

    findings: list[Finding]
    classification: dict[str, Classification]
    availability: AvailabilityReport
    #: ``{application: text}``: what the deployed component is known to lose or miss even in this
    #: design (measured, with the test that shows it) — not a finding, since no bundle change fixes it.
    known_limits: dict[str, str] = {}

    @property
    def has_errors(self) -> bool:
        """At least one finding of severity "error"."""
        return any(f.severity == "error" for f in self.findings)

    @property
    def has_warnings(self) -> bool:
        """At least one finding of severity "warning"."""
        return any(f.severity == "warning" for f in self.findings)

    def counts(self) -> dict[str, int]:
        """Number of findings per severity (all three keys present)."""
        c = Counter(f.severity for f in self.findings)
        return {s: c.get(s, 0) for s in ("error", "warning", "info")}


def analyze(bundle: Bundle, *, unit_availability: float | None = None) -> AnalysisReport:
    """Analyse a bundle: findings, classification and availability estimate.

    Args:
        bundle: a bundle from :func:`stackha.model.load_bundle`.
        unit_availability: global per-unit availability (0 < a < 1) overriding the bundle's
            ``stackha: unit_availability``; None keeps the bundle's (default 0.99).

    Raises:
        ValueError: ``unit_availability`` not strictly between 0 and 1.
    """
    findings: list[Finding] = []
    add = findings.append
    _keys(bundle, add)
    _charms(bundle, add)
    _spof(bundle, add)
    _quorum(bundle, add)
    _vips(bundle, add)
    _conflicts(bundle, add)
    _relations(bundle, add)
    _swift(bundle, add)
    findings.sort(key=lambda f: _SEVERITY_ORDER[f.severity])
    classification = _classify(bundle)
    limits = {name: KNOWN_LIMITS[c.kind] for name, c in classification.items() if c.kind in KNOWN_LIMITS}
    return AnalysisReport(findings=findings, classification=classification,
                          availability=estimate(bundle, unit_availability), known_limits=limits)


#: Known limits of the components stackha deploys, per kind (shown by ``stackha analyze``).
KNOWN_LIMITS: dict[str, str] = {
    "rabbitmq": ("RabbitMQ 3.10.8 (Debian 12): a quorum queue declared less than about a second before "
                 "every broker loses power at once can come back empty after the cold start — its "
                 "confirmed messages are lost (3 of 3 lab runs in one session, 1 of 2 in another; tests/lab/test_rabbitmq.py, an expected "
                 "failure). stackha's recover reports it as DATA LOST. Queues older than that keep "
                 "every confirmed message. A node that goes silent (power loss, cut link) is declared "
                 "down only after net_ticktime (stackha: 10 s, so 7.5-12.5 s), and its quorum queues "
                 "elect new leaders after that: AMQP confirm gaps of about 11 s (stackha verify, "
                 "partition-controller and controller-poweroff)."),
    "haproxy": ("A request already in flight through a load balancer or to a backend that loses power "
                "gets no answer and no reset: it waits for its client's own timeout (10 s for stackha "
                "verify's Keystone probe); requests sent after the VIP moved are served within about "
                "1 s. Clients should set request timeouts and retry."),
}


def _keys(bundle: Bundle, add: Add) -> None:
    for f in bundle.load_findings():
        add(f)
    for rel in bundle.cross_model_relations:
        local, remote = (rel.a, rel.b) if rel.b in bundle.saas else (rel.b, rel.a)
        url = (bundle.saas.get(remote) or {}).get("url")
        add(Finding(severity="info", code="cross-model", path=f"applications.{local}",
                    message=f"{local} relates to {remote}, an offer of another model"
                    f"{f' ({url})' if url else ''}: its availability is not analysed here"))

    def report(path: str, key: str, understood: tuple[str, ...], juju: tuple[str, ...]) -> None:
        if key in juju or key in understood:
            add(Finding(severity="info", code="ignored-key", path=path,
                        message=f"Juju key {key!r} is kept but not read by stackha"))
        else:
            add(Finding(severity="warning", code="unknown-key", path=path,
                        message=f"unknown key {key!r} (neither Juju nor stackha defines it)",
                        fix=suggest(key, understood + juju) + "remove it or correct its name"))

    for key in bundle.extra:
        report(key, key, TOP_KEYS, TOP_JUJU_KEYS)
    for mid, m in bundle.machines.items():
        for key in m.extra:
            report(f"machines.{mid}.{key}", key, MACHINE_KEYS, MACHINE_JUJU_KEYS)
    for name, app in bundle.applications.items():
        for key in app.extra:
            report(f"applications.{name}.{key}", key, APP_KEYS, APP_JUJU_KEYS)
        read = opts.read_options(app.kind)
        ignored = []
        for key in app.options:
            if key in read:
                continue
            hint = suggest(key, read)
            if hint:
                add(Finding(severity="warning", code="unknown-option",
                            path=f"applications.{name}.options.{key}",
                            message=f"option {key!r} is not read by stackha",
                            fix=hint + "correct its name if it is meant for stackha"))
            else:
                ignored.append(key)
        if ignored:
            add(Finding(severity="info", code="ignored-options", path=f"applications.{name}.options",
                        message="charm options kept but not read by stackha: " + ", ".join(ignored)))


def _charms(bundle: Bundle, add: Add) -> None:
    for name, app in bundle.applications.items():
        path = f"applications.{name}.charm"
        if app.kind is None:
            add(Finding(severity="warning", code="unknown-charm", path=path,
                        message=f"charm {app.charm!r} maps to no stackha service kind: it is "
                        "neither analysed nor deployed",
                        fix="use a charm stackha knows (" + ", ".join(sorted(KINDS)) + ")"))
        elif app.kind not in DEPLOYABLE_KINDS:
            add(Finding(severity="info", code="not-deployable", path=path,
                        message=f"stackha cannot deploy {app.kind} yet (it is analysed)"))
    used = {u.machine for units in bundle.all_units().values() for u in units}
    for mid in bundle.machines:
        if mid not in used:
            add(Finding(severity="info", code="unused-machine", path=f"machines.{mid}",
                        message=f"no unit is placed on machine {mid}"))


def _needed(kind: str | None, n: int) -> int:
    """Units ``kind`` needs up out of ``n``: a majority for quorum kinds, else one."""
    info = KINDS.get(kind or "")
    if info is not None and info.model is Model.QUORUM:
        return n // 2 + 1
    return 1


def _spof(bundle: Bundle, add: Add) -> None:
    units = bundle.all_units()
    zones = {u.zone for us in units.values() for u in us if u.zone is not None}
    tiers = storage_tiers(bundle)
    groups: list[tuple[str, list[str]]] = []  # (label, member applications)
    for name, app in bundle.applications.items():
        if app.subordinate:
            continue
        members = tiers.get(name)
        if members is None:
            groups.append((name, [name]))
        elif members[0] == name:
            groups.append((f"the {app.kind} tier {', '.join(members)}", members))
    for label, members in groups:
        name = members[0]
        app = bundle.applications[name]
        us = [u for m in members for u in units[m]]
        n = len(us)
        quorum = KINDS.get(app.kind or "") is not None and KINDS[app.kind or ""].model is Model.QUORUM
        if n == 0:
            add(Finding(severity="warning", code="no-units", path=f"applications.{name}.num_units",
                        message=f"{label} has no units", fix="set num_units (3 for HA)"))
            continue
        if n == 1:
            add(Finding(severity="error", code="spof", path=f"applications.{name}.num_units",
                        message=f"{label} has one unit: its failure (or its machine's) stops "
                        f"{app.kind or 'the application'}",
                        fix="set num_units: 3 and place the units on different machines"))
            continue
        need = _needed(app.kind, n)
        by_machine = Counter(u.machine for u in us)
        if quorum and max(by_machine.values()) == 1:
            # one unit per machine: only a 2-member cluster loses quorum with one machine, and the
            # quorum check reports that with its reason
            by_machine = Counter()
        for machine, count in by_machine.items():
            if n - count < need:
                if count == n:
                    msg = f"all {n} units of {label} run on machine {machine}: its failure stops {label}"
                else:
                    msg = (f"machine {machine} holds {count} of the {n} units of {label}: its failure "
                           f"leaves {n - count}, short of the majority of {need} (quorum lost)")
                add(Finding(severity="error", code="spof", path=f"applications.{name}.to",
                            message=msg, fix="place the units on different machines"))
        if len(zones) >= 2 and all(u.zone is not None for u in us):
            by_zone = Counter(u.zone for u in us)
            for zone, count in by_zone.items():
                if n - count < need:
                    what = "all its units" if count == n else f"{count} of its {n} units"
                    tail = "" if not quorum or count == n else " (quorum lost)"
                    add(Finding(severity="warning", code="spof-zone", path=f"applications.{name}.to",
                                message=f"zone {zone} holds {what}: losing the zone stops {label}{tail}",
                                fix=f"spread {label} over the zones ({', '.join(sorted(map(str, zones)))})"))


def _quorum_size_finding(path: str, what: str, n: int, add: Add) -> None:
    if n == 2:
        add(Finding(severity="warning", code="quorum", path=path,
                    message=f"{what} has 2 members: a majority of 2 is 2, so losing either one "
                    "loses quorum — a 2-member cluster is less available than 1 member",
                    fix="use an odd count ≥ 3 (3 units)"))
    elif n >= 4 and n % 2 == 0:
        add(Finding(severity="warning", code="quorum", path=path,
                    message=f"{what} has {n} members: it tolerates {n // 2 - 1} failure(s), no more "
                    f"than {n - 1} would, and can split into two halves with no majority",
                    fix=f"use an odd count ({n - 1} or {n + 1})"))


def _quorum(bundle: Bundle, add: Add) -> None:
    for name, app in bundle.applications.items():
        info = KINDS.get(app.kind or "")
        if info is None:
            continue
        if info.model is Model.QUORUM and not app.subordinate:
            _quorum_size_finding(f"applications.{name}.num_units", f"{app.kind} cluster {name}",
                                 app.num_units, add)
        if app.kind == "hacluster":
            principals = [p for p in bundle.principals_of(name)
                          if bundle.applications[p].kind != "pacemaker-remote"]
            if not principals:
                continue
            size = sum(bundle.applications[p].num_units for p in principals)
            _quorum_size_finding(f"applications.{name}", f"the Corosync cluster of {name} "
                                 f"(units of {', '.join(principals)})", size, add)
            count = opts.cluster_count(app.options)
            if count > size:
                given = "cluster_count" in app.options
                add(Finding(severity="error", code="cluster-count",
                            path=f"applications.{name}.options.cluster_count",
                            message=f"cluster_count is {count}{'' if given else ' (default)'} but "
                            f"{', '.join(principals)} has {size} unit(s): the Pacemaker cluster "
                            "never forms", fix=f"set cluster_count: {size}, or add units"))


def _vips(bundle: Bundle, add: Add) -> None:
    for name, app in bundle.applications.items():
        if app.subordinate:
            if app.kind == "hacluster" and not app.options.get("resources"):
                for p in bundle.principals_of(name):
                    popts = bundle.applications[p].options
                    behind_lb = any(bundle.applications[o].kind == "haproxy" for o in bundle.related(p)
                                    if o in bundle.applications)
                    if bundle.applications[p].kind == "pacemaker-remote" or behind_lb or \
                            opts.vip_addresses({"vip": popts.get("vip")}) or opts.dns_ha(popts):
                        continue  # behind_lb: clients reach it on the load balancer's VIP
                    add(Finding(severity="warning", code="hacluster-no-vip", path=f"applications.{name}",
                                message=f"hacluster {name} runs beside {p}, which declares no vip "
                                "(nor dns-ha / os-*-hostname): the Pacemaker cluster manages no "
                                f"address a client can reach, so a failed unit of {p} is not "
                                "failed over for its clients",
                                fix=f"set vip (and vip_cidr) on {p}, or dns-ha: true with "
                                "os-public-hostname; or remove the hacluster"))
            if app.kind == "keepalived":
                principals = bundle.principals_of(name)
                own = opts.vip_addresses({"virtual_ip": app.options.get("virtual_ip")}, "keepalived")
                if not own and not any(opts.vip_addresses({"vip": bundle.applications[p].options.get("vip")})
                                       for p in principals):
                    add(Finding(severity="warning", code="keepalived-no-vip", path=f"applications.{name}",
                                message=f"keepalived {name} holds no VIP: neither it (virtual_ip) nor "
                                "its principal (vip) declares one",
                                fix="set vip (and vip_provider: keepalived) on the principal"))
            continue
        if not opts.vip_addresses({"vip": app.options.get("vip")}):
            continue
        kinds = {bundle.applications[o].kind for o in bundle.related(name)}
        declared = opts.vip_provider(app.options)
        vip = app.options.get("vip")
        if declared is not None and vip_provider_of(bundle, name) is None:
            sub = "keepalived" if declared == "keepalived" else "hacluster"
            add(Finding(severity="error", code="vip-provider",
                        path=f"applications.{name}.options.vip_provider",
                        message=f"vip_provider is {declared} but no {sub} is related to {name}: "
                        f"nothing holds VIP {vip}",
                        fix=f"relate a {sub} subordinate to {name}"))
        elif declared is None and vip_provider_of(bundle, name) is None:
            add(Finding(severity="error", code="spof", path=f"applications.{name}.options.vip",
                        message=f"VIP {vip} has no HA provider (no hacluster, no keepalived "
                        f"related to {name}): nothing moves it when its machine fails",
                        fix=f"relate a hacluster (Pacemaker) or a keepalived (VRRP) subordinate to "
                        f"{name} and set vip_provider"))
        elif declared is None and {"hacluster", "keepalived"} <= kinds:
            add(Finding(severity="warning", code="vip-providers", path=f"applications.{name}.options",
                        message=f"both a hacluster and a keepalived are related to {name}: two "
                        f"providers would fight over VIP {vip}",
                        fix="set vip_provider: keepalived or pacemaker, and remove the other relation"))


def _conflicts(bundle: Bundle, add: Add) -> None:
    by_router: dict[int, list[str]] = defaultdict(list)
    by_mcast: dict[str, list[str]] = defaultdict(list)
    for name, app in bundle.applications.items():
        if app.kind == "keepalived":
            vips = opts.vip_addresses(app.options, app.kind) or [
                v for other in sorted(bundle.related(name))
                for v in opts.vip_addresses(bundle.applications[other].options, bundle.applications[other].kind)]
            by_router[opts.router_id(app.options, vips[0] if vips else None)].append(name)
        if app.kind == "hacluster":
            addr = opts.corosync_mcast(app.options)
            if addr is not None:
                by_mcast[addr].append(name)
    for rid, names in by_router.items():
        for name in names[1:]:
            given = "router_id" in bundle.applications[name].options
            add(Finding(severity="error", code="vrrp-router-id",
                        path=f"applications.{name}.options.router_id",
                        message=f"VRRP router id {rid}{'' if given else ' (default)'} is also used by "
                        f"{names[0]}: two VRRP instances with one router id on a network segment "
                        "fight over their VIPs", fix="give each keepalived its own router_id (1–255)"))
    for addr, names in by_mcast.items():
        for name in names[1:]:
            add(Finding(severity="error", code="corosync-mcast",
                        path=f"applications.{name}.options.corosync_mcastaddr",
                        message=f"Corosync multicast address {addr} is also used by {names[0]}: "
                        "the two clusters would see each other's membership traffic",
                        fix="give each hacluster its own corosync_mcastaddr (seed 000: 226.94.1.N)"))


def _relations(bundle: Bundle, add: Add) -> None:
    apps = bundle.applications
    vaults = [n for n, a in apps.items() if a.kind == "vault"]
    with_certs = {o for v in vaults for o in bundle.related(v)}
    first_of_kind: dict[str | None, list[str]] = {}  # the first two applications of each kind
    for n, a in apps.items():
        names = first_of_kind.setdefault(a.kind, [])
        if len(names) < 2:
            names.append(n)
    any_api_with_certs = any(apps[o].kind and KINDS[apps[o].kind].api for o in with_certs)
    for name, app in apps.items():
        info = KINDS.get(app.kind or "")
        if info is None:
            continue
        related = bundle.related(name)
        related_kinds = {apps[o].kind for o in related}
        for label, kinds in info.expects:
            if kinds == ("*",):
                ok = any(not apps[o].subordinate and apps[o].kind != "haproxy" for o in related) \
                    if app.kind == "haproxy" else any(not apps[o].subordinate for o in related)
            else:
                ok = bool(related_kinds & set(kinds))
            if ok:
                continue
            candidates = [o for k in kinds for o in first_of_kind.get(k, ()) if o != name]
            example = f"- [{name}, {candidates[0]}]" if candidates else \
                f"an application of kind {' or '.join(k for k in kinds if k != '*') or 'principal'}"
            remote = sorted({r.a if r.b == name else r.b for r in bundle.cross_model_of(name)})
            if remote:  # an offer of another model may well be what is missing
                add(Finding(severity="info", code="missing-relation", path=f"applications.{name}",
                            message=f"{name} ({app.kind}) has no relation to {label} in this "
                            f"model; it may come from its cross-model relation(s) to "
                            f"{', '.join(remote)}"))
                continue
            add(Finding(severity="warning", code="missing-relation", path=f"applications.{name}",
                        message=f"{name} ({app.kind}) has no relation to {label}",
                        fix=f"add the relation: {example}"))
        if info.api and vaults and name not in with_certs and any_api_with_certs:
            add(Finding(severity="warning", code="missing-certificates", path=f"applications.{name}",
                        message=f"{vaults[0]} gives TLS certificates to other API services but not "
                        f"to {name}: its endpoint will not match the others (seed 004: masakari "
                        "answered 503 until this relation was added)",
                        fix=f"add the relation: - [{vaults[0]}:certificates, {name}:certificates]"))


def _swift(bundle: Bundle, add: Add) -> None:
    """Swift's failure domains: each of a proxy's ``replicas`` should live in its own zone.

    Zones of the storage units related to the proxy: with ``zone-assignment: manual`` (the
    charm's default) each unit's zone (its application's ``zone`` option or its machine's zone);
    with ``auto`` the proxy deals units round-robin into ``replicas`` zones."""
    units = bundle.all_units()
    for name, app in bundle.applications.items():
        if app.kind != "swift-proxy":
            continue
        try:
            replicas = int(app.options.get("replicas", 3))
        except (TypeError, ValueError):
            continue
        stores = sorted(o for o in bundle.related(name) if bundle.applications[o].kind == "swift-storage")
        devs = [u for s in stores for u in units[s]]
        if not devs:
            continue
        path = f"applications.{name}.options.replicas"
        if len(devs) < replicas:
            add(Finding(severity="error", code="swift-devices", path=path,
                        message=f"{name} keeps {replicas} replicas but has {len(devs)} storage unit(s): "
                        "the ring cannot give every replica a device of its own",
                        fix=f"add swift-storage units (≥ {replicas}) or lower replicas"))
            continue
        if str(app.options.get("zone-assignment", "manual")) == "auto":
            zones = min(replicas, len(devs))
        else:
            zones = len({u.zone or "1" for u in devs})
        if zones < replicas:
            add(Finding(severity="warning", code="swift-zones", path=path,
                        message=f"{name}: {replicas} replicas in {zones} zone(s): losing one zone loses "
                        f"{replicas - zones + 1} copies of some objects",
                        fix=f"spread the storage units over {replicas} zones (swift-storage `zone` "
                        "options, one application per zone) or use zone-assignment: auto"))


def _classify(bundle: Bundle) -> dict[str, Classification]:
    out: dict[str, Classification] = {}
    for name, app in bundle.applications.items():
        info = KINDS.get(app.kind or "")
        if info is None:
            out[name] = Classification(application=name, kind=None, state="unknown", mode="unknown")
            continue
        mode = info.mode
        note = info.notes
        if not app.subordinate and has_vip(bundle, name):
            provider = vip_provider_of(bundle, name)
            if app.kind == "haproxy":
                mode = "active/passive"
            note = (note + "; " if note else "") + (f"VIP via {provider}" if provider else "VIP with no provider")
        out[name] = Classification(application=name, kind=app.kind,
                                   state="stateful" if info.stateful else "stateless",
                                   mode=mode, note=note)
    return out

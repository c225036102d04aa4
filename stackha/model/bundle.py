"""The typed bundle: machines, applications, relations and stackha's own settings.

Build one with :func:`stackha.model.load_bundle` (which validates); a :class:`Bundle` is plain data
plus two derived views, :meth:`Bundle.related` and :meth:`Bundle.units`.  :meth:`Bundle.dump`
writes it back in the Juju bundle format, so that load → dump → load gives the same bundle.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from stackha.model.problems import Finding

__all__ = [
    "Application",
    "Bundle",
    "Machine",
    "Relation",
    "Settings",
    "UnitPlacement",
    "zone_from_constraints",
]

_ZONES_RE = re.compile(r"(?:^|\s)zones=(\S+)")


def zone_from_constraints(constraints: str | None) -> str | None:
    """The availability zone a Juju constraints string pins, or None.

    ``"cores=4 zones=az1"`` → ``"az1"``.  A ``zones=`` constraint listing several zones
    (``zones=az1,az2``) lets Juju choose, so it pins no zone and gives None.
    """
    if not constraints:
        return None
    m = _ZONES_RE.search(constraints)
    if m is None or "," in m.group(1):
        return None
    return m.group(1)


class Machine(BaseModel):
    """A machine of the bundle (``machines:`` section).

    Attributes:
        id: the bundle machine id, a non-negative integer as a string ("0").
        series: the OS series ("focal"), or None to use the bundle's.
        constraints: the Juju constraints string ("cores=4 mem=8G zones=az1"), or None.
        zone: the machine's availability zone (its failure domain above the machine): the
            stackha key ``zone:`` on the machine, else a single-zone ``zones=`` constraint.
        annotations: free-form annotations, kept as given.
        extra: keys stackha does not read (reported by the analysis), kept for :meth:`Bundle.dump`.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    series: str | None = None
    constraints: str | None = None
    zone: str | None = None
    annotations: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)


class Application(BaseModel):
    """An application of the bundle (``applications:``, or the legacy ``services:``).

    Attributes:
        name: the application name ("keystone").
        charm: the charm URL exactly as given (``ch:keystone``, ``cs:trusty/percona-cluster-24``,
            ``./charms/galera``).
        kind: the stackha service kind the charm maps to ("galera", "keystone", …; see
            :data:`stackha.model.kinds.KINDS`), or None for a charm stackha does not know.
        num_units: number of units (0 for a subordinate: its units follow its principals').
        to: placement directives, one per unit: a machine id ("1"), a new container on a machine
            ("lxd:1", "lxc:1"), a new machine ("new"), or colocation with another unit
            ("keystone/0", "lxd:keystone/0").
        options: charm options plus the stackha keys (see :mod:`stackha.model.options`).
        bindings, constraints, annotations, series: as in Juju, kept as given.
        subordinate: a subordinate application (hacluster, keepalived, mysql-router, …); for an
            unknown charm, True when the bundle gives neither ``num_units`` nor ``to``.
        deployable: stackha can deploy this kind now (galera, rabbitmq, haproxy, keepalived,
            keystone, hacluster).
        extra: keys stackha does not read (reported by the analysis), kept for :meth:`Bundle.dump`.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    charm: str
    kind: str | None = None
    num_units: int = Field(default=0, ge=0)
    to: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    bindings: dict[str, Any] = Field(default_factory=dict)
    constraints: str | None = None
    annotations: dict[str, Any] = Field(default_factory=dict)
    series: str | None = None
    subordinate: bool = False
    deployable: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)


class Relation(BaseModel):
    """A relation between two applications, each end ``app[:endpoint]``.

    Attributes:
        a, b: application names.
        a_endpoint, b_endpoint: endpoint names ("shared-db"), or None when the bundle gives only
            the application (Juju then infers the endpoint).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    a: str
    b: str
    a_endpoint: str | None = None
    b_endpoint: str | None = None

    @property
    def ends(self) -> tuple[str, str]:
        """The two ``app[:endpoint]`` strings, as written in a bundle."""
        ea = f"{self.a}:{self.a_endpoint}" if self.a_endpoint else self.a
        eb = f"{self.b}:{self.b_endpoint}" if self.b_endpoint else self.b
        return ea, eb

    def key(self) -> frozenset[str]:
        """Identity of the relation regardless of the order of its ends."""
        return frozenset(self.ends)

    def other(self, app: str) -> str | None:
        """The application at the other end from ``app`` (None if ``app`` is not an end)."""
        if app == self.a:
            return self.b
        if app == self.b:
            return self.a
        return None


class Settings(BaseModel):
    """stackha's settings for the availability estimate: the top-level ``stackha:`` section.

    This section is a stackha extension, not part of the Juju format (keep it in an overlay if a
    bundle must also deploy with Juju).

    Attributes:
        unit_availability: availability of one unit *and the machine it runs on* (0 < a < 1);
            None means the default 0.99.  Per application: option ``unit_availability``.
        unit_mttr_hours: mean time to repair a failed unit, hours (default 4); with
            ``unit_availability`` it gives how often units fail, which sets how often an
            active/passive service fails over.
        failover_seconds: time for an active/passive service to move to another unit, seconds;
            None means per provider (keepalived 1 s, Pacemaker 6 s, haproxy backup server 2.5 s,
            other active/passive services 60 s).  Per application: option ``failover_seconds``.
        request_path: the applications a user request passes through, in order; None derives
            it from the API services, their load balancers and what they call (see
            :mod:`stackha.model.availability`).
    """

    model_config = ConfigDict(extra="forbid")

    unit_availability: float | None = Field(default=None, gt=0, lt=1, allow_inf_nan=False)
    unit_mttr_hours: float = Field(default=4.0, gt=0, allow_inf_nan=False)
    failover_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    request_path: list[str] | None = None


class UnitPlacement(BaseModel):
    """Where one unit runs.

    Attributes:
        unit: the unit name ("keystone/0").
        application: the application name ("keystone").
        index: the unit number (0).
        machine: the bundle machine id the unit is on, or the container's host machine for
            ``lxd:1`` ("1"): its failure domain.  A unit on a machine the bundle does not declare
            (``new``, or no ``to``) gets ``new:<unit>`` ("new:keystone/0").
        container: "lxd", "lxc" or "kvm" when the unit is in a container, else None.
        host_key: the machine or container the unit runs on ("1", "1/lxd/0", "new:keystone/0");
            units with the same ``host_key`` share an operating system.
        zone: the availability zone (machine ``zone``, else the application's ``zone`` option),
            or None.
        principal: for a subordinate unit, the principal unit it runs beside ("haproxy/0").

    Rule for containers (simpler than Juju's, deterministic): every ``lxd:N`` / ``lxc:N`` entry
    creates a new container on machine N; containers are numbered per machine and container type
    in bundle order (applications as listed, units in order), then those created on another
    unit's machine (``lxd:app/U``).  A unit shares a container only when placed as ``app/U`` —
    on the very machine or container of unit U of app.

    Juju's rules (juju/bundlechanges, ``placeUnitsForApplication``): a placement ``app`` or
    ``lxd:app`` (no unit number) goes beside the next unit of app that has no unit of this
    application yet — the k-th such placement beside app/k — and on a new machine when app has no
    unit left; when ``to`` is shorter than ``num_units``, the other units repeat the last
    placement if it is ``new``, ``lxd:new`` or ``[lxd:]app``, and go to new machines otherwise.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    unit: str
    application: str
    index: int
    machine: str
    container: str | None = None
    host_key: str
    zone: str | None = None
    principal: str | None = None


class Bundle(BaseModel):
    """A validated bundle, overlays merged.

    Attributes:
        series: the default series, or None.
        variables: the ``variables:`` section (holder of YAML anchors), kept as given.
        machines: by machine id.
        applications: by name, in bundle order.
        relations: in bundle order (base first, then each overlay's), without duplicates; both
            ends are applications of the bundle.
        cross_model_relations: relations with one end at a ``saas:`` entry (an offer of another
            model, Juju's cross-model relations): kept and dumped, not analysed.
        saas: the ``saas:`` section, name → ``{url: …}`` (possibly empty).
        settings: the ``stackha:`` section.
        extra: top-level keys stackha does not read, kept for :meth:`dump`.

    Lookups by application (:meth:`related`, :meth:`principals_of`) use an index of the
    relations built once (rebuilt when the ``relations`` list is replaced or changes length), so an
    analysis is linear in the number of applications and relations.
    """

    model_config = ConfigDict(extra="forbid")

    series: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    machines: dict[str, Machine] = Field(default_factory=dict)
    applications: dict[str, Application] = Field(default_factory=dict)
    relations: list[Relation] = Field(default_factory=list)
    cross_model_relations: list[Relation] = Field(default_factory=list)
    saas: dict[str, dict[str, Any]] = Field(default_factory=dict)
    settings: Settings = Field(default_factory=Settings)
    extra: dict[str, Any] = Field(default_factory=dict)

    _units: dict[str, list[UnitPlacement]] | None = PrivateAttr(default=None)
    _load_findings: list[Finding] = PrivateAttr(default_factory=list)
    _index_key: tuple[int, int, int, int] | None = PrivateAttr(default=None)
    _related: dict[str, set[str]] = PrivateAttr(default_factory=dict)
    _rels_of: dict[str, list[Relation]] = PrivateAttr(default_factory=dict)
    _order: dict[str, int] = PrivateAttr(default_factory=dict)

    @property
    def is_kubernetes(self) -> bool:
        """A Kubernetes bundle (``bundle: kubernetes``): units are pods, no machines."""
        return self.extra.get("bundle") == "kubernetes"

    def load_findings(self) -> list[Finding]:
        """Warnings found while loading (``duplicate-key``: a mapping key given twice)."""
        return list(self._load_findings)

    def _index(self) -> None:
        key = (id(self.relations), len(self.relations), id(self.applications), len(self.applications))
        if self._index_key == key:
            return
        related: dict[str, set[str]] = {}
        rels_of: dict[str, list[Relation]] = {}
        for rel in self.relations:
            rels_of.setdefault(rel.a, []).append(rel)
            if rel.b != rel.a:
                rels_of.setdefault(rel.b, []).append(rel)
                related.setdefault(rel.a, set()).add(rel.b)
                related.setdefault(rel.b, set()).add(rel.a)
        self._related, self._rels_of = related, rels_of
        self._order = {name: i for i, name in enumerate(self.applications)}
        self._index_key = key

    def related(self, app_name: str) -> set[str]:
        """Names of the applications related to ``app_name`` (empty if none or unknown); a new set."""
        self._index()
        return set(self._related.get(app_name, ()))

    def relations_of(self, app_name: str) -> list[Relation]:
        """The relations with ``app_name`` at one end, in bundle order."""
        self._index()
        return list(self._rels_of.get(app_name, ()))

    def cross_model_of(self, app_name: str) -> list[Relation]:
        """The cross-model relations (to a ``saas:`` entry) of ``app_name``, in bundle order."""
        return [r for r in self.cross_model_relations if app_name in (r.a, r.b)]

    def units(self, app_name: str) -> list[UnitPlacement]:
        """The units of ``app_name`` and where each runs, in unit order.

        A principal has ``num_units`` units placed per its ``to`` (see :class:`UnitPlacement` for
        the rule).  A subordinate has one unit beside each unit of each principal it relates to
        (principals in bundle order), numbered in that order.

        Raises:
            KeyError: ``app_name`` is not an application of the bundle.
        """
        if app_name not in self.applications:
            raise KeyError(f"no application {app_name!r} in the bundle")
        return list(self.all_units()[app_name])

    def all_units(self) -> dict[str, list[UnitPlacement]]:
        """Every application's units, by application name (computed once, then cached)."""
        if self._units is None:
            from stackha.model.placement import resolve_placements

            units, _problems = resolve_placements(self)
            self._units = units
        return self._units

    def principals_of(self, app_name: str) -> list[str]:
        """For a subordinate, the principals it runs beside, in bundle order.

        The related non-subordinate applications, narrowed per kind
        (:attr:`stackha.model.kinds.KindInfo.principal_kinds` / ``not_principal_kinds``: a
        mysql-router runs beside its client, not beside the database it also relates to).
        """
        from stackha.model.kinds import KINDS

        self._index()
        related = sorted((n for n in self._related.get(app_name, ()) if n in self._order),
                         key=self._order.__getitem__)
        info = KINDS.get(self.applications[app_name].kind or "") if app_name in self.applications else None
        out = []
        for n in related:
            a = self.applications[n]
            if a.subordinate:
                continue
            if info is not None and info.principal_kinds and a.kind not in info.principal_kinds:
                continue
            if info is not None and a.kind in info.not_principal_kinds:
                continue
            out.append(n)
        return out

    def dump(self) -> dict[str, Any]:
        """The bundle as a Juju-format mapping (what ``yaml.safe_dump`` can write).

        Derived attributes (``kind``, ``subordinate``, ``deployable``) are not written; keys stackha
        does not read are written back as they were.  ``load_bundle_text(yaml.safe_dump(b.dump()))``
        gives a bundle with the same ``dump()``.
        """
        out: dict[str, Any] = {}
        if self.series is not None:
            out["series"] = self.series
        if self.variables:
            out["variables"] = self.variables
        settings = self.settings.model_dump(exclude_defaults=True)
        if settings:
            out["stackha"] = settings
        out.update(self.extra)
        if self.saas:
            out["saas"] = {name: dict(spec) for name, spec in self.saas.items()}
        if self.machines:
            machines: dict[str, Any] = {}
            for mid, m in self.machines.items():
                d: dict[str, Any] = {}
                if m.series is not None:
                    d["series"] = m.series
                if m.constraints is not None:
                    d["constraints"] = m.constraints
                if m.zone is not None and m.zone != zone_from_constraints(m.constraints):
                    d["zone"] = m.zone
                if m.annotations:
                    d["annotations"] = m.annotations
                d.update(m.extra)
                machines[mid] = d
            out["machines"] = machines
        apps: dict[str, Any] = {}
        for name, a in self.applications.items():
            d = {"charm": a.charm}
            if a.series is not None:
                d["series"] = a.series
            if not a.subordinate or a.num_units:
                d["scale" if self.is_kubernetes else "num_units"] = a.num_units
            if a.to:
                d["to"] = list(a.to)
            if a.options:
                d["options"] = dict(a.options)
            if a.bindings:
                d["bindings"] = dict(a.bindings)
            if a.constraints is not None:
                d["constraints"] = a.constraints
            if a.annotations:
                d["annotations"] = dict(a.annotations)
            d.update(a.extra)
            apps[name] = d
        out["applications"] = apps
        out["relations"] = [list(r.ends) for r in [*self.relations, *self.cross_model_relations]]
        return out

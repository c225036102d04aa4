"""Charm URLs and the stackha service kinds they map to.

A Juju bundle names a *charm* per application (``ch:keystone``, ``cs:trusty/percona-cluster-24``,
``./charms/galera``).  stackha does not run charms: it maps the charm to a *service kind* — the
component it knows how to deploy and reason about — and keeps the charm string unchanged for
:meth:`stackha.model.Bundle.dump`.

Each kind carries the facts the analysis needs (:class:`KindInfo`): whether it is a subordinate,
stateful or stateless and active/active or active/passive (the classification of the OpenStack High
Availability Guide, and of seed 001's "HA dictionary"), how its availability is computed from its
units (:class:`Model`), which kinds it calls while serving a request and which relations an operator
would expect it to have.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "CharmRef",
    "DEPLOYABLE_KINDS",
    "KINDS",
    "KindInfo",
    "Model",
    "kind_for_charm",
    "parse_charm",
]


class Model(str, Enum):
    """How an application's availability follows from its units' availability.

    - ``QUORUM``: a majority of the units must be up (Galera, RabbitMQ, Corosync, Ceph monitors).
    - ``ANY``: one unit up is enough (stateless active/active services behind a load balancer).
    - ``SINGLE_ACTIVE``: one unit serves at a time; another takes over after a failover time
      (active/passive).
    - ``REPLICATED``: a majority of the (at most three) replicas of a piece of data must be up
      (Ceph OSDs with ``size 3, min_size 2``; Swift object servers writing with a quorum of replicas).
    - ``NONE``: not computed (subordinates follow their principal; unknown charms).
    """

    QUORUM = "quorum"
    ANY = "any"
    SINGLE_ACTIVE = "single-active"
    REPLICATED = "replicated"
    NONE = "none"


@dataclass(frozen=True)
class KindInfo:
    """What stackha knows about one service kind.

    Attributes:
        name: the kind ("galera", "keystone", …).
        subordinate: runs inside the units of the applications it relates to (Juju subordinate).
        stateful: keeps state that must be replicated ("stateful" in the OpenStack HA guide).
        mode: "active/active" or "active/passive" per the OpenStack HA guide ("-" for subordinates).
        model: how the kind's availability is computed from its units.
        depends_on: kinds this kind calls while serving a user request ("db" stands for galera
            or mysql-router); used to derive the cloud's request path.
        expects: relations an operator would expect, as (label, kinds): the application should
            relate to at least one application of one of ``kinds``.
        api: a user-facing API service (an entry point of user requests).
        principal_kinds: for a subordinate, the kinds of principal it runs beside (empty: any
            related principal) — Juju attaches a subordinate only over a container-scoped
            relation, which a bundle does not mark, so stackha knows it per kind.
        not_principal_kinds: for a subordinate, related kinds it does *not* run beside (a
            mysql-router relates to the database but runs beside its client).
        tier: deployment order (DESIGN.md: network → database and queue → load balancer and VIP
            → identity → other API services → compute → instance HA); lower deploys first.
        operator: ``"module:Class"`` of the operator that deploys the kind (None: analysed only).
        provides: relation capabilities its operator offers related applications
            (``database``, ``messaging``, ``vip``, ``identity``: :data:`stackha.services.base.
            CAPABILITIES`).
        probes: the ``stackha verify`` probes that measure the kind from a client.
    """

    name: str
    subordinate: bool = False
    stateful: bool = False
    mode: str = "active/active"
    model: Model = Model.ANY
    depends_on: tuple[str, ...] = ()
    expects: tuple[tuple[str, tuple[str, ...]], ...] = ()
    api: bool = False
    notes: str = ""
    principal_kinds: tuple[str, ...] = ()
    not_principal_kinds: tuple[str, ...] = ()
    tier: int = 6
    operator: str | None = None
    provides: tuple[str, ...] = ()
    probes: tuple[str, ...] = ()

    @property
    def deployable(self) -> bool:
        """stackha can deploy this kind now (it has an operator)."""
        return self.operator is not None


_DB = ("galera", "mysql-router")
_AMQP = ("rabbitmq",)
_IDENTITY = ("keystone",)


def _k(name: str, **kw: object) -> KindInfo:
    return KindInfo(name=name, **kw)  # type: ignore[arg-type]


#: Every kind stackha knows, by name.  Classification per the OpenStack HA guide: databases and
#: message queues are stateful, API services are stateless active/active behind a load balancer,
#: a VIP is held by one node at a time (active/passive).
KINDS: dict[str, KindInfo] = {
    k.name: k
    for k in [
        _k("galera", stateful=True, model=Model.QUORUM, tier=1, provides=("database",), probes=("mysql",),
           operator="stackha.services.galera:GaleraOperator",
           notes="multi-master; stackha writes through one node at a time (haproxy backup servers)"),
        _k("rabbitmq", stateful=True, model=Model.QUORUM, tier=1, provides=("messaging",), probes=("amqp",),
           operator="stackha.services.rabbitmq:RabbitMQOperator",
           notes="clustered brokers with replicated (quorum/mirrored) queues, pause_minority"),
        _k("haproxy", model=Model.ANY, tier=3, depends_on=("*backends",),
           operator="stackha.services.haproxy:HAProxyOperator",
           expects=(("a backend", ("*",)),),
           notes="stateless; active/passive when a VIP fronts it"),
        _k("keepalived", subordinate=True, stateful=False, mode="active/passive", tier=4, provides=("vip",),
           model=Model.NONE, operator="stackha.services.keepalived:KeepalivedOperator",
           expects=(("a principal holding the VIP", ("*",)),),
           notes="VRRP: one MASTER holds the VIP"),
        _k("hacluster", subordinate=True, stateful=True, mode="active/passive", tier=4, provides=("vip",),
           model=Model.NONE, operator="stackha.services.pacemaker:HAClusterOperator",
           expects=(("a principal", ("*",)),),
           notes="Corosync membership and quorum, Pacemaker moves the VIP"),
        _k("keystone", model=Model.ANY, api=True, depends_on=("db",), tier=5, provides=("identity",),
           probes=("keystone",), operator="stackha.services.openstack.keystone:KeystoneOperator",
           expects=(("a database (shared-db)", _DB),)),
        _k("glance", api=True, depends_on=("db", "keystone", "swift-proxy", "ceph-mon"),
           operator="stackha.services.openstack.glance:GlanceOperator",
           expects=(("a database (shared-db)", _DB), ("identity-service", _IDENTITY))),
        _k("placement", api=True, depends_on=("db", "keystone"),
           operator="stackha.services.openstack.placement:PlacementOperator",
           expects=(("a database (shared-db)", _DB), ("identity-service", _IDENTITY))),
        _k("nova-cloud-controller", api=True, depends_on=("db", "keystone", "rabbitmq"),
           operator="stackha.services.openstack.nova:NovaControllerOperator",
           expects=(("a database (shared-db)", _DB), ("amqp", _AMQP),
                    ("identity-service", _IDENTITY))),
        _k("nova-compute", stateful=True, model=Model.ANY, tier=8,
           operator="stackha.services.openstack.nova:NovaComputeOperator",
           expects=(("amqp", _AMQP), ("cloud-compute", ("nova-cloud-controller",))),
           notes="instances are not made HA by redundancy: see masakari"),
        _k("neutron-api", api=True, depends_on=("db", "keystone", "rabbitmq"),
           operator="stackha.services.openstack.neutron:NeutronOperator",
           expects=(("a database (shared-db)", _DB), ("amqp", _AMQP),
                    ("identity-service", _IDENTITY))),
        _k("neutron-gateway", stateful=True, mode="active/passive", model=Model.SINGLE_ACTIVE, tier=8,
           expects=(("amqp", _AMQP),),
           notes="legacy L3 agent: a router lives on one gateway until rescheduled"),
        _k("neutron-openvswitch", subordinate=True, stateful=True, mode="-", model=Model.NONE, tier=8,
           principal_kinds=("nova-compute", "neutron-gateway")),
        _k("openstack-dashboard", api=True, depends_on=("keystone",), tier=7,
           expects=(("identity-service", _IDENTITY),)),
        _k("cinder", api=True, depends_on=("db", "keystone", "rabbitmq", "ceph-mon"),
           expects=(("a database (shared-db)", _DB), ("amqp", _AMQP),
                    ("identity-service", _IDENTITY))),
        _k("cinder-ceph", subordinate=True, mode="-", model=Model.NONE,
           expects=(("ceph", ("ceph-mon",)),), principal_kinds=("cinder",)),
        _k("swift-proxy", api=True, depends_on=("keystone", "swift-storage"), probes=("swift",),
           operator="stackha.services.openstack.swift:SwiftProxyOperator",
           expects=(("swift-storage", ("swift-storage",)), ("identity-service", _IDENTITY))),
        _k("swift-storage", stateful=True, model=Model.REPLICATED, tier=2,
           operator="stackha.services.openstack.swift:SwiftStorageOperator",
           notes="account, container and object servers; each object has `replicas` copies in distinct zones"),
        _k("ceph-mon", stateful=True, model=Model.QUORUM, tier=1,
           notes="Paxos monitors: a majority must be up"),
        _k("ceph-osd", stateful=True, model=Model.REPLICATED, tier=2,
           expects=(("ceph monitors", ("ceph-mon",)),)),
        _k("masakari", api=True, depends_on=("db", "keystone", "rabbitmq"), tier=9,
           operator="stackha.services.openstack.masakari:MasakariOperator",
           expects=(("a database (shared-db)", _DB), ("amqp", _AMQP),
                    ("identity-service", _IDENTITY))),
        _k("masakari-monitors", subordinate=True, mode="-", model=Model.NONE, tier=9,
           operator="stackha.services.masakari_monitors:MasakariMonitorsOperator",
           expects=(("identity-credentials", _IDENTITY),), principal_kinds=("nova-compute",)),
        _k("pacemaker-remote", subordinate=True, mode="-", model=Model.NONE, tier=4,
           operator="stackha.services.pacemaker_remote:PacemakerRemoteOperator",
           expects=(("pacemaker-remote", ("hacluster",)),)),
        _k("ntp", subordinate=True, mode="-", model=Model.NONE, tier=0),
        _k("vault", stateful=True, mode="active/passive", model=Model.SINGLE_ACTIVE, tier=1,
           notes="one active node, standbys forward"),
        _k("mysql-router", subordinate=True, mode="-", model=Model.NONE, depends_on=("galera",), tier=1,
           provides=("database",), operator="stackha.services.mysql_router:MysqlRouterOperator",
           expects=(("db-router", ("galera",)),), not_principal_kinds=("galera",)),
    ]
}

#: Kinds stackha can deploy now (those with an operator); every other kind is analysed but
#: reported as not deployable.
DEPLOYABLE_KINDS: frozenset[str] = frozenset(k for k, v in KINDS.items() if v.deployable)

#: Charm names (the name part of the URL) → kind.  Sources: the OpenStack charms (charmhub),
#: the legacy names of seed 000 (``quantum-gateway``, the all-in-one ``ceph`` charm whose
#: monitors make it a quorum cluster) and the stackha-local ``galera`` charm.
_CHARM_TO_KIND: dict[str, str] = {
    "percona-cluster": "galera",
    "mysql-innodb-cluster": "galera",
    "galera": "galera",
    "mariadb-galera": "galera",
    "rabbitmq-server": "rabbitmq",
    "rabbitmq": "rabbitmq",
    "hacluster": "hacluster",
    "haproxy": "haproxy",
    "keepalived": "keepalived",
    "keystone": "keystone",
    "glance": "glance",
    "placement": "placement",
    "nova-cloud-controller": "nova-cloud-controller",
    "nova-compute": "nova-compute",
    "neutron-api": "neutron-api",
    "neutron-gateway": "neutron-gateway",
    "quantum-gateway": "neutron-gateway",
    "neutron-openvswitch": "neutron-openvswitch",
    "openstack-dashboard": "openstack-dashboard",
    "cinder": "cinder",
    "cinder-ceph": "cinder-ceph",
    "swift-proxy": "swift-proxy",
    "swift-storage": "swift-storage",
    "ceph-mon": "ceph-mon",
    "ceph": "ceph-mon",
    "ceph-osd": "ceph-osd",
    "masakari": "masakari",
    "masakari-monitors": "masakari-monitors",
    "pacemaker-remote": "pacemaker-remote",
    "ntp": "ntp",
    "vault": "vault",
    "mysql-router": "mysql-router",
}

#: Kubernetes charms (``*-k8s``, the Sunbeam/OpenStack-on-Kubernetes ones) whose name without
#: ``-k8s`` is not the name of the machine charm of the same component; the others map as their
#: machine charm (``rabbitmq-k8s`` → ``rabbitmq-server``'s kind: ``rabbitmq`` is also a name above).
_K8S_TO_KIND: dict[str, str] = {
    "mysql-k8s": "galera",  # MySQL Group Replication: a majority must be up, as for Galera
    "nova-k8s": "nova-cloud-controller",
    "neutron-k8s": "neutron-api",
    "horizon-k8s": "openstack-dashboard",
}

# cs:[~user/][series/]name[-revision]   ch:[arch/][series/]name[-revision]
_STORE_RE = re.compile(r"^(?:~(?P<user>[^/]+)/)?(?:(?P<series>[a-z]+)/)?(?P<name>[a-z][a-z0-9-]*?)(?:-(?P<rev>\d+))?$")


@dataclass(frozen=True)
class CharmRef:
    """A parsed charm URL.

    Attributes:
        source: "cs" (charm store), "ch" (Charmhub), "local" (a path) or "bare" (a plain name,
            which Juju resolves on Charmhub).
        name: the charm name ("keystone"), the last path component for a local charm.
        series: the series in the URL, if any ("trusty" in ``cs:trusty/percona-cluster-24``).
        revision: the revision in the URL, if any.
    """

    source: str
    name: str
    series: str | None = None
    revision: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


def parse_charm(url: str) -> CharmRef | None:
    """Parse a charm URL (``cs:``, ``ch:``, local path or bare name).

    Returns None when ``url`` is not a charm URL (empty, or characters a charm name cannot hold).
    Local paths (``./x``, ``../x``, ``/x``, ``local:x``) keep their last path component as name.
    Never raises.
    """
    url = url.strip()
    if not url:
        return None
    if url.startswith(("/", "./", "../", "~/")) or url.startswith("local:"):
        path = url.removeprefix("local:").rstrip("/")
        name = path.rsplit("/", 1)[-1]
        if name.endswith(".charm"):
            name = name[: -len(".charm")].split("_", 1)[0]
        m = re.match(r"^(?P<name>[a-z][a-z0-9-]*?)(?:-(?P<rev>\d+))?$", name)
        if m is None:
            return CharmRef(source="local", name=name)
        rev = m.group("rev")
        return CharmRef(source="local", name=m.group("name"), revision=int(rev) if rev else None)
    source = "bare"
    rest = url
    for prefix in ("cs:", "ch:"):
        if url.startswith(prefix):
            source, rest = prefix[:-1], url[len(prefix):]
            break
    if source == "ch" and rest.count("/") >= 1 and rest.split("/", 1)[0] in ("amd64", "arm64", "s390x", "ppc64el"):
        rest = rest.split("/", 1)[1]
    m = _STORE_RE.match(rest)
    if m is None:
        return None
    rev = m.group("rev")
    return CharmRef(source=source, name=m.group("name"), series=m.group("series"),
                    revision=int(rev) if rev else None)


def kind_for_charm(url: str) -> str | None:
    """The stackha kind of a charm URL, or None for a charm stackha does not know.

    The name is matched first as is, then without a trailing ``-<revision>`` (local charm
    directories such as ``/root/openstack-base-72/mysql-router-6`` in seed 004), then — for a
    local path — without the ``charm-`` of an OpenStack charm's source tree (``../charm-keystone``),
    and a Kubernetes charm (``rabbitmq-k8s``) as the machine charm of its component.
    """
    ref = parse_charm(url)
    if ref is None:
        return None
    name = ref.name
    candidates = [name, re.sub(r"-\d+$", "", name)]
    if ref.source == "local" and name.startswith("charm-"):
        candidates.append(name[len("charm-"):])
    for cand in candidates:
        if cand in _CHARM_TO_KIND:
            return _CHARM_TO_KIND[cand]
        if cand.endswith("-k8s"):
            return _K8S_TO_KIND.get(cand) or _CHARM_TO_KIND.get(cand[: -len("-k8s")])
    return None

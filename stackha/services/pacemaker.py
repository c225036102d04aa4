"""Corosync 3 + Pacemaker 2.1 clusters with real STONITH: the ``hacluster`` subordinate.

An ``hacluster`` application is a subordinate (the hacluster charm's shape, seed 000): its units sit
on the hosts of the principal it is related to (keystone, or any application), and ``app.vip`` is
the principal's ``vip``.  One cluster per hacluster application, over those hosts:

**Corosync** (``/etc/corosync/corosync.conf``, private per lab host; ``corosync -f``): transport
``knet`` (unicast UDP to every node of a static ``nodelist``; a bundle's ``corosync_mcastaddr`` is
noted and not used — knet has no multicast), encrypted and authenticated with ``/etc/corosync/authkey``
(mode 0400): 256 random characters from stackha's secret store (≈ 1500 bits, above corosync's
1024-bit minimum; made once, the same bytes on every node; render stays pure, which a
``corosync-keygen`` run on one node would not allow).  Node name = the host's name, node id = unit
number + 1.  The parser takes one item per line (LAB-NOTES).

**Pacemaker** (``pacemakerd``, foreground; log ``/var/log/pacemaker/pacemaker.log``).  On a node's
first boot its CIB is seeded with the cluster properties, so ``dc-deadtime`` applies from the very
first election (LAB-NOTES: ≈ 23 s to all-online with the default 20 s, ≈ 8 s with 5 s).  Properties:
``stonith-enabled=true``, ``stonith-action`` (option, default ``off``: a fenced node stays off until
someone looks at it and ``stackha recover`` brings it back — no fence loop, and in the lab the same as
a pulled cord), ``no-quorum-policy=stop``, ``dc-deadtime``, ``stonith-timeout``,
``cluster-recheck-interval`` — see :data:`TIMERS`.

**Configuration from rendered text**: the resources and constraints sections are rendered XML
(``/srv/pacemaker/cib-resources.xml``, ``cib-constraints.xml``; stackha owns both sections of this
cluster) and the properties are nvpairs of ``cib-bootstrap-options``.  :meth:`HAClusterOperator.apply`
queries the live CIB, builds the wanted one, and when they differ (C14N comparison) applies the
difference atomically: ``crm_diff`` → ``cibadmin --patch`` — so a resource and its constraints appear
in one transition, and a second apply changes nothing.

**STONITH**: one device per node, ``fence-<node>``, never run on the node it fences (location
-INFINITY), ``pcmk_host_list`` = that node.  The device comes from the host provider:
``host.fence_device()`` — in the lab, ``stonith:fence_stackha_lab`` (``/usr/sbin/fence_stackha_lab``,
installed by apply: Pacemaker's fencer runs RHCS agents from /usr/sbin only; lab hosts share /usr with
the machine), which asks the lab's fence gateway to power the host off exactly as ``power_off`` does
(:mod:`stackha.hosts.labfence`).  For real machines, option ``fence_agent: ipmilan | redfish`` renders
``stonith:fence_ipmilan`` / ``stonith:fence_redfish`` from option ``fence_bmc`` (per host: ``ip``,
``username``, optional ``port``/``systems_uri``/``ssl_insecure``) and the secret
``bmc-password-<host>`` (put with the secret store; never in the bundle).

**Remote nodes** (seed 004: ``hacluster:pacemaker-remote`` ↔ ``pacemaker-remote``): every unit of
a related ``pacemaker-remote`` application (:mod:`stackha.services.pacemaker_remote`, on the
compute hosts) gets a connection resource ``ocf:pacemaker:remote`` named after its host (server =
its address, port 3121; monitor, start timeout and ``reconnect_interval`` per :data:`TIMERS`;
stickiness, so connections are not rebalanced) and its own ``fence-<host>`` device.  The TLS key is
:data:`REMOTE_AUTHKEY` (``PCMK_authkey_location``).  A remote node whose connection monitor fails
is fenced by the cluster ("remote connection is unrecoverable").  With the force-down device
(:func:`force_down_device`, option ``force_down``, default on) each remote node has a fencing
level: ``fence-<host>`` then ``nova-forcedown`` (``fence_stackha_nova``, credentials of Keystone
user :data:`FORCE_DOWN_USER` in a 0600 file, made through the principal's identity provider at
apply) — so Nova sees the host down only once its power is off, and the fence is complete only
when both ran.  The VIP and the daemons avoid remote nodes.  Measured on the lab
(tests/lab/test_instance_ha_monitors_lab.py; 1 s monitor, 3 s timeout): power-off → connection
lost 3.9 s → power fence ≈ 3.3–4 s → force-down done ≈ 0.4–0.7 s later.

**Resources**:

- the VIP: ``ocf:heartbeat:IPaddr2`` (id ``vip``) on ``interface`` (default: the hosts' VIP
  interface — eth0 in the lab, the inventory's ``interface`` over SSH), stickiness 100 (it
  stays where it landed: each move is a gap);
- daemons (:class:`DaemonResource`): any command run by Pacemaker through ``ocf:heartbeat:anything``
  with a rendered launcher (``/srv/pacemaker/bin/<id>``: mkdir, env, ``exec`` as the user — the
  agent's pidfile stays right) and an optional health check (``/srv/pacemaker/bin/<id>-check``, the
  agent's ``monitor_hook``: an HTTP URL or a command; during ``start`` it waits up to the start
  timeout for the daemon to come up).  Monitor interval, migration-threshold and failure-timeout per
  resource.  *Active/passive* (default): colocated with the VIP (INFINITY) and ordered after it
  (Mandatory) — it runs where the VIP is, can bind the VIP, and moves with it; ``after`` adds order
  constraints on other resources (what cinder-volume, neutron L3/DHCP/metadata agents need).
  *Clone*: one instance per node; the VIP is colocated with the clone (it only lives where an
  instance runs) — a health check failing on the VIP's node moves the VIP away;
- daemons come from the principal's operator (``ha_resources(principal)``, when it has one), from
  the hacluster option ``resources`` (a stackha extension: ``{id: {command, user, cwd, env,
  check_url | check_command, monitor_interval, clone, with_vip, after, migration_threshold,
  failure_timeout, start_timeout}}``), and — for a principal offered through a load balancer
  (its operator has ``frontends()``, e.g. keystone) — an HAProxy clone (id ``haproxy``) bound to
  the VIP (``ip_nonlocal_bind``) balancing over every unit of the principal with HTTP checks, the
  hacluster charm's layout: the VIP is colocated with a running HAProxy on a healthy node.
  Option ``proxy: false`` disables it.  HAProxy's config is :class:`~stackha.services.haproxy.
  HAProxyOperator`'s (``/srv/haproxy/haproxy.cfg``): do not put an ``haproxy`` application on the
  same hosts.

**observe** (``stackha status``): ``crm_mon --output-as=xml`` on every node that is on (each
partition's own view, in parallel) parsed with xml.etree (:func:`parse_crm_mon`): quorum, DC,
online / offline / UNCLEAN / pending nodes, where each resource runs, failcounts, failed actions,
fence history; plus which hosts hold the VIP address (from the hosts' interfaces).

Processes: ``corosync`` and ``pacemakerd`` are started with ``host.spawn`` (daemon names
``corosync``, ``pacemakerd``); never pidof/killall.  Memory ≈ 215 MiB RSS per node (LAB-NOTES).
The authkey is made once; changing it would need a restart of every corosync (apply does not).

**Measured** (lab, 2 cores shared with other labs, load average 11–23; tests/lab/test_pacemaker*.py;
gaps = longest time between successful client requests through the VIP, from a client host):

- bring-up of 3 nodes (files, corosync, pacemaker, CIB, VIP + service started): 12.5–15.6 s;
  a second apply: [] in ≈ 1 s;
- VIP holder powered off, HTTP service (active/passive, after the VIP), 3 runs each, same lab:
  stackha tuning 3.1 / 5.2 / 6.0 s (VIP on the new node after 2.6–4.6 s, fenced after 1–3 s);
  stock 9.7 / 9.9 / 11.4 s — against keepalived's VIP over an HAProxy pair in the same run:
  0.72 / 0.75 / 1.1 s (stackha), 3.1 / 3.1 / 3.4 s (stock);
- ``openstack token issue`` (keystone ×3 behind the hacluster HAProxy clone) with the VIP holder
  powered off: 4.8 s gap (keepalived VIP of the same cloud: 4.2 s — a token takes 1.7–2.8 s under
  that load, so both are coarse);
- kill -9 of the service: restarted in place after 3.0 s (gap 3.4 s; 4.9 s at load 19);
- 2 of 3 nodes off: the survivor dropped the VIP after 3.4–4.5 s; one node back on + recover →
  service again 9.4 s after its power-on (boot, corosync, pacemaker, fence of the still-absent
  node, VIP and service start).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import shlex
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackha.errors import InvalidInput
from stackha.hosts.base import CommandError, HostDown, HostError
from stackha.polling import WaitTimeout, wait_until
from stackha.services.base import (
    BaseOperator,
    log_tail,
    select_tuning,
    AppContext,
    AppStatus,
    RenderedFile,
    Unit,
    UnitStatus,
    WorkloadState,
    install_files,
    render_template,
)

KIND = "hacluster"
REMOTE_KIND = "pacemaker-remote"
COROSYNC_CONF = "/etc/corosync/corosync.conf"
AUTHKEY = "/etc/corosync/authkey"
AUTHKEY_SECRET = "corosync-authkey"
AUTHKEY_LENGTH = 256
CONFIG_DIR = "/srv/pacemaker"
BIN_DIR = f"{CONFIG_DIR}/bin"
CIB_RESOURCES = f"{CONFIG_DIR}/cib-resources.xml"
CIB_CONSTRAINTS = f"{CONFIG_DIR}/cib-constraints.xml"
CIB_FENCING = f"{CONFIG_DIR}/cib-fencing-topology.xml"
CIB_DIR = "/var/lib/pacemaker/cib"
CIB_FILE = f"{CIB_DIR}/cib.xml"
RUN_DIR = "/run/stackha-pcmk"
LOG_DIR = "/srv/stackha/log"
PACEMAKER_LOG = "/var/log/pacemaker/pacemaker.log"
COROSYNC_DAEMON = "corosync"
PACEMAKER_DAEMON = "pacemakerd"
VIP_ID = "vip"
PROXY_ID = "haproxy"
PROPERTY_SET = "cib-bootstrap-options"
#: The Pacemaker Remote key (TLS PSK between the cluster nodes and the pacemaker-remoted of the
#: remote nodes): not /etc/pacemaker/authkey, which lab hosts share with the machine.
REMOTE_AUTHKEY = f"{CONFIG_DIR}/authkey"
REMOTE_AUTHKEY_SECRET = "pacemaker-remote-authkey"
REMOTE_AUTHKEY_LENGTH = 256
REMOTE_PORT = 3121
PACEMAKER_ENV = {"PCMK_logfile": PACEMAKER_LOG, "PCMK_logfacility": "none", "PCMK_debug": "no",
                 "PCMK_authkey_location": REMOTE_AUTHKEY}
#: The second device of a remote node's fencing level: marks the node's nova-compute service
#: forced down once the power fence succeeded (:mod:`stackha.instanceha.fence_nova`).
FORCE_DOWN_ID = "nova-forcedown"
FORCE_DOWN_USER = "stackha-fence"  # Keystone user of that device (admin in project service)
NOVA_FENCE_CONF = f"{CONFIG_DIR}/nova-fence.json"
NOVA_FENCE_LOG = f"{CONFIG_DIR}/nova-fence.log"  # one JSON line per force-down: the evidence
NOVA_FENCE_AGENT = "fence_stackha_nova"
FENCE_AGENTS = ("lab", "ipmilan", "redfish")
STONITH_ACTIONS = ("off", "reboot")
START_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 90.0
_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# crm_mon roles of an instance whose start has returned (a start in flight shows as "Starting")
_RUNNING_ROLES = ("Started", "Promoted", "Unpromoted", "Master", "Slave")


class ClusterError(HostError):
    """The cluster could not be formed or configured (``unit`` names the unit when known)."""

    def __init__(self, message: str, unit: str | None = None):
        super().__init__(message)
        self.unit = unit


# --------------------------------------------------------------------------- timers
@dataclass(frozen=True)
class ClusterTimers:
    """Corosync and Pacemaker timers of one tuning.

    Corosync (corosync.conf(5), totem): ``token_ms`` — a node is declared lost after ``token_ms +
    (nodes - 2) × token_coefficient_ms`` without the token; ``consensus_ms`` — then a new membership
    forms within consensus (None: corosync's default 1.2 × token); ``join_ms`` — join-message wait.
    Pacemaker (pacemaker-controld/-fenced cluster options): ``dc_deadtime_s`` — how long a starting
    node waits for a DC before an election (matters at cluster start only); ``stonith_timeout_s``;
    ``recheck_s`` (cluster-recheck-interval: when failure-timeouts are re-evaluated at the latest).
    Resources: ``vip_monitor_s``, ``daemon_monitor_s``, ``fence_monitor_s`` (monitor intervals),
    ``migration_threshold`` (failures on a node before a daemon leaves it), ``failure_timeout_s``
    (when a failure is forgotten; None: never), ``stickiness``.  Pacemaker Remote connections
    (``ocf:pacemaker:remote``): ``remote_monitor_s`` / ``remote_timeout_s`` — a powered-off remote
    node sends no RST, so its loss is seen when a monitor times out: within ``remote_monitor_s +
    remote_timeout_s``; ``remote_start_timeout_s``: a connection start to a host that is off retries
    until this timeout, and the DC computes no new transition (no fencing) while it runs;
    ``remote_reconnect_s`` (``reconnect_interval``: after the node was fenced, the cluster retries
    the connection this often; 0: at once, then per failure handling).
    """

    token_ms: int
    token_coefficient_ms: int
    consensus_ms: int | None
    join_ms: int
    dc_deadtime_s: int
    stonith_timeout_s: int
    recheck_s: int
    vip_monitor_s: int
    daemon_monitor_s: int
    fence_monitor_s: int
    migration_threshold: int | str
    failure_timeout_s: int | None
    stickiness: int = 100
    remote_monitor_s: int = 60
    remote_timeout_s: int = 30
    remote_start_timeout_s: int = 60
    remote_reconnect_s: int = 0

    def token_loss_ms(self, nodes: int) -> int:
        """Milliseconds without the token before corosync declares a node lost, for ``nodes`` nodes."""
        return self.token_ms + max(0, nodes - 2) * self.token_coefficient_ms

    def membership_ms(self, nodes: int) -> int:
        """Worst-case milliseconds from a node's death to the new membership (token loss + consensus)."""
        return self.token_loss_ms(nodes) + (self.consensus_ms or int(1.2 * self.token_loss_ms(nodes)))


#: Timers of each tuning.
#:
#: ``stackha``: token 1000 ms with token_coefficient 0 (the token timeout does not grow with the node
#: count) and the default consensus (1.2 × token = 1200 ms): a powered-off node leaves the membership
#: ≈ 2.2 s after it died; the DC then fences it (the lab device takes 5–35 ms), and the VIP and the
#: daemons that ran there start elsewhere.  LAB-NOTES measured token 1000 → 3.9–4.9 s HTTP gap for
#: a node power-off, token 3000 → 7.8–9.2 s.  Lower tokens made a busy 2-core lab see false node
#: losses, hence not below 1000.  dc-deadtime 5 s (first boot ≈ 8 s instead of ≈ 23 s).  Monitors:
#: VIP every 2 s, daemons every 2 s (kill -9 → noticed within 2 s, then stop + start in place;
#: LAB-NOTES measured 1.9–3.1 s with a 3 s monitor; a monitor costs one agent run, ≈ 30 ms of CPU,
#: on the node running the daemon only), fence devices every 60 s.  A daemon that failed 3 times on a node leaves it; failures
#: are forgotten after 60 s (checked every 60 s).
#:
#: ``stock``: the packages' defaults — corosync 3 token 3000 ms, token_coefficient 650 ms, consensus
#: 1.2 × token; Pacemaker dc-deadtime 20 s, stonith-timeout 60 s, cluster-recheck-interval 15 min;
#: the hacluster charm's monitor intervals (IPaddr2 10 s, services 5 s); migration-threshold
#: INFINITY (the resource stays on a failing node), failures never expire.
#:
#: Pacemaker Remote connections: ``stackha`` monitors every 1 s with a 3 s timeout (the check runs
#: inside pacemaker-controld over the open TLS connection: no fork), gives a connection start 5 s
#: and retries a fenced node's connection every 60 s — on the lab, a 30 s start retrying a fenced
#: (off) node every 10 s held the DC's transition for 15 s, and the fence of another node that failed
#: meanwhile waited for it (power-off → fenced 20.6 s instead of 5.8 s); ``stackha recover`` cleans
#: a recovered node's connection up so it reconnects at once.  ``stock``: a 60 s monitor (pcs'
#: default interval) with the agent's 30 s timeout and 60 s start, reconnect_interval 0.
TIMERS: dict[str, ClusterTimers] = {
    "stackha": ClusterTimers(token_ms=1000, token_coefficient_ms=0, consensus_ms=None, join_ms=50,
                             dc_deadtime_s=5, stonith_timeout_s=20, recheck_s=60, vip_monitor_s=2,
                             daemon_monitor_s=2, fence_monitor_s=60, migration_threshold=3,
                             failure_timeout_s=60, remote_monitor_s=1, remote_timeout_s=3,
                             remote_start_timeout_s=5, remote_reconnect_s=60),
    "stock": ClusterTimers(token_ms=3000, token_coefficient_ms=650, consensus_ms=None, join_ms=50,
                           dc_deadtime_s=20, stonith_timeout_s=60, recheck_s=900, vip_monitor_s=10,
                           daemon_monitor_s=5, fence_monitor_s=60, migration_threshold="INFINITY",
                           failure_timeout_s=None, remote_monitor_s=60, remote_timeout_s=30,
                           remote_reconnect_s=0),
}


def timers(tuning: str) -> ClusterTimers:
    """The :class:`ClusterTimers` of ``tuning`` ("stackha" or "stock"); InvalidInput otherwise."""
    return select_tuning(TIMERS, tuning)


# --------------------------------------------------------------------------- resources
@dataclass(frozen=True)
class DaemonResource:
    """A daemon Pacemaker runs (``ocf:heartbeat:anything`` + a rendered launcher).

    ``id``: the Pacemaker resource id (letters, digits, ``_.-``); ``argv``: the command (runs in
    the foreground, keeps its PID); ``user`` (the launcher drops to it with setpriv); ``cwd``;
    ``env``: ``((name, value), …)``; ``dirs``: directories the launcher creates first;
    ``check_url``: a URL that answers 2xx/3xx while healthy, or ``check_command``: a shell command
    that exits 0 while healthy (neither: the monitor only checks the PID is alive);
    ``monitor_s``: monitor interval in s (None: the tuning's); ``clone``: run on every node (the
    VIP is colocated with the clone) instead of active/passive with the VIP; ``with_vip``: for an
    active/passive daemon, colocate with the VIP and start after it; ``after``: ids of resources
    that must be started first (Mandatory order); ``migration_threshold`` / ``failure_timeout_s``
    (None: the tuning's); ``start_timeout_s`` / ``stop_timeout_s`` (s); ``files``: other rendered
    files the daemon reads (its config); ``reload_signal``: when its files change on a node where it
    runs, apply sends this signal to its PID (e.g. ``USR2``: HAProxy's graceful reload) instead of
    restarting it (``crm_resource --restart``).
    """

    id: str
    argv: tuple[str, ...]
    user: str = "root"
    cwd: str = "/"
    env: tuple[tuple[str, str], ...] = ()
    dirs: tuple[str, ...] = ()
    check_url: str | None = None
    check_command: str | None = None
    monitor_s: int | None = None
    clone: bool = False
    with_vip: bool = True
    after: tuple[str, ...] = ()
    migration_threshold: int | str | None = None
    failure_timeout_s: int | None = None
    start_timeout_s: int = 30
    stop_timeout_s: int = 10
    files: tuple[str, ...] = ()
    reload_signal: str | None = None

    @property
    def clone_id(self) -> str:
        return f"{self.id}-clone"

    @property
    def placed_id(self) -> str:
        """The id constraints name: the clone's for a clone, else the primitive's."""
        return self.clone_id if self.clone else self.id

    @property
    def binfile(self) -> str:
        return f"{BIN_DIR}/{self.id}"

    @property
    def check_file(self) -> str:
        return f"{BIN_DIR}/{self.id}-check"

    @property
    def pidfile(self) -> str:
        return f"{RUN_DIR}/{self.id}.pid"

    @property
    def logfile(self) -> str:
        return f"{LOG_DIR}/{self.id}.log"

    def check(self) -> str | None:
        """The health command (shell), or None."""
        if self.check_url:
            return f"curl -fsS -o /dev/null --max-time 2 {shlex.quote(self.check_url)}"
        return self.check_command

    @classmethod
    def from_option(cls, rid: str, spec: Any, where: str) -> "DaemonResource":
        """A resource from the hacluster option ``resources`` (``{id: spec}``); InvalidInput naming
        ``where`` for a malformed spec."""
        if not isinstance(spec, dict):
            raise InvalidInput(f"{where}.{rid}: give a mapping with at least `command`")
        known = {"command", "user", "cwd", "env", "dirs", "check_url", "check_command", "monitor_interval",
                 "clone", "with_vip", "after", "migration_threshold", "failure_timeout", "start_timeout",
                 "stop_timeout"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise InvalidInput(f"{where}.{rid}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        cmd = spec.get("command")
        if isinstance(cmd, str):
            argv = tuple(shlex.split(cmd))
        elif isinstance(cmd, (list, tuple)):
            argv = tuple(str(a) for a in cmd)
        else:
            argv = ()
        if not argv:
            raise InvalidInput(f"{where}.{rid}.command: give the daemon's command line (it must stay in the foreground)")
        env = spec.get("env") or {}
        if not isinstance(env, dict):
            raise InvalidInput(f"{where}.{rid}.env: give a mapping NAME: value")
        after = spec.get("after") or ()
        if isinstance(after, str):
            after = (after,)

        def num(key: str, default):
            if spec.get(key) is None:
                return default
            try:
                v = int(spec[key])
            except (TypeError, ValueError):
                raise InvalidInput(f"{where}.{rid}.{key}: {spec[key]!r} is not a whole number of seconds") from None
            if v <= 0:
                raise InvalidInput(f"{where}.{rid}.{key}: must be > 0")
            return v

        return cls(id=rid, argv=argv, user=str(spec.get("user", "root")), cwd=str(spec.get("cwd", "/")),
                   env=tuple((str(k), str(v)) for k, v in env.items()),
                   dirs=tuple(str(d) for d in (spec.get("dirs") or ())),
                   check_url=spec.get("check_url"), check_command=spec.get("check_command"),
                   monitor_s=num("monitor_interval", None), clone=bool(spec.get("clone", False)),
                   with_vip=bool(spec.get("with_vip", True)), after=tuple(str(a) for a in after),
                   migration_threshold=spec.get("migration_threshold"),
                   failure_timeout_s=num("failure_timeout", None),
                   start_timeout_s=num("start_timeout", 30), stop_timeout_s=num("stop_timeout", 10))


@dataclass(frozen=True)
class FenceSpec:
    """One STONITH primitive: ``id`` (``fence-<node>``), the ``target`` node it fences, the RHCS
    ``agent`` (``stonith:<agent>``), its instance ``params`` ``((name, value), …)`` and the
    timeout of its start and monitor operations (s)."""

    id: str
    target: str
    agent: str
    params: tuple[tuple[str, str], ...]
    op_timeout_s: int = 20  # its start and monitor operations


@dataclass(frozen=True)
class Colocation:
    id: str
    rsc: str
    with_rsc: str


@dataclass(frozen=True)
class Order:
    id: str
    first: str
    then: str
    kind: str = "Mandatory"


@dataclass(frozen=True)
class FenceLevel:
    """One ``fencing-level`` of the CIB's fencing topology: ``target`` node, ``index`` (1 first),
    ``devices`` run in order — the level succeeds only when every one of them did."""

    target: str
    index: int
    devices: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"fl-{self.target}-{self.index}"


# --------------------------------------------------------------------------- crm_mon
@dataclass
class NodeState:
    """A node as one partition's crm_mon shows it."""

    name: str
    online: bool
    unclean: bool = False
    standby: bool = False
    pending: bool = False
    shutdown: bool = False
    maintenance: bool = False
    is_dc: bool = False
    resources_running: int = 0
    remote: bool = False  # a Pacemaker Remote node (crm_mon type="remote")

    @property
    def state(self) -> str:
        """``online`` | ``UNCLEAN`` | ``offline`` | ``pending`` | ``standby`` | ``shutdown``."""
        if self.unclean:
            return "UNCLEAN"
        if self.pending:
            return "pending"
        if not self.online:
            return "offline"
        if self.standby:
            return "standby"
        if self.shutdown:
            return "shutdown"
        return "online"


@dataclass
class ResourceState:
    """A resource (a clone instance counts under its primitive id): ``nodes`` it is active on,
    ``role`` (Started / Stopped / …), ``failed``, ``blocked``, ``agent`` (``ocf:heartbeat:IPaddr2``),
    ``pending``: an operation in flight (crm_mon's ``pending`` attribute); a start that has not
    returned shows as role ``Starting``: :meth:`ClusterView.started` counts neither."""

    id: str
    agent: str
    role: str
    active: bool
    failed: bool = False
    blocked: bool = False
    managed: bool = True
    nodes: list[str] = field(default_factory=list)
    pending: str = ""  # an operation in flight (crm_mon's ``pending``: "Starting", "Stopping", …)
    settled: list[str] = field(default_factory=list)  # nodes of instances active with nothing in flight


@dataclass
class FenceEvent:
    """One fence action from the fence history: ``action`` (off/reboot/on), ``target``, ``delegate``
    (the node that ran the device), ``origin`` (the node that asked), ``status`` (success/failed/
    pending), ``completed`` (Pacemaker's timestamp text)."""

    action: str
    target: str
    status: str
    delegate: str = ""
    origin: str = ""
    completed: str = ""
    client: str = ""


@dataclass
class ClusterView:
    """One partition's view of the cluster (``crm_mon --output-as=xml``, see :func:`parse_crm_mon`).

    ``quorum``: this partition has quorum; ``dc``: its DC (None: no DC yet); ``nodes``,
    ``resources`` by name/id; ``failcounts``: ``[(node, resource, count)]`` (count an int, or
    ``INFINITY`` as 1000000); ``failures``: failed actions ``[{op, node, status, exit_reason}]``;
    ``fence_history``: oldest first."""

    quorum: bool
    dc: str | None
    nodes: dict[str, NodeState] = field(default_factory=dict)
    resources: dict[str, ResourceState] = field(default_factory=dict)
    failcounts: list[tuple[str, str, int]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    fence_history: list[FenceEvent] = field(default_factory=list)

    def where(self, rid: str) -> list[str]:
        """Nodes resource ``rid`` (or a clone's primitive) is active on (a start in flight counts)."""
        r = self.resources.get(rid)
        return list(r.nodes) if r else []

    def started(self, rid: str) -> list[str]:
        """Nodes where ``rid`` is active with no operation in flight (its start has returned)."""
        r = self.resources.get(rid)
        return list(r.settled) if r else []

    def running_on(self, node: str) -> list[str]:
        return sorted(rid for rid, r in self.resources.items() if node in r.nodes)


def _b(el: ET.Element, attr: str) -> bool:
    return el.get(attr, "false") == "true"


def parse_crm_mon(text: str) -> ClusterView:
    """Parse ``crm_mon --output-as=xml`` (Pacemaker 2.1 schema) into a :class:`ClusterView`.

    Raises ValueError when ``text`` is not crm_mon XML."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"crm_mon output is not XML: {exc}") from None
    if root.tag != "pacemaker-result":
        raise ValueError(f"crm_mon output has root <{root.tag}>, expected <pacemaker-result>")
    summary = root.find("summary")
    dc_el = summary.find("current_dc") if summary is not None else None
    quorum = dc_el is not None and _b(dc_el, "with_quorum")
    dc = dc_el.get("name") if dc_el is not None and _b(dc_el, "present") else None
    view = ClusterView(quorum=quorum, dc=dc)
    for n in root.iterfind("nodes/node"):
        view.nodes[n.get("name", "")] = NodeState(
            name=n.get("name", ""), online=_b(n, "online"), unclean=_b(n, "unclean"),
            standby=_b(n, "standby"), pending=_b(n, "pending"), shutdown=_b(n, "shutdown"),
            maintenance=_b(n, "maintenance"), is_dc=_b(n, "is_dc"),
            resources_running=int(n.get("resources_running", "0") or 0), remote=n.get("type") == "remote")
    resources = root.find("resources")
    if resources is not None:
        for r in resources.iter("resource"):
            rid = r.get("id", "")
            nodes = [x.get("name", "") for x in r.findall("node")]
            prev = view.resources.get(rid)
            settled = [x for x in nodes if _b(r, "active") and r.get("role") in _RUNNING_ROLES
                       and not r.get("pending") and not _b(r, "failed")]
            if prev is not None:  # clone instances share the primitive id
                prev.nodes += [x for x in nodes if x not in prev.nodes]
                prev.settled += [x for x in settled if x not in prev.settled]
                prev.active = prev.active or _b(r, "active")
                prev.failed = prev.failed or _b(r, "failed")
                prev.pending = prev.pending or r.get("pending", "")
                if _b(r, "active"):
                    prev.role = r.get("role", prev.role)
                continue
            view.resources[rid] = ResourceState(
                id=rid, agent=r.get("resource_agent", ""), role=r.get("role", ""), active=_b(r, "active"),
                failed=_b(r, "failed"), blocked=_b(r, "blocked"), managed=r.get("managed", "true") == "true",
                nodes=nodes, pending=r.get("pending", ""), settled=settled)
    for n in root.iterfind("node_history/node"):
        for rh in n.iter("resource_history"):
            fc = rh.get("fail-count")
            if fc:
                count = 1000000 if fc.upper() == "INFINITY" else int(fc)
                view.failcounts.append((n.get("name", ""), rh.get("id", ""), count))
    for f in root.iterfind("failures/failure"):
        view.failures.append({"op": f.get("op_key", ""), "node": f.get("node", ""),
                              "status": f.get("exitstatus", f.get("status", "")),
                              "exit_reason": f.get("exitreason", "")})
    for ev in root.iterfind("fence_history/fence_event"):
        view.fence_history.append(FenceEvent(
            action=ev.get("action", ""), target=ev.get("target", ""), status=ev.get("status", ""),
            delegate=ev.get("delegate", ""), origin=ev.get("origin", ""),
            completed=ev.get("completed", ""), client=ev.get("client", "")))
    view.fence_history.sort(key=lambda e: e.completed)
    return view


# --------------------------------------------------------------------------- helpers (pure)
def cluster_name(app: AppContext) -> str:
    """The corosync cluster_name: the application's name with other characters than
    [A-Za-z0-9_-] as ``_`` (at most 32 characters)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", app.name)[:32]


def node_name(unit: Unit) -> str:
    """A unit's cluster node name: its host's name (also the lab host's hostname)."""
    return unit.host.name


def principal(app: AppContext) -> AppContext | None:
    """The principal the hacluster application is attached to (the related non-hacluster app
    whose units share its hosts), or None."""
    hosts = {u.host.name for u in app.units}
    others = [o for o in app.related.values() if o.kind not in (KIND, REMOTE_KIND)]
    for other in others:
        if {u.host.name for u in other.units} & hosts:
            return other
    return next(iter(others), None)


@dataclass(frozen=True)
class RemoteNode:
    """A Pacemaker Remote node: a unit of a ``pacemaker-remote`` application related to this
    cluster (seed 004's ``hacluster:pacemaker-remote`` relation, charm-pacemaker-remote's shape).
    ``name``: the node name — its host's name, which Nova and Masakari use for the same machine
    (masakari-hostmonitor reports ``socket.gethostname()``); ``address``: where its
    pacemaker-remoted listens (port :data:`REMOTE_PORT`); ``unit``: the pacemaker-remote unit."""

    name: str
    address: str
    unit: Unit


def remote_nodes(app: AppContext) -> list[RemoteNode]:
    """The remote nodes of the cluster, in application-name then unit order (pure)."""
    out: list[RemoteNode] = []
    for other in sorted(app.related_of_kind(REMOTE_KIND), key=lambda a: a.name):
        out += [RemoteNode(node_name(u), str(u.address), u) for u in other.units]
    return out


def with_vip(app: AppContext) -> AppContext:
    """``app`` with its VIP filled in from the principal's own option (``vip``/``vip_cidr``) when the engine
    gave it none (the engine shares a VIP only among VIP providers and load balancers).  Returns
    ``app`` itself when nothing is missing, else a shallow copy."""
    if app.vip is not None:
        return app
    p = principal(app)
    if p is None:
        return app
    # Only the principal's own ``vip``: a principal behind a load balancer is reached on the
    # balancer's VIP, which keepalived (or another cluster) holds — not this cluster's to move.
    raw = p.options.get("vip")
    if not raw:
        return app
    first = str(raw).split()[0]  # Juju's vip may list one address per network
    try:
        vip = ipaddress.IPv4Interface(first if "/" in first else f"{first}/{p.options.get('vip_cidr', 24)}")
    except ValueError as exc:
        raise InvalidInput(f"applications.{p.name}.options.vip: {exc}") from None
    return dataclasses.replace(app, vip=vip)


def _check_id(rid: str, where: str) -> str:
    if not _ID_RE.match(rid) or rid in (VIP_ID,) or rid.startswith("fence-"):
        raise InvalidInput(f"{where}: resource id {rid!r}: use letters, digits, '_', '.', '-' (not 'vip' or 'fence-*')")
    return rid


def daemon_resources(app: AppContext) -> list[DaemonResource]:
    """Every daemon resource of the cluster: the principal operator's ``ha_resources()``, then the
    option ``resources``, then the HAProxy clone for a principal offered on the VIP.  Raises
    InvalidInput for a malformed spec or a duplicate id."""
    from stackha.services import operator_for

    out: list[DaemonResource] = []
    p = principal(app)
    op = operator_for(p.kind) if p is not None else None
    if op is not None:
        out += list(op.ha_resources(p))
    opt = app.options.get("resources") or {}
    if not isinstance(opt, dict):
        raise InvalidInput(f"applications.{app.name}.options.resources: give a mapping id: {{command: …}}")
    for rid, spec in opt.items():
        out.append(DaemonResource.from_option(str(rid), spec, f"applications.{app.name}.options.resources"))
    proxy = _proxy_context(app)
    if proxy is not None:
        from stackha.services import haproxy as _haproxy

        out.append(DaemonResource(
            id=PROXY_ID, argv=(_haproxy.HAPROXY_BIN, "-W", "-db", "-f", _haproxy.CONFIG_PATH), clone=True,
            dirs=(_haproxy.RUN_DIR,), check_url=_haproxy.health_url(proxy), files=(_haproxy.CONFIG_PATH,),
            reload_signal="USR2"))
    seen: set[str] = set()
    for r in out:
        _check_id(r.id, f"applications.{app.name}")
        if r.id in seen:
            raise InvalidInput(f"applications.{app.name}: two resources are called {r.id!r}")
        seen.add(r.id)
        if r.user != "root" and not re.match(r"^[a-z_][a-z0-9_-]*$", r.user):
            raise InvalidInput(f"applications.{app.name}: resource {r.id}: bad user {r.user!r}")
        for k, _ in r.env:
            if not _ENV_RE.match(k):
                raise InvalidInput(f"applications.{app.name}: resource {r.id}: bad environment name {k!r}")
    for r in out:
        for a in r.after:
            if a != VIP_ID and a not in seen:
                raise InvalidInput(f"applications.{app.name}: resource {r.id} starts after {a!r}, which is not a resource")
    return out


def _proxy_context(app: AppContext) -> AppContext | None:
    """The HAProxy context for a principal offered through the VIP (see the module docstring)."""
    from stackha.services import operator_for

    p = principal(app)
    if p is None or app.vip is None or app.options.get("proxy") is False:
        return None
    op = operator_for(p.kind)
    if op is None or p.kind in ("haproxy", "keepalived"):
        return None
    fes = list(op.frontends(p))
    if not fes:
        return None
    return AppContext(name=f"{app.name}-haproxy", kind="haproxy", options={}, units=list(app.units),
                      secrets=app.secrets, vip=app.vip, tuning=app.tuning, frontends=fes)


def fence_devices(app: AppContext) -> list[FenceSpec]:
    """One STONITH device per node (see the module docstring).  Raises InvalidInput when a host
    has no fence device and the options name none, or ``fence_bmc`` / the BMC password is missing."""
    agent = app.options.get("fence_agent")
    if agent is not None and agent not in FENCE_AGENTS:
        raise InvalidInput(f"applications.{app.name}.options.fence_agent: {agent!r}; use one of {', '.join(FENCE_AGENTS)}")
    out = []
    bmcs = app.options.get("fence_bmc") or {}
    for unit in [*app.units, *(r.unit for r in remote_nodes(app))]:
        node = node_name(unit)
        fid = f"fence-{node}"
        if agent in (None, "lab"):
            describe = getattr(unit.host, "fence_device", None)
            if describe is None:
                raise InvalidInput(f"applications.{app.name}: host {node} has no built-in fence device; set "
                                   f"fence_agent (ipmilan or redfish) and fence_bmc.{node}")
            dev = describe()
            params = dict(dev.params)
            out.append(FenceSpec(fid, node, dev.agent, tuple(sorted({**params, "pcmk_host_list": node}.items()))))
            continue
        bmc = bmcs.get(node) or bmcs.get(unit.name)
        if not isinstance(bmc, dict) or not bmc.get("ip") or not bmc.get("username"):
            raise InvalidInput(f"applications.{app.name}.options.fence_bmc.{node}: give ip and username of its BMC")
        password = app.secrets.read(f"bmc-password-{node}")
        if password is None:
            raise InvalidInput(f"{app.name}: no BMC password for {node}: store it as secret bmc-password-{node}")
        params = {"ip": str(bmc["ip"]), "username": str(bmc["username"]), "password": password,
                  "pcmk_host_list": node}
        if agent == "ipmilan":
            params["lanplus"] = "1"
            if bmc.get("port"):
                params["ipport"] = str(bmc["port"])
        else:
            if bmc.get("port"):
                params["ipport"] = str(bmc["port"])
            if bmc.get("systems_uri"):
                params["systems_uri"] = str(bmc["systems_uri"])
            if bmc.get("ssl_insecure"):
                params["ssl_insecure"] = "1"
        out.append(FenceSpec(fid, node, f"fence_{agent}", tuple(sorted(params.items()))))
    return out


def force_down_device(app: AppContext) -> FenceSpec | None:
    """The ``nova-forcedown`` device (agent ``fence_stackha_nova``, :mod:`stackha.instanceha.
    fence_nova`) for a cluster with remote nodes, or None (no remote nodes, or option
    ``force_down: false``).  Its ``pcmk_host_list`` is every remote node."""
    remotes = remote_nodes(app)
    if not remotes or app.options.get("force_down") is False:
        return None
    # its start and monitor take a Keystone token through the VIP: seconds on a loaded control plane
    return FenceSpec(FORCE_DOWN_ID, "", NOVA_FENCE_AGENT, (("pcmk_host_list", " ".join(r.name for r in remotes)),),
                     op_timeout_s=60)


def fencing_levels(app: AppContext) -> list[FenceLevel]:
    """Level 1 of each remote node when the force-down device exists: its power fence, then the
    force-down — so Nova sees the host down only once it is off (seed 004: fence before evacuate)."""
    if force_down_device(app) is None:
        return []
    return [FenceLevel(r.name, 1, (f"fence-{r.name}", FORCE_DOWN_ID)) for r in remote_nodes(app)]


def force_down_identity(app: AppContext) -> tuple[AppContext, Any]:
    """The identity provider (keystone application, operator) the force-down device
    authenticates with: the principal's.  Raises InvalidInput when there is none."""
    from stackha.services.base import provider

    p = principal(app)
    found = provider(p, "identity") if p is not None else None
    if found is None:
        raise InvalidInput(f"applications.{app.name}: its remote nodes' fence level forces nova-compute down through "
                           f"Keystone: relate its principal to keystone, or set force_down: false")
    return found


def force_down_config(app: AppContext) -> str:
    """The JSON credentials file of ``fence_stackha_nova`` (rendered 0600; pure: the password is
    the one :meth:`IdentityProvider.ensure_service` gives user :data:`FORCE_DOWN_USER`)."""
    import json

    from stackha.services.openstack.operator import REGION

    id_app, id_op = force_down_identity(app)
    auth = {"auth_url": id_op.auth_url(id_app), "username": FORCE_DOWN_USER,
            "password": id_app.secrets.get(f"service-{FORCE_DOWN_USER}"), "project_name": "service",
            "user_domain_name": "Default", "project_domain_name": "Default"}
    return json.dumps({"auth": auth, "region": REGION, "log": NOVA_FENCE_LOG}, indent=1) + "\n"


def properties(app: AppContext) -> list[tuple[str, str]]:
    """The cluster properties stackha sets (nvpairs of ``cib-bootstrap-options``)."""
    t = timers(app.tuning)
    action = str(app.options.get("stonith_action", "off"))
    if action not in STONITH_ACTIONS:
        raise InvalidInput(f"applications.{app.name}.options.stonith_action: {action!r}; use off or reboot")
    return [
        ("stonith-enabled", "true"),
        ("stonith-action", action),
        ("stonith-timeout", f"{t.stonith_timeout_s}s"),
        ("no-quorum-policy", "stop"),
        ("dc-deadtime", f"{t.dc_deadtime_s}s"),
        ("cluster-recheck-interval", f"{t.recheck_s}s"),
    ]


def constraints(app: AppContext, daemons: list[DaemonResource]) -> tuple[list[Colocation], list[Order]]:
    """Colocation and order constraints of the VIP and the daemons (see the module docstring)."""
    cols: list[Colocation] = []
    orders: list[Order] = []
    has_vip = app.vip is not None
    for d in daemons:
        if d.clone:
            if has_vip:
                cols.append(Colocation(f"{VIP_ID}-with-{d.clone_id}", VIP_ID, d.clone_id))
                orders.append(Order(f"{d.clone_id}-then-{VIP_ID}", d.clone_id, VIP_ID, "Optional"))
        elif has_vip and d.with_vip:
            cols.append(Colocation(f"{d.id}-with-{VIP_ID}", d.id, VIP_ID))
            orders.append(Order(f"{VIP_ID}-then-{d.id}", VIP_ID, d.id))
        by_id = {x.id: x for x in daemons}
        for a in d.after:
            if a == VIP_ID and has_vip and d.with_vip and not d.clone:
                continue  # already ordered after the VIP
            first = by_id[a].placed_id if a in by_id else a
            orders.append(Order(f"{first}-then-{d.placed_id}", first, d.placed_id))
    return cols, orders


# --------------------------------------------------------------------------- the operator
class HAClusterOperator(BaseOperator):
    """Operator of kind ``hacluster``: Corosync + Pacemaker with STONITH (see the module docstring).

    Options: ``cluster_count`` (units needed before the cluster forms, default 3),
    ``corosync_mcastaddr`` / ``corosync_transport`` (seed bundles; knet is unicast, noted only),
    ``interface`` (VIP NIC, default eth0), ``stonith_action`` (off | reboot, default off),
    ``fence_agent`` (lab | ipmilan | redfish; default: the host's own device) with ``fence_bmc``,
    ``resources`` (daemon resources, see :class:`DaemonResource`), ``proxy`` (false: no HAProxy clone).
    """

    kind = KIND

    # ----------------------------------------------------------------- render
    def render(self, app: AppContext) -> dict[str, dict[str, RenderedFile]]:
        """``{unit: {path: file}}``: corosync.conf, the authkey (0400), the CIB sections
        (resources, constraints), launchers and checks of the daemon resources, the fence agent
        file of the host provider and, with the HAProxy clone, its haproxy.cfg (0600).  Pure.

        Raises :class:`InvalidInput` for fewer than 2 units, an unknown tuning, a bad option."""
        app = with_vip(app)
        if len(app.units) < 2:
            raise InvalidInput(f"{app.name}: a Pacemaker cluster needs at least 2 nodes (3 for quorum after a loss), "
                               f"got {len(app.units)}")
        t = timers(app.tuning)
        nodes = [{"name": node_name(u), "nodeid": u.number + 1, "address": str(u.address)} for u in app.units]
        from stackha.model.options import corosync_mcast

        mcast = corosync_mcast(app.options)
        authkey = app.secrets.get(AUTHKEY_SECRET, length=AUTHKEY_LENGTH)
        daemons = daemon_resources(app)
        fences = fence_devices(app)
        cols, orders = constraints(app, daemons)
        remotes = remote_nodes(app)
        force_down = force_down_device(app)
        # Nothing but the remote connections and fence devices may run on a cluster node: the VIP
        # and the daemons avoid the remote nodes (a compute host is not a controller).
        placed = ([VIP_ID] if app.vip is not None else []) + [d.placed_id for d in daemons]
        avoid = [(rid, r.name) for rid in placed for r in remotes]
        vip = None
        if app.vip is not None:
            nics = {u.host.vip_interface for u in app.units}
            nic = app.options.get("interface") or (nics.pop() if len(nics) == 1 else None)
            if nic is None:
                raise InvalidInput(f"applications.{app.name}.options.interface: the nodes' VIP interfaces differ "
                                   f"({', '.join(sorted({u.host.vip_interface for u in app.units}))}); "
                                   f"set interface, or give every node the same one in the inventory")
            vip = {"id": VIP_ID, "ip": str(app.vip.ip), "prefixlen": app.vip.network.prefixlen, "nic": str(nic)}
        dview = []
        for d in daemons:
            dview.append({
                "id": d.id, "clone": d.clone, "clone_id": d.clone_id, "binfile": d.binfile, "pidfile": d.pidfile,
                "logfile": d.logfile, "monitor_hook": f"{d.check_file} $__OCF_ACTION" if d.check() else None,
                "stop_timeout_s": d.stop_timeout_s, "start_timeout_s": d.start_timeout_s,
                "monitor_s": d.monitor_s or t.daemon_monitor_s,
                "migration_threshold": d.migration_threshold if d.migration_threshold is not None else t.migration_threshold,
                "failure_timeout_s": d.failure_timeout_s if d.failure_timeout_s is not None else t.failure_timeout_s,
            })
        resources_xml = render_template("pacemaker/cib-resources.xml.j2", t=t,
                                        fences=fences + ([force_down] if force_down else []), vip=vip,
                                        daemons=dview, remotes=remotes, remote_port=REMOTE_PORT)
        constraints_xml = render_template("pacemaker/cib-constraints.xml.j2", fences=fences, colocations=cols,
                                          orders=orders, avoid=avoid)
        fencing_xml = render_template("pacemaker/cib-fencing-topology.xml.j2", levels=fencing_levels(app))
        remote_files: dict[str, RenderedFile] = {}
        if remotes:
            remote_files[REMOTE_AUTHKEY] = RenderedFile(
                app.secrets.get(REMOTE_AUTHKEY_SECRET, length=REMOTE_AUTHKEY_LENGTH), mode=0o640, group="haclient")
        if force_down is not None:
            from stackha.instanceha import fence_nova

            remote_files[NOVA_FENCE_CONF] = RenderedFile(force_down_config(app), mode=0o600)
            remote_files[f"/usr/sbin/{NOVA_FENCE_AGENT}"] = RenderedFile(
                Path(fence_nova.__file__).read_text(), mode=0o755)
        proxy_files: dict[str, dict[str, RenderedFile]] = {}
        proxy = _proxy_context(app)
        if proxy is not None:
            from stackha.services.haproxy import HAProxyOperator

            proxy_files = HAProxyOperator().render(proxy)
        out: dict[str, dict[str, RenderedFile]] = {}
        for unit in app.units:
            files = {
                COROSYNC_CONF: RenderedFile(render_template(
                    "pacemaker/corosync.conf.j2", cluster=cluster_name(app), unit=unit.name, tuning=app.tuning,
                    authkey=AUTHKEY, mcast_ignored=mcast, t=t, nodes=nodes)),
                AUTHKEY: RenderedFile(authkey, mode=0o400),
                CIB_RESOURCES: RenderedFile(resources_xml, mode=0o600),
                CIB_CONSTRAINTS: RenderedFile(constraints_xml),
                CIB_FENCING: RenderedFile(fencing_xml),
                **remote_files,
            }
            for d in daemons:
                files[d.binfile] = RenderedFile(render_template(
                    "pacemaker/daemon.sh.j2", rid=d.id, unit=unit.name, user=d.user, cwd=shlex.quote(d.cwd),
                    dirs=[shlex.quote(x) for x in (RUN_DIR, *d.dirs)],
                    env=[(k, shlex.quote(v)) for k, v in d.env], argv=shlex.join(d.argv)), mode=0o755)
                if d.check():
                    grace = max(1, d.start_timeout_s - 5)
                    files[d.check_file] = RenderedFile(render_template(
                        "pacemaker/check.sh.j2", rid=d.id, unit=unit.name, check=d.check(), grace_s=grace,
                        start_tries=grace * 10), mode=0o755)
            dev = getattr(unit.host, "fence_device", None)
            if app.options.get("fence_agent") in (None, "lab") and dev is not None:
                for path, (content, mode) in dev().files.items():
                    files[path] = RenderedFile(content, mode=mode)
            files.update(proxy_files.get(unit.name, {}))
            out[unit.name] = files
        return out

    def seed_cib(self, app: AppContext) -> str:
        """The CIB written on a node's first boot (only the properties): pure."""
        app = with_vip(app)
        return render_template("pacemaker/cib-seed.xml.j2", properties=properties(app))

    # ----------------------------------------------------------------- apply
    def apply(self, app: AppContext) -> list[str]:
        """Form (or converge) the cluster: install files, start corosync then pacemaker where they
        are not running (reload corosync where its config changed), wait until every running node
        is online, apply the CIB when it differs, wait until the VIP and daemons are started.

        Idempotent: [] when nothing changed.  Units on powered-off hosts are skipped, then
        :class:`HostDown` names them.  Raises :class:`InvalidInput` when fewer units than
        ``cluster_count`` exist, :class:`ClusterError` when the cluster does not form or settle in
        time (with the daemon's log), :class:`CommandError` when cibadmin refuses the config.
        """
        app = with_vip(app)
        from stackha.model.options import cluster_count

        need = cluster_count(app.options)
        if len(app.units) < need:
            raise InvalidInput(f"{app.name}: cluster_count is {need} but the cluster has {len(app.units)} node(s); "
                               f"add units to the principal or lower cluster_count")
        rendered = self.render(app)
        up = [u for u in app.units if u.host.is_on()]
        down = [u for u in app.units if u not in up]
        changes = self._converge(app, rendered, up)
        if down:
            raise HostDown(f"{app.name}: cannot apply on powered-off host(s): "
                           f"{', '.join(f'{u.name} ({u.host.name})' for u in down)}")
        return changes

    def recover(self, app: AppContext) -> list[str]:
        """Bring the cluster stack back where it is missing (a host powered on again: start corosync
        and pacemaker, it rejoins) and clear failures of resources that are stopped everywhere
        (``crm_resource --cleanup``).  Powered-off hosts are skipped silently: the cluster runs
        without them.  Returns what it did."""
        app = with_vip(app)
        up = [u for u in app.units if u.host.is_on()]
        if not up:
            return []
        changes = self._converge(app, self.render(app), up, tolerate_minority=True)
        if 2 * len(up) <= len(app.units):
            return changes
        view = self.best_view(app)
        if view is not None and view.quorum:
            for rid in self._stopped_resources(app, view):
                leader = self._cib_unit(app, up)
                leader.host.run(["crm_resource", "--cleanup", "--resource", rid], timeout=30)
                changes.append(f"{rid}: failures cleared (crm_resource --cleanup)")
        return changes

    def _converge(self, app: AppContext, rendered: dict, up: list[Unit], tolerate_minority: bool = False) -> list[str]:
        changes: list[str] = []
        changed_on: dict[str, set[str]] = {}
        reload_corosync = False
        for unit in up:
            host = unit.host
            ensure = getattr(host, "ensure_fencing", None)
            if ensure is not None and app.options.get("fence_agent") in (None, "lab"):
                ensure()
            host.run(["mkdir", "-p", BIN_DIR, RUN_DIR, LOG_DIR], check=True)
            changed = install_files(host, rendered[unit.name])
            changed_on[unit.name] = set(changed)
            changes += [f"{unit.name}: {p}" for p in changed]
            if COROSYNC_CONF in changed and host.daemon(COROSYNC_DAEMON) is not None:
                reload_corosync = True
            if host.read_file(CIB_FILE) is None and host.daemon(PACEMAKER_DAEMON) is None:
                host.run(["rm", "-f", f"{CIB_DIR}/cib.xml.sig", f"{CIB_DIR}/cib.last"], check=True)
                host.write_file(CIB_FILE, self.seed_cib(app), mode=0o600, owner="hacluster", group="haclient")
        for unit in up:
            if unit.host.daemon(COROSYNC_DAEMON) is None:
                unit.host.spawn(COROSYNC_DAEMON, ["corosync", "-f", "-c", COROSYNC_CONF])
                changes.append(f"{unit.name}: started corosync on {unit.host.name}")
        if reload_corosync:
            leader = next(u for u in up if u.host.daemon(COROSYNC_DAEMON) is not None)
            leader.host.run(["corosync-cfgtool", "-R"], check=True, timeout=30)
            changes.append(f"{leader.name}: corosync.conf reloaded cluster-wide (corosync-cfgtool -R)")
        for unit in up:
            if unit.host.daemon(PACEMAKER_DAEMON) is None:
                self._wait(lambda u=unit: self._corosync_ready(u), 20, f"{unit.name}: corosync did not answer", unit,
                           COROSYNC_DAEMON)
                unit.host.spawn(PACEMAKER_DAEMON, ["pacemakerd"], env=PACEMAKER_ENV)
                changes.append(f"{unit.name}: started pacemaker on {unit.host.name}")
        if 2 * len(up) <= len(app.units):
            msg = (f"{app.name}: only {len(up)} of {len(app.units)} nodes are on: no quorum, the cluster keeps its "
                   f"resources stopped (no-quorum-policy=stop) until a majority is back")
            if not tolerate_minority:
                raise ClusterError(msg)
            return changes + [msg]
        names = [node_name(u) for u in up]
        self._wait(lambda: self._all_online(app, up, names), START_TIMEOUT_S,
                   f"{app.name}: nodes {', '.join(names)} not all online", up[0], PACEMAKER_DAEMON)
        leader = self._cib_unit(app, up)
        before = self.best_view(app)
        if force_down_device(app) is not None:  # its Keystone user, before the device may run
            id_app, id_op = force_down_identity(app)
            changes += id_op.ensure_service(id_app, FORCE_DOWN_USER, [])[1]
        if self._apply_cib(app, leader, rendered[leader.name]):
            changes.append(f"{leader.name}: cluster configuration applied (cibadmin --patch)")
        self._wait(lambda: self._settled(app), SETTLE_TIMEOUT_S,
                   f"{app.name}: resources not all started", leader, PACEMAKER_DAEMON)
        if before is not None:
            reloaded = self._reload_changed(app, up, changed_on, before, leader)
            if any(": restarted" in x for x in reloaded):
                # crm_resource --restart leaves an empty <meta_attributes> behind: back to the rendered CIB
                self._apply_cib(app, leader, rendered[leader.name])
            changes += reloaded
        return changes

    def _reload_changed(self, app: AppContext, up: list[Unit], changed_on: dict[str, set[str]],
                        before: ClusterView, leader: Unit) -> list[str]:
        """Daemon resources whose files changed where they were already running: send their
        reload signal there, or restart them (``crm_resource --restart``, once per resource)."""
        out: list[str] = []
        for d in daemon_resources(app):
            mine = {d.binfile, d.check_file, *d.files}
            hit = [u for u in up if changed_on.get(u.name, set()) & mine and node_name(u) in before.started(d.id)]
            if not hit:
                continue
            if d.reload_signal:
                for u in hit:
                    pid = self.daemon_pid(app, u, d.id)
                    if pid is not None and u.host.run(["kill", f"-{d.reload_signal}", str(pid)]).ok:
                        out.append(f"{u.name}: {d.id} reloaded (SIG{d.reload_signal})")
                continue
            leader.host.run(["crm_resource", "--restart", "--resource", d.placed_id, "--timeout",
                             f"{d.stop_timeout_s + d.start_timeout_s + 20}s"], check=True, timeout=300)
            out.append(f"{d.id}: restarted (its files changed on {', '.join(u.name for u in hit)})")
        return out

    def _wait(self, pred, timeout_s: float, what: str, unit: Unit, daemon: str) -> None:
        """Until ``pred()`` returns True (any other value, or a HostError, is "not yet" and
        described in the error); :class:`ClusterError` naming ``what`` after ``timeout_s`` s."""
        last: list[Any] = [None]

        def done() -> bool:
            try:
                last[0] = pred()
            except HostError as exc:
                last[0] = str(exc)
            return last[0] is True

        try:
            wait_until(done, timeout_s, 0.2, what=what)
        except WaitTimeout:
            detail = f" ({last[0]})" if isinstance(last[0], str) else ""
            raise ClusterError(f"{what} within {timeout_s:.0f} s{detail}: {log_tail(unit.host, daemon, 2)}",
                               unit=unit.name) from None

    def _corosync_ready(self, unit: Unit) -> bool | str:
        if unit.host.daemon(COROSYNC_DAEMON) is None:
            return "corosync exited"
        return unit.host.run(["corosync-cfgtool", "-s"], timeout=10).ok

    def _all_online(self, app: AppContext, up: list[Unit], names: list[str]) -> bool | str:
        for u in up:
            if u.host.daemon(PACEMAKER_DAEMON) is None:
                return f"pacemakerd exited on {u.host.name}"
        view = self.view(up[0])
        if view is None or view.dc is None:
            return "no DC yet"
        missing = [n for n in names if not (view.nodes.get(n) and view.nodes[n].state == "online")]
        return True if not missing else f"not online: {', '.join(missing)}"

    def _cib_unit(self, app: AppContext, up: list[Unit]) -> Unit:
        """The unit CIB changes go through: the first that is on and runs pacemaker."""
        for u in up:
            if u.host.daemon(PACEMAKER_DAEMON) is not None:
                return u
        raise ClusterError(f"{app.name}: pacemaker runs nowhere")

    def wanted_configuration(self, app: AppContext, live: ET.Element, files: dict[str, RenderedFile]) -> ET.Element:
        """The CIB ``live`` (a full ``cibadmin -Q`` tree) with stackha's resources, constraints and
        properties in place — a new tree; ``live`` is not modified."""
        app = with_vip(app)
        new = ET.fromstring(ET.tostring(live))
        cfg = new.find("configuration")
        if cfg is None:
            raise ValueError("CIB without <configuration>")
        for tag, path in (("resources", CIB_RESOURCES), ("constraints", CIB_CONSTRAINTS),
                          ("fencing-topology", CIB_FENCING)):
            old = cfg.find(tag)
            idx = list(cfg).index(old) if old is not None else len(cfg)
            if old is not None:
                cfg.remove(old)
            wanted = ET.fromstring(files[path].content)
            if tag != "fencing-topology" or len(wanted):  # no levels: no section
                cfg.insert(idx, wanted)
        crm = cfg.find("crm_config")
        if crm is None:
            crm = ET.Element("crm_config")
            cfg.insert(0, crm)
        pset = crm.find(f"cluster_property_set[@id='{PROPERTY_SET}']")
        if pset is None:
            pset = ET.SubElement(crm, "cluster_property_set", id=PROPERTY_SET)
        for name, value in properties(app):
            nv = next((x for x in pset.findall("nvpair") if x.get("name") == name), None)
            if nv is None:
                ET.SubElement(pset, "nvpair", id=f"{PROPERTY_SET}-{name}", name=name, value=value)
            elif nv.get("value") != value:
                nv.set("value", value)
        return new

    def _apply_cib(self, app: AppContext, unit: Unit, files: dict[str, RenderedFile]) -> bool:
        """Patch the live CIB to the rendered configuration if they differ; True if it changed."""
        host = unit.host
        res = host.run(["cibadmin", "--query"], check=True, timeout=30)
        live = ET.fromstring(res.stdout)
        new = self.wanted_configuration(app, live, files)
        if _canonical(live.find("configuration")) == _canonical(new.find("configuration")):
            return False
        host.write_file(f"{CONFIG_DIR}/cib-live.xml", res.stdout, mode=0o600)
        host.write_file(f"{CONFIG_DIR}/cib-wanted.xml", ET.tostring(new, encoding="unicode"), mode=0o600)
        diff = host.run(["crm_diff", "--original", f"{CONFIG_DIR}/cib-live.xml", "--new", f"{CONFIG_DIR}/cib-wanted.xml",
                         "--no-version"], timeout=30)
        if diff.rc == 0:
            return False
        if diff.rc != 1 or not diff.stdout.strip():
            raise CommandError(host.name, diff)
        host.write_file(f"{CONFIG_DIR}/cib-patch.xml", diff.stdout, mode=0o600)
        host.run(["cibadmin", "--patch", "--xml-file", f"{CONFIG_DIR}/cib-patch.xml"], check=True, timeout=60)
        return True

    def _settled(self, app: AppContext) -> bool | str:
        view = self.best_view(app)
        if view is None:
            return "no cluster view"
        if not view.quorum:
            return "no quorum"
        stopped = self._stopped_resources(app, view)
        return True if not stopped else f"not started: {', '.join(stopped)}"

    def _stopped_resources(self, app: AppContext, view: ClusterView) -> list[str]:
        """Resources that should run and run nowhere (the VIP and the daemons; fence devices too)."""
        wanted = [f.id for f in fence_devices(app)]
        if force_down_device(app) is not None:
            wanted.append(FORCE_DOWN_ID)
        for r in remote_nodes(app):
            try:
                if r.unit.host.is_on():
                    wanted.append(r.name)
            except HostError:
                pass
        if app.vip is not None:
            wanted.append(VIP_ID)
        wanted += [d.id for d in daemon_resources(app)]
        return [rid for rid in wanted if not view.started(rid)]

    # ----------------------------------------------------------------- observe
    def view(self, unit: Unit) -> ClusterView | None:
        """``unit``'s partition's view (crm_mon on its host), or None when pacemaker does not answer."""
        host = unit.host
        try:
            res = host.run(["crm_mon", "--output-as=xml", "--inactive", "--fence-history=3"], timeout=10)
        except HostError:
            return None
        if not res.ok and "<pacemaker-result" not in res.stdout:
            return None
        try:
            return parse_crm_mon(res.stdout)
        except ValueError:
            return None

    def best_view(self, app: AppContext) -> ClusterView | None:
        """The cluster's view from a quorate partition with a DC when one answers, else any
        partition's, else None (crm_mon on every node that is on, in parallel)."""
        views = [v for v in self._views(app).values() if v is not None]
        quorate = [v for v in views if v.quorum and v.dc]
        return (quorate or views or [None])[0]

    def _views(self, app: AppContext) -> dict[str, ClusterView | None]:
        def one(u: Unit):
            try:
                if not u.host.is_on() or u.host.daemon(PACEMAKER_DAEMON) is None:
                    return None
            except HostError:
                return None
            return self.view(u)

        with ThreadPoolExecutor(max_workers=max(1, len(app.units))) as pool:
            return dict(zip([u.name for u in app.units], pool.map(one, app.units)))

    def observe(self, app: AppContext) -> AppStatus:
        """Facts about the cluster, per unit and for the application; never changes anything.

        Unit states: ``error`` — host off, or the node is UNCLEAN in the quorate view; ``blocked`` —
        corosync or pacemaker not running, the node's partition has no quorum (its resources are
        stopped: no-quorum-policy=stop), or a resource that must run runs nowhere; ``waiting`` —
        joining (no DC yet / pending); ``active`` — online in a quorate cluster.  Unit facts:
        ``node`` (state in the quorate view), ``quorum`` (of its own partition), ``resources``
        (running here), ``failcounts`` ({resource: count}), ``holds_vip``.
        App facts: ``quorum``, ``dc``, ``nodes`` ({name: online/offline/UNCLEAN/pending/…}),
        ``resources`` ({id: [nodes]}), ``vip``, ``vip_holder``, ``vip_holders``, ``duplicate_vip``,
        ``failcounts`` ([{node, resource, count}]), ``failures``, ``fence_history`` ([{action,
        target, delegate, origin, status, completed}]), ``problems``.  ≈ 0.1–0.3 s (one crm_mon per
        node, in parallel).
        """
        app = with_vip(app)
        views = self._views(app)
        best = next((v for v in views.values() if v is not None and v.quorum and v.dc), None)
        if best is None:
            best = next((v for v in views.values() if v is not None), None)
        holders = []
        for u in app.units:
            try:
                if app.vip is not None and u.host.is_on() and any(a.ip == app.vip.ip for a in u.host.addresses()):
                    holders.append(u.host.name)
            except HostError:
                pass
        problems: list[str] = []
        if len(holders) > 1:
            problems.append(f"duplicate VIP {app.vip.ip}: held by {', '.join(holders)}")
        stopped: list[str] = []
        if best is not None and best.quorum:
            try:
                stopped = self._stopped_resources(app, best)
            except InvalidInput as exc:
                problems.append(str(exc))
            if stopped:
                problems.append(f"not running anywhere: {', '.join(stopped)}")
        elif best is not None:
            problems.append("no partition has quorum: resources are stopped (no-quorum-policy=stop)")
        units = [self._unit_status(app, u, views.get(u.name), best, holders, stopped) for u in app.units]
        facts: dict[str, Any] = {
            "quorum": bool(best and best.quorum),
            "dc": best.dc if best else None,
            "nodes": {n: s.state for n, s in best.nodes.items()} if best else {},
            "resources": {rid: list(r.nodes) for rid, r in best.resources.items()} if best else {},
            "vip": str(app.vip) if app.vip else None,
            "vip_holder": holders[0] if len(holders) == 1 else None,
            "vip_holders": holders,
            "duplicate_vip": len(holders) > 1,
            "failcounts": [{"node": n, "resource": r, "count": c} for n, r, c in (best.failcounts if best else [])],
            "failures": list(best.failures) if best else [],
            "fence_history": [e.__dict__ for e in best.fence_history] if best else [],
            "problems": problems,
        }
        return AppStatus(app=app.name, units=units, facts=facts)

    def _unit_status(self, app: AppContext, unit: Unit, own: ClusterView | None, best: ClusterView | None,
                     holders: list[str], stopped: list[str]) -> UnitStatus:
        host = unit.host
        node = node_name(unit)
        facts: dict[str, Any] = {"holds_vip": host.name in holders}
        if best is not None and node in best.nodes:
            facts["node"] = best.nodes[node].state
            facts["resources"] = best.running_on(node)
            facts["failcounts"] = {r: c for n, r, c in best.failcounts if n == node}
        try:
            if not host.is_on():
                fenced = best is not None and any(e.target == node and e.status == "success" for e in best.fence_history)
                return UnitStatus(unit.name, WorkloadState.ERROR,
                                  f"host {host.name} is powered off" + (" (fenced)" if fenced else ""), facts)
            if host.daemon(COROSYNC_DAEMON) is None:
                return UnitStatus(unit.name, WorkloadState.BLOCKED,
                                  f"corosync is not running: {log_tail(host, COROSYNC_DAEMON, 2)}", facts)
            if host.daemon(PACEMAKER_DAEMON) is None:
                return UnitStatus(unit.name, WorkloadState.BLOCKED,
                                  f"pacemaker is not running: {log_tail(host, PACEMAKER_DAEMON, 2)}", facts)
        except HostDown:
            return UnitStatus(unit.name, WorkloadState.ERROR, f"host {host.name} is powered off", facts)
        except HostError as exc:
            return UnitStatus(unit.name, WorkloadState.UNKNOWN, f"cannot observe: {exc}", facts)
        if own is None:
            return UnitStatus(unit.name, WorkloadState.WAITING, "pacemaker runs; crm_mon does not answer yet", facts)
        facts["quorum"] = own.quorum
        if own.dc is None:
            return UnitStatus(unit.name, WorkloadState.WAITING, "joining: no DC elected yet", facts)
        if not own.quorum:
            members = sum(1 for s in own.nodes.values() if s.online)
            return UnitStatus(unit.name, WorkloadState.BLOCKED,
                              f"partition without quorum ({members} of {len(app.units)} nodes): resources stopped "
                              f"(no-quorum-policy=stop)", facts)
        state = best.nodes[node].state if best is not None and node in best.nodes else "unknown"
        if state == "UNCLEAN":
            return UnitStatus(unit.name, WorkloadState.ERROR, "UNCLEAN: the cluster must fence this node", facts)
        if state in ("pending", "unknown"):
            return UnitStatus(unit.name, WorkloadState.WAITING, f"joining the cluster ({state})", facts)
        if state != "online":
            return UnitStatus(unit.name, WorkloadState.BLOCKED, f"node is {state}", facts)
        if stopped:
            return UnitStatus(unit.name, WorkloadState.BLOCKED, f"not running anywhere: {', '.join(stopped)}", facts)
        running = facts.get("resources") or []
        dc = " (DC)" if best is not None and best.dc == node else ""
        msg = f"online{dc}" + (f"; runs {', '.join(running)}" if running else "")
        failing = {r: c for r, c in facts.get("failcounts", {}).items() if c}
        if failing:
            msg += "; failcounts " + ", ".join(f"{r}={'INFINITY' if c >= 1000000 else c}" for r, c in failing.items())
        return UnitStatus(unit.name, WorkloadState.ACTIVE, msg, facts)

    # ----------------------------------------------------------------- helpers for scenarios
    def vip_holders(self, app: AppContext) -> list[str]:
        """Hosts whose interfaces carry the VIP right now (empty when nobody holds it)."""
        app = with_vip(app)
        out = []
        for u in app.units:
            try:
                if app.vip is not None and u.host.is_on() and any(a.ip == app.vip.ip for a in u.host.addresses()):
                    out.append(u.host.name)
            except HostError:
                pass
        return out

    def daemon_pid(self, app: AppContext, unit: Unit, rid: str) -> int | None:
        """PID (host view) of daemon resource ``rid`` on ``unit`` (from the agent's pidfile), or None."""
        raw = unit.host.read_file(f"{RUN_DIR}/{rid}.pid")
        try:
            return int(raw.split()[0]) if raw and raw.split() else None
        except ValueError:
            return None


# --------------------------------------------------------------------------- helpers
def _canonical(el: ET.Element | None) -> str:
    if el is None:
        return ""
    return ET.canonicalize(ET.tostring(el, encoding="unicode"), strip_text=True)

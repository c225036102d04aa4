"""Galera: MariaDB 10.11 + galera-4 26.4 as a multi-primary cluster of ≥ 3 nodes, one per unit.

How a node runs (LAB-NOTES "Galera")
-----------------------------------
Each unit has its own ``/srv/galera/my.cnf`` (mode 0600, user mysql: it holds the SST secret) and
``mariadbd --defaults-file=/srv/galera/my.cnf`` runs as user ``mysql`` (as root, rsync SST fails
with "permission denied" and the joiner aborts ≈ 130 s later), so /etc/mysql is never read.
Everything is per host: datadir ``/srv/galera/data`` and tmpdir ``/srv/galera/tmp`` (disk,
chowned to mysql), socket and pid file in ``/run/galera`` (RAM: re-created before every start),
``bind-address``, ``wsrep_node_address``, ``gmcast.listen_addr`` (:4567), ``ist.recv_addr``
(:4568) and ``wsrep_sst_receive_address`` (:4444) on the unit's address.  State transfer is rsync
(mariabackup is not installed).  ``wsrep_cluster_address`` lists every unit.  Daemons:
``mariadbd`` and ``clustercheck``.

Secrets (``app.secrets``, never logged): ``root-password`` (root@localhost: unix_socket OR that
password, so the operator, as OS root on the unit, needs no password on a command line),
``sst-password`` (user ``sst``; unused by rsync, ready for mariabackup), ``clustercheck-password``
(user ``clustercheck``, no privilege), ``client-password`` (user :data:`CLIENT_USER`, all
privileges on database :data:`CLIENT_DATABASE`, from the units' network: what tests and probes
use) and ``db-<user>`` for :meth:`GaleraOperator.ensure_database`.  Files holding them are 0600.
SQL carrying a secret is sent on the client's stdin, never on a command line.

Failure-detection timers (``app.tuning == "stackha"``)
-----------------------------------------------------
A kill -9 (or power-off) of ANY node stalls commits on every node until the group drops it: the
EVS layer waits ``evs.suspect_timeout`` (Galera default PT5S) without a message from the node,
checked every ``evs.inactive_check_period``, then installs a new view.  stackha sets:

==========================  =======  =======  ==================================================
option                      stock    stackha  why
==========================  =======  =======  ==================================================
evs.suspect_timeout         PT5S     PT1.5S   the write-gap term; ≥ 3 keepalives so one lost or
                                              late packet never suspects a live node
evs.keepalive_period        PT1S     PT0.5S   Galera requires ≤ suspect_timeout / 3
evs.inactive_check_period   PT0.5S   PT0.5S   Galera requires ≤ suspect_timeout / 2 (kept)
evs.inactive_timeout        PT15S    PT3S     hard limit when the others do not agree on the
                                              suspicion (2 × suspect)
evs.install_timeout         PT7.5S   PT3S     a view install must fit in [2 × keepalive,
                                              inactive_timeout]; shorter retries a stuck install
evs.join_retrans_period     PT1S     PT0.5S   join messages resent faster during a view change
gmcast.peer_timeout         PT3S     PT2S     a silent TCP peer is dropped (and relayed around)
                                              after 4 missed keepalives
==========================  =======  =======  ==================================================

Measured in the lab (3 nodes, a client on a 4th host INSERTing into node 1 every ≈ 10 ms, node 3
killed; longest gap between acknowledged INSERTs, 2–3 runs each):

==================  ==============  ===============
fault on node 3     stock timers    stackha timers
==================  ==============  ===============
kill -9 mariadbd    6.30–6.42 s     2.04–2.36 s
host power-off      6.18–6.29 s     2.17–2.46 s
==================  ==============  ===============

suspect_timeout PT1S gave 1.5–2.1 s, but on this 2-core machine under load the gcomm thread was
seen stalled for 1.5 s ("last inactive check more than PT1.5S ago") while a node started, so PT1S
would evict live nodes; PT1.5S keeps a margin.  "stock" renders none of these (Galera's defaults,
the benchmark baseline).

Bootstrap, join, rejoin by IST
------------------------------
:meth:`GaleraOperator.apply` bootstraps unit 0 (``mariadb-install-db``, then
``--wsrep-new-cluster``) only when no unit has any data; the others join by SST.  A node that
died (kill -9, power-off) has ``seqno: -1`` in grastate.dat, and a plain restart would do a full
SST; :meth:`GaleraOperator.recover` first runs ``mariadbd --wsrep-recover`` (≈ 0.2 s) to read its
committed position from InnoDB and restarts it with ``--wsrep-start-position=<uuid:seqno>``, so a
donor sends only the missing write-sets (IST; LAB-NOTES).  Before any such start the saved
primary view ``gvwstate.dat`` is removed: with ``pc.recovery`` it makes a restarting node try
to restore the old primary component, which delayed joins by ≈ 6 s in the lab.

Full cold start (no node running: power failure of every host)
--------------------------------------------------------------
Every grastate.dat then says ``seqno: -1, safe_to_bootstrap: 0`` and Galera refuses to bootstrap.
:meth:`GaleraOperator.recover`:

1. reads each unit's position: grastate.dat if it holds a seqno (clean shutdown), else
   ``--wsrep-recover``; a unit with an empty datadir (never joined) is left out, it has nothing
   to lose and joins by SST;
2. refuses to guess — raises :class:`GaleraBlocked` with the exact reason, and marks every
   reachable unit ``blocked`` (file ``/srv/galera/blocked``, shown by ``observe``) — when a
   position cannot be read (host powered off, recovery finds none, mariadbd running but
   silent) or when the units hold different cluster UUIDs: bootstrapping the wrong node throws
   away committed transactions;
3. bootstraps the unit with the highest seqno (ties: a node still running, then the one
   grastate marks ``safe_to_bootstrap: 1``, then the lowest unit number): sets ``safe_to_bootstrap: 1`` there
   and starts it with ``--wsrep-new-cluster --wsrep-start-position=<uuid:seqno>``;
4. starts the others with their own positions: they join by IST from it.

When some nodes still run but none is Primary (two of three died at once), the same comparison
includes the survivors (position = ``wsrep_last_committed``); if a survivor is the most advanced
it is promoted in place with ``pc.bootstrap=YES``, otherwise the survivors are stopped cleanly
and the cold start above runs.  ``recover(app, bootstrap_unit="galera/1")`` overrides the choice
(an operator's decision, which may discard transactions; never taken automatically).

Health endpoint
---------------
``socat TCP-LISTEN:9200,fork EXEC:/srv/galera/clustercheck.sh`` (daemon ``clustercheck``, user
mysql): the script queries the local node and answers HTTP 200 only when
``wsrep_local_state = 4`` (Synced) and ``wsrep_ready = ON`` and (stackha's tuning) the datadir's
file system has ``clustercheck-min-free`` bytes free, else 503 — Donor/Desynced, Joining,
non-Primary, stopped or disk-full nodes all get 503 (or no answer).  :meth:`GaleraOperator.frontends`
offers port 3306 with that check and ``single_writer`` (one active server, the others
``backup``): multi-writer Galera behind round-robin causes certification conflicts.

Other figures measured in the lab (2 cores; "loaded": other labs running, load average ≈ 19)
-------------------------------------------------------------------------------------------
- apply on an empty lab → 3 nodes Synced with users and clustercheck: 10.4–11.9 s (17–26 s
  loaded): bootstrap ≈ 1.4 s (mariadb-install-db + start), each joiner ≈ 5 s of rsync SST.
- kill -9 seen by observe: 0.1 s (daemon gone; a hung node: ≤ 2 s query timeout).
- IST rejoin after kill -9 (wsrep-recover + start + IST + Synced): 3.1–4.8 s (6–10 s loaded).
- cold start after powering off all three hosts (power on + recover): 7.8–12.8 s, no
  acknowledged row lost.  Two of three killed (survivor promoted in place): 9–12 s.
- RSS: ≈ 130 MiB per mariadbd (128 MiB buffer pool, mostly untouched); clustercheck (socat)
  ≈ 4.6 MiB.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from pymysql.converters import escape_string
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from stackha.errors import InvalidInput, UserError
from stackha.hosts.base import CommandTimeout, Host, HostDown, HostError
from stackha.services.base import (
    BaseOperator,
    AppContext,
    AppStatus,
    Frontend,
    RenderedFile,
    Unit,
    UnitStatus,
    WorkloadState,
    install_files,
    render_template,
)

KIND = "galera"
BASE = "/srv/galera"
CNF = f"{BASE}/my.cnf"
DATA = f"{BASE}/data"
TMP = f"{BASE}/tmp"
RUN = "/run/galera"
#: Size (bytes) of the volume the lab gives BASE (sparse: only written blocks use the machine's
#: disk), so a Galera node's disk can fill up alone (the galera-writer-disk-full scenario).
VOLUME_BYTES = 4 << 30
SOCKET = f"{RUN}/mysqld.sock"
PID = f"{RUN}/mariadbd.pid"
ROOT_CNF = f"{BASE}/root.cnf"
CHECK_CNF = f"{BASE}/clustercheck.cnf"
CHECK_SCRIPT = f"{BASE}/clustercheck.sh"
BLOCKED_FILE = f"{BASE}/blocked"
GRASTATE = f"{DATA}/grastate.dat"
GVWSTATE = f"{DATA}/gvwstate.dat"
PROVIDER = "/usr/lib/galera/libgalera_smm.so"

MYSQL_PORT = 3306
GCOMM_PORT = 4567
IST_PORT = 4568
SST_PORT = 4444
CHECK_PORT = 9200

DAEMON = "mariadbd"
CHECK_DAEMON = "clustercheck"
MIN_UNITS = 3
CLIENT_USER = "stackha"
CLIENT_DATABASE = "stackha"
SST_USER = "sst"
CHECK_USER = "clustercheck"
ZERO_UUID = "00000000-0000-0000-0000-000000000000"

#: Seconds: one status query (observe must see a hung node as not active quickly).
QUERY_TIMEOUT_S = 2.0
#: Seconds: client connect timeout written to the credential files.
CONNECT_TIMEOUT_S = 1
#: Seconds: bootstrap node Synced; a joiner Synced (rsync SST of a small database ≈ 5 s);
#: a clean shutdown.
BOOTSTRAP_TIMEOUT_S = 60.0
JOIN_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 120.0

#: wsrep provider options of ``tuning == "stackha"`` (see the module docstring for the why).
STACKHA_TIMERS: dict[str, str] = {
    "evs.keepalive_period": "PT0.5S",
    "evs.inactive_check_period": "PT0.5S",
    "evs.suspect_timeout": "PT1.5S",
    "evs.inactive_timeout": "PT3S",
    "evs.install_timeout": "PT3S",
    "evs.join_retrans_period": "PT0.5S",
    "gmcast.peer_timeout": "PT2S",
}

STATUS_VARS = (
    "wsrep_local_state", "wsrep_local_state_comment", "wsrep_cluster_status", "wsrep_cluster_size",
    "wsrep_ready", "wsrep_connected", "wsrep_last_committed", "wsrep_local_state_uuid",
    "wsrep_cluster_state_uuid",
)
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_SIZE_RE = re.compile(r"^[0-9]+[KMG]?$")
_POSITION_RE = re.compile(r"WSREP: Recovered position:\s*([0-9a-f-]{36}):(-?[0-9]+)")

T = TypeVar("T")


class GaleraError(UserError):
    """A Galera operation failed (a node did not start, sync or answer); the message names the
    unit and quotes the relevant lines of its log."""


class GaleraBlocked(GaleraError):
    """Recovery stopped rather than guess which node holds the latest data.

    ``reason``: the exact reason (which unit's position is missing or which UUIDs differ), also
    written to ``/srv/galera/blocked`` on every reachable unit so ``observe`` reports it."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"galera recovery blocked: {reason}")


@dataclass(frozen=True)
class Position:
    """A node's replication position: cluster state ``uuid`` and the last committed ``seqno``
    (-1: unknown), ``safe_to_bootstrap`` from grastate.dat, and where it was read."""

    uuid: str
    seqno: int
    safe_to_bootstrap: bool = False
    source: str = "grastate.dat"

    def __str__(self) -> str:
        return f"{self.uuid}:{self.seqno}"

    @property
    def readable(self) -> bool:
        return self.uuid != ZERO_UUID and self.seqno >= 0


@dataclass
class Probe:
    """What :meth:`GaleraOperator._probe` saw on one unit: host ``on``, mariadbd ``running``,
    its wsrep ``status`` (None when it did not answer; ``error`` says why), clustercheck up."""

    unit: Unit
    on: bool
    running: bool = False
    status: dict[str, str] | None = None
    error: str = ""
    clustercheck: bool = False
    blocked: str = ""

    @property
    def primary(self) -> bool:
        return bool(self.status) and self.status.get("wsrep_cluster_status") == "Primary"

    @property
    def synced(self) -> bool:
        return self.primary and self.status.get("wsrep_local_state_comment") == "Synced"


def parse_grastate(text: str) -> Position | None:
    """Parse grastate.dat (``uuid: …``, ``seqno: …``, ``safe_to_bootstrap: 0|1``).

    Returns None when it holds no uuid line."""
    values = dict(m.groups() for m in re.finditer(r"^\s*([a-z_]+):\s*(\S+)\s*$", text, re.M))
    if "uuid" not in values:
        return None
    try:
        seqno = int(values.get("seqno", "-1"))
    except ValueError:
        seqno = -1
    return Position(values["uuid"], seqno, values.get("safe_to_bootstrap") == "1")


def native_password_hash(password: str) -> str:
    """MariaDB's mysql_native_password hash (``*`` + upper-case hex SHA1(SHA1(password))), as
    ``mysql.user.authentication_string`` shows it: lets apply check a password without logging in."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


def _q(value: str) -> str:
    """A single-quoted SQL string literal."""
    return "'" + escape_string(value) + "'"


def _poll(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.2) -> T:
    """Call ``check`` until it returns a truthy value (returned); an exception from ``check``
    aborts at once.  Raises :class:`GaleraError` naming ``what`` after ``timeout`` s."""
    try:
        return Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(interval),
                        retry=retry_if_result(lambda r: not r))(check)
    except RetryError:
        raise GaleraError(f"{what}: not done after {timeout:.0f} s") from None


class GaleraOperator(BaseOperator):
    """The ``galera`` operator (kind "galera").

    Public methods: :meth:`render`, :meth:`apply`, :meth:`observe`, :meth:`recover`,
    :meth:`frontends`, :meth:`ensure_database`, :meth:`client_credentials`.

    Bundle options (all optional): ``cluster-name`` (default: the application name),
    ``innodb-buffer-pool-size`` (default "128M"), ``gcache-size`` (default "128M": how many
    write-sets a donor keeps for IST), ``clustercheck-min-free`` (:meth:`min_free_bytes`),
    ``max-connections`` (default 500), ``client-network``
    (CIDR the application users may connect from; default the /24 holding the units).
    """

    kind = KIND

    def __init__(self) -> None:
        self._logs: dict[str, str] = {}  # host name -> mariadbd log path inside the host

    # ================================================================ render (pure)
    def _check(self, app: AppContext) -> None:
        if len(app.units) < MIN_UNITS:
            raise InvalidInput(
                f"{app.name}: Galera needs at least {MIN_UNITS} units (got {len(app.units)}): with fewer, "
                f"losing one node leaves no majority and every write stops; set num_units: 3")
        hosts = [u.host.name for u in app.units]
        if len(set(hosts)) != len(hosts):
            raise InvalidInput(f"{app.name}: two Galera units on one host ({', '.join(hosts)}): "
                               f"they would share ports {MYSQL_PORT}/{GCOMM_PORT} and fail together")
        if app.tuning not in ("stackha", "stock"):
            raise InvalidInput(f"{app.name}: tuning {app.tuning!r}: use 'stackha' or 'stock'")

    def min_free_bytes(self, app: AppContext) -> int:
        """Bytes the datadir's file system must have free for clustercheck to answer 200: option
        ``clustercheck-min-free`` (a size such as 64M; 0 turns the check off), default 64 MiB with
        stackha's tuning and 0 (the classic clustercheck) with ``stock``.  A full datadir leaves
        the node Synced while InnoDB fails every write with 1114 "table is full": measured 19.7 s
        of failed writes through the VIP for a 20 s fault without the check (stackha verify
        --scenario galera-writer-disk-full).  Raises :class:`InvalidInput` for a bad size."""
        raw = str(self._option(app, "clustercheck-min-free", "64M" if app.tuning == "stackha" else "0"))
        if not _SIZE_RE.match(raw):
            raise InvalidInput(f"{app.name}: clustercheck-min-free {raw!r}: give a size such as 64M (0: no check)")
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(raw[-1], 1)
        return int(raw.rstrip("KMG")) * unit

    def _option(self, app: AppContext, name: str, default: Any) -> Any:
        return app.options.get(name, app.options.get(name.replace("-", "_"), default))

    def client_network(self, app: AppContext) -> ipaddress.IPv4Network:
        """The network application users may connect from: option ``client-network`` or the /24
        holding the first unit (a lab's whole subnet: HAProxy hosts and client hosts).
        Raises :class:`InvalidInput` for a bad CIDR."""
        raw = self._option(app, "client-network", None)
        try:
            if raw:
                return ipaddress.IPv4Network(str(raw), strict=False)
            return ipaddress.IPv4Network(f"{app.units[0].address}/24", strict=False)
        except ValueError as exc:
            raise InvalidInput(f"{app.name}: client-network {raw!r}: {exc}") from None

    def provider_options(self, app: AppContext, unit: Unit) -> list[str]:
        """``wsrep_provider_options`` of ``unit``: its listen addresses, the gcache size, and the
        :data:`STACKHA_TIMERS` when ``app.tuning == "stackha"`` (none for "stock")."""
        gcache = str(self._option(app, "gcache-size", "128M"))
        if not _SIZE_RE.match(gcache):
            raise InvalidInput(f"{app.name}: gcache-size {gcache!r}: give a size such as 128M")
        opts = [f"gmcast.listen_addr=tcp://{unit.address}:{GCOMM_PORT}",
                f"ist.recv_addr={unit.address}:{IST_PORT}",
                f"gcache.size={gcache}"]
        if app.tuning == "stackha":
            opts += [f"{k}={v}" for k, v in STACKHA_TIMERS.items()]
        return opts

    def render(self, app: AppContext) -> dict[str, dict[str, RenderedFile]]:
        """Per unit: ``my.cnf`` (mysql, 0600), ``root.cnf`` (root, 0600), ``clustercheck.cnf``
        (mysql, 0600) and ``clustercheck.sh`` (0755), all under /srv/galera.

        Pure apart from reading (first time: generating) secrets.  Raises :class:`InvalidInput`
        for fewer than 3 units, two units on one host, an unknown tuning or a bad option."""
        self._check(app)
        min_free = self.min_free_bytes(app)
        pool = str(self._option(app, "innodb-buffer-pool-size", "128M"))
        if not _SIZE_RE.match(pool):
            raise InvalidInput(f"{app.name}: innodb-buffer-pool-size {pool!r}: give a size such as 128M")
        try:
            max_conn = int(self._option(app, "max-connections", 500))
        except (TypeError, ValueError):
            raise InvalidInput(f"{app.name}: max-connections must be an integer") from None
        cluster = str(self._option(app, "cluster-name", app.name))
        if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", cluster):
            raise InvalidInput(f"{app.name}: cluster-name {cluster!r}: letters, digits, '_', '.', '-'")
        peers = [f"{u.address}:{GCOMM_PORT}" for u in app.units]
        paths = {"cnf": CNF, "data": DATA, "socket": SOCKET, "pid": PID, "tmp": TMP}
        out: dict[str, dict[str, RenderedFile]] = {}
        for u in app.units:
            my = render_template(
                "galera/my.cnf.j2", unit=u.name, app=app.name, paths=paths, address=str(u.address),
                port=MYSQL_PORT, max_connections=max_conn, innodb_buffer_pool_size=pool,
                provider=PROVIDER, cluster_name=cluster, peers=peers, node_name=u.slug,
                sst_method="rsync", sst_user=SST_USER, sst_password=app.secrets.get("sst-password"),
                sst_port=SST_PORT, tuning=app.tuning, provider_options=self.provider_options(app, u))
            root = render_template("galera/client.cnf.j2", unit=u.name, user="root",
                                   password=app.secrets.get("root-password"), socket=SOCKET,
                                   connect_timeout=CONNECT_TIMEOUT_S)
            check = render_template("galera/client.cnf.j2", unit=u.name, user=CHECK_USER,
                                    password=app.secrets.get("clustercheck-password"), socket=SOCKET,
                                    connect_timeout=CONNECT_TIMEOUT_S)
            script = render_template("galera/clustercheck.sh.j2", unit=u.name, node_name=u.slug,
                                     cnf=CHECK_CNF, check_port=CHECK_PORT, query_timeout=int(QUERY_TIMEOUT_S),
                                     datadir=DATA, min_free_bytes=min_free)
            out[u.name] = {
                CNF: RenderedFile(my, mode=0o600, owner="mysql"),
                ROOT_CNF: RenderedFile(root, mode=0o600),
                CHECK_CNF: RenderedFile(check, mode=0o600, owner="mysql"),
                CHECK_SCRIPT: RenderedFile(script, mode=0o755),
            }
        return out

    # ================================================================ interface for other apps
    def frontends(self, app: AppContext) -> list[Frontend]:
        """One TCP frontend on 3306, checked over HTTP on :data:`CHECK_PORT` (clustercheck), with
        a single writer (one active server, the others backup)."""
        return [Frontend(app=app.name, name="mysql", port=MYSQL_PORT, mode="tcp", check_port=CHECK_PORT,
                         check_path="/", single_writer=True,
                         servers=tuple((u.slug, str(u.address)) for u in app.units))]

    def client_credentials(self, app: AppContext) -> tuple[str, str]:
        """(user, password) of the generic application user (created by :meth:`apply`): all
        privileges on database :data:`CLIENT_DATABASE`, from :meth:`client_network`."""
        return CLIENT_USER, app.secrets.get("client-password")

    def client_address(self, app: AppContext) -> str:
        """The address database clients use: the VIP of the load balancer in front (one writer at
        a time).  Raises :class:`GaleraError` when the cluster has no VIP."""
        if app.vip is None:
            raise GaleraError(f"database {app.name} has no VIP: relate it to haproxy so clients reach one writer")
        return str(app.vip.ip)

    def ensure_database(self, app: AppContext, db_name: str, user: str) -> str:
        """Create database ``db_name`` and user ``user`` (all privileges on it, from
        :meth:`client_network`) if missing; returns the user's password (secret ``db-<user>``).

        Idempotent (nothing is written when both exist with that password).  Raises
        :class:`InvalidInput` for a bad name, :class:`GaleraError` when no unit is Synced."""
        for what, name in (("database", db_name), ("user", user)):
            if not _NAME_RE.match(name):
                raise InvalidInput(f"{app.name}: {what} name {name!r}: a letter then letters, digits, '_' (≤ 32)")
        password = app.secrets.get(f"db-{user}")
        unit = self._synced_unit(app)
        self._ensure_user(unit, user, self._host_pattern(app), password,
                          grants=[f"ALL PRIVILEGES ON `{db_name}`.*"], database=db_name)
        return password

    # ================================================================ apply
    def apply(self, app: AppContext) -> list[str]:
        """Install files, start or join every node, create users, start clustercheck.

        No node running and no data anywhere: bootstrap unit 0, the others join (SST).  No node
        running but data present: the cold start of :meth:`recover`.  Nodes down while others
        run: rejoin (IST when possible).  A running node whose my.cnf changed is restarted, one
        at a time.  Returns what changed; [] when everything already matched.  Raises
        :class:`InvalidInput`, :class:`GaleraBlocked`, :class:`GaleraError`, :class:`HostDown`."""
        self._check(app)
        files = self.render(app)
        changes: list[str] = []
        reconfigured: set[str] = set()
        for u in app.units:
            if u.host.ensure_volume(BASE, VOLUME_BYTES) and not u.host.exists(DATA):
                changes.append(f"{u.name}: {BASE} on a volume of its own ({VOLUME_BYTES >> 30} GiB)")
            changes += self._prepare(u)
            written = install_files(u.host, files[u.name])
            if written:
                changes.append(f"{u.name}: wrote {', '.join(written)}")
            if CNF in written:
                reconfigured.add(u.name)
        probes = self._probe_all(app)
        if not any(p.running for p in probes):
            reconfigured.clear()
            if not any(self._has_data(u) for u in app.units):
                changes += self._bootstrap_new(app, app.units[0])
            else:
                changes += self._restore_primary(app, probes)
            probes = self._probe_all(app)
        elif not any(p.primary for p in probes):
            changes += self._restore_primary(app, probes)
            probes = self._probe_all(app)
        down = [p.unit for p in probes if not p.running]
        changes += self._join(app, down)
        for name in sorted(reconfigured - {u.name for u in down}):
            changes += self._restart(app, app.unit(name))
        changes += self._ensure_users(app)
        changes += self._ensure_clustercheck(app)
        return changes

    # ================================================================ recover
    def recover(self, app: AppContext, *, bootstrap_unit: str | None = None) -> list[str]:
        """Bring every node whose host is on back into a Primary, Synced cluster.

        A Primary component exists: each stopped node restarts at its recovered position
        (rejoins by IST).  None exists: compare positions and bootstrap the most advanced node
        (module docstring, "Full cold start"); ``bootstrap_unit`` forces that choice.  Nodes on
        powered-off hosts are left alone when a Primary component exists.  Returns what it did
        ([] when nothing was needed).  Raises :class:`GaleraBlocked` (positions cannot be
        compared; the units show ``blocked``) or :class:`GaleraError`."""
        self._check(app)
        if bootstrap_unit is not None:
            app.unit(bootstrap_unit)  # KeyError for an unknown unit
        probes = self._probe_all(app)
        changes: list[str] = []
        if bootstrap_unit is not None and any(p.primary for p in probes):
            raise InvalidInput(f"{app.name}: a Primary component exists; bootstrap_unit is only for a cluster "
                               f"with none (it would split the cluster)")
        if not any(p.primary for p in probes):
            if not any(p.running for p in probes) and all(p.on for p in probes) \
                    and not any(self._has_data(p.unit) for p in probes):
                changes += self._bootstrap_new(app, app.units[0])
            else:
                changes += self._restore_primary(app, probes, bootstrap_unit)
            probes = self._probe_all(app)
        changes += self._join(app, [p.unit for p in probes if p.on and not p.running])
        changes += self._ensure_clustercheck(app)
        self._clear_blocked(app)
        return changes

    # ================================================================ observe
    def observe(self, app: AppContext) -> AppStatus:
        """Per unit: active only if mariadbd runs, is Synced in a Primary component and its
        clustercheck runs; facts ``wsrep_cluster_size``, ``wsrep_cluster_status``,
        ``wsrep_local_state_comment``, ``wsrep_last_committed`` (seqno), ``wsrep_ready``,
        ``clustercheck``.  Units are probed in parallel, each query bounded by
        :data:`QUERY_TIMEOUT_S` s (connect timeout 1 s): a killed node shows at once, a hung one
        within ≈ 2 s.  Never raises for a dead unit or host."""
        probes = self._probe_all(app)
        units = [self._unit_status(p) for p in probes]
        primary = [p for p in probes if p.primary]
        facts: dict[str, Any] = {
            "wsrep_cluster_size": max((int(p.status["wsrep_cluster_size"]) for p in primary), default=0),
            "primary_units": len(primary),
            "synced_units": sum(1 for p in probes if p.synced),
            "cluster_state_uuid": primary[0].status.get("wsrep_cluster_state_uuid") if primary else None,
            "tuning": app.tuning,
        }
        blocked = next((p.blocked for p in probes if p.blocked), "")
        if blocked:
            facts["blocked"] = blocked
        return AppStatus(app.name, units, facts)

    def _unit_status(self, p: Probe) -> UnitStatus:
        facts: dict[str, Any] = {"address": str(p.unit.address), "mariadbd": p.running,
                                 "clustercheck": p.clustercheck}
        if not p.on:
            return UnitStatus(p.unit.name, WorkloadState.ERROR, f"host {p.unit.host.name} is powered off", facts)
        if not p.running:
            if p.blocked:
                return UnitStatus(p.unit.name, WorkloadState.BLOCKED, p.blocked, facts)
            return UnitStatus(p.unit.name, WorkloadState.ERROR, f"mariadbd is not running{p.error}", facts)
        if p.status is None:
            return UnitStatus(p.unit.name, WorkloadState.WAITING,
                              f"mariadbd is running but does not answer: {p.error}", facts)
        s = p.status
        facts.update({
            "wsrep_cluster_size": int(s.get("wsrep_cluster_size") or 0),
            "wsrep_cluster_status": s.get("wsrep_cluster_status", ""),
            "wsrep_local_state_comment": s.get("wsrep_local_state_comment", ""),
            "wsrep_local_state": int(s.get("wsrep_local_state") or 0),
            "wsrep_last_committed": int(s.get("wsrep_last_committed") or -1),
            "wsrep_ready": s.get("wsrep_ready", ""),
            "wsrep_local_state_uuid": s.get("wsrep_local_state_uuid", ""),
        })
        comment, cstatus, size = facts["wsrep_local_state_comment"], facts["wsrep_cluster_status"], facts["wsrep_cluster_size"]
        if cstatus != "Primary":
            return UnitStatus(p.unit.name, WorkloadState.WAITING,
                              f"{comment} in a {cstatus or 'disconnected'} component (size {size}): no quorum", facts)
        if comment != "Synced":
            return UnitStatus(p.unit.name, WorkloadState.MAINTENANCE, f"{comment}, Primary (cluster size {size})", facts)
        if not p.clustercheck:
            return UnitStatus(p.unit.name, WorkloadState.ERROR,
                              f"Synced, but clustercheck (port {CHECK_PORT}) is not running", facts)
        return UnitStatus(p.unit.name, WorkloadState.ACTIVE, f"Synced, Primary (cluster size {size})", facts)

    # ================================================================ probing
    def _probe_all(self, app: AppContext) -> list[Probe]:
        with ThreadPoolExecutor(max_workers=len(app.units)) as pool:
            return list(pool.map(self._probe, app.units))

    def _probe(self, unit: Unit) -> Probe:
        host = unit.host
        try:
            if not host.is_on():
                return Probe(unit, on=False)
            p = Probe(unit, on=True, running=host.daemon(DAEMON) is not None,
                      clustercheck=host.daemon(CHECK_DAEMON) is not None)
            p.blocked = (host.read_file(BLOCKED_FILE) or b"").decode(errors="replace").strip()
            if p.running:
                p.status, p.error = self._query_status(host)
                if p.status is not None:
                    p.blocked = ""
            else:
                gra = host.read_file(GRASTATE)
                pos = parse_grastate(gra.decode(errors="replace")) if gra else None
                if pos is not None:
                    p.error = f" (grastate.dat: seqno {pos.seqno}, safe_to_bootstrap {int(pos.safe_to_bootstrap)})"
            return p
        except HostDown:
            return Probe(unit, on=False)
        except HostError as exc:
            return Probe(unit, on=True, error=f": {exc}")

    def _query_status(self, host: Host) -> tuple[dict[str, str] | None, str]:
        names = ", ".join(_q(v) for v in STATUS_VARS)
        try:
            r = host.run(["mariadb", f"--defaults-file={ROOT_CNF}", "-N", "-B", "-e",
                          f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})"], timeout=QUERY_TIMEOUT_S)
        except CommandTimeout:
            return None, f"no answer in {QUERY_TIMEOUT_S:.0f} s"
        if not r.ok:
            return None, (r.stderr.strip().splitlines() or [f"exit {r.rc}"])[-1]
        status = {}
        for line in r.stdout.splitlines():
            name, _, value = line.partition("\t")
            status[name] = value
        return status, ""

    # ================================================================ node operations
    def _prepare(self, unit: Unit) -> list[str]:
        """Create the data, tmp and run directories (owned by mysql); returns what was created."""
        host = unit.host
        made = [d for d in (DATA, TMP) if not host.exists(d)]
        host.run(["install", "-d", "-o", "mysql", "-g", "mysql", "-m", "0750", DATA, TMP], check=True)
        host.run(["install", "-d", "-o", "mysql", "-g", "mysql", "-m", "0755", RUN], check=True)
        return [f"{unit.name}: created {d}" for d in made]

    def _has_data(self, unit: Unit) -> bool:
        """True if the unit's datadir was ever initialised (grastate.dat or InnoDB files)."""
        return unit.host.exists(GRASTATE) or unit.host.exists(f"{DATA}/ibdata1")

    def _log_tail(self, unit: Unit, n: int = 6) -> str:
        path = self._logs.get(unit.host.name)
        raw = unit.host.read_file(path) if path else None
        if not raw:
            return "(no log)"
        lines = [ln for ln in raw.decode(errors="replace").splitlines() if "[ERROR]" in ln or "WSREP_SST: [ERROR]" in ln]
        return " | ".join(lines[-n:]) or " | ".join(raw.decode(errors="replace").splitlines()[-n:])

    def _start(self, unit: Unit, *, new_cluster: bool = False, position: Position | None = None) -> None:
        host = unit.host
        self._prepare(unit)
        argv = ["mariadbd", f"--defaults-file={CNF}"]
        if new_cluster:
            argv.append("--wsrep-new-cluster")
        if position is not None and position.readable:
            argv.append(f"--wsrep-start-position={position}")
        d = host.spawn(DAEMON, argv, user="mysql")
        self._logs[host.name] = d.log_path

    def _wait_synced(self, unit: Unit, timeout: float, what: str) -> dict[str, str]:
        def check() -> dict[str, str] | None:
            if unit.host.daemon(DAEMON) is None:
                raise GaleraError(f"{unit.name}: mariadbd exited while {what}: {self._log_tail(unit)}")
            status, _ = self._query_status(unit.host)
            if status and status.get("wsrep_local_state_comment") == "Synced" \
                    and status.get("wsrep_cluster_status") == "Primary":
                return status
            return None
        return _poll(check, timeout=timeout, what=f"{unit.name}: {what}", interval=0.1)

    def _bootstrap_new(self, app: AppContext, unit: Unit) -> list[str]:
        """A brand-new cluster: initialise unit's datadir and start it with --wsrep-new-cluster."""
        t0 = time.monotonic()
        host = unit.host
        self._prepare(unit)
        r = host.run(["mariadb-install-db", f"--defaults-file={CNF}", "--auth-root-authentication-method=socket",
                      "--skip-test-db"], user="mysql", timeout=180)
        if not r.ok:
            raise GaleraError(f"{unit.name}: mariadb-install-db failed: {(r.stderr or r.stdout).strip()[-400:]}")
        self._start(unit, new_cluster=True)
        self._wait_synced(unit, BOOTSTRAP_TIMEOUT_S, "bootstrapping a new cluster")
        return [f"{unit.name}: bootstrapped a new cluster ({time.monotonic() - t0:.1f} s)"]

    def _recover_position(self, unit: Unit) -> Position | None:
        """The unit's committed position (mariadbd must be stopped): grastate.dat when it holds a
        seqno, else ``mariadbd --wsrep-recover`` (reads InnoDB).  None for an empty datadir.
        Raises :class:`GaleraError` when recovery prints no position."""
        host = unit.host
        raw = host.read_file(GRASTATE)
        gra = parse_grastate(raw.decode(errors="replace")) if raw else None
        if gra is None and not host.exists(f"{DATA}/ibdata1"):
            return None
        if gra is not None and gra.readable:
            return gra
        self._prepare(unit)
        r = host.run(["mariadbd", f"--defaults-file={CNF}", "--wsrep-recover", "--skip-networking",
                      f"--pid-file={TMP}/wsrep-recover.pid"], user="mysql", timeout=180)
        found = _POSITION_RE.findall(r.stderr + r.stdout)
        if not found:
            tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
            raise GaleraError(f"{unit.name}: `mariadbd --wsrep-recover` printed no position (exit {r.rc}): {tail}")
        uuid, seqno = found[-1]
        return Position(uuid, int(seqno), gra.safe_to_bootstrap if gra else False, source="wsrep-recover")

    def _join(self, app: AppContext, units: list[Unit]) -> list[str]:
        """Start stopped nodes at their recovered positions (IST when a donor's gcache has the
        missing write-sets, else SST), then wait until each is Synced.

        Each node is started once the previous one is a member of the Primary component (not
        yet Synced): two nodes entering the group at the same moment made the view merge wait
        ≈ 5 s in the lab, one after the other costs ≈ 1 s each."""
        if not units:
            return []
        started: list[tuple[Unit, Position | None, float]] = []
        for i, u in enumerate(units):
            pos = self._recover_position(u)
            u.host.run(["rm", "-f", GVWSTATE], check=True)
            self._start(u, position=pos)
            started.append((u, pos, time.monotonic()))
            if i + 1 < len(units):
                self._wait_member(app, u)
        changes = []
        for u, pos, t0 in started:
            status = self._wait_synced(u, JOIN_TIMEOUT_S, "joining the cluster")
            how = self._transfer_kind(u)
            at = f" from {pos.source} position {pos.seqno}" if pos and pos.readable else ""
            changes.append(f"{u.name}: joined by {how}{at} at seqno {status.get('wsrep_last_committed')} "
                           f"({time.monotonic() - t0:.1f} s)")
        return changes

    def _wait_member(self, app: AppContext, unit: Unit) -> None:
        """Wait until ``unit``'s address is in wsrep_incoming_addresses of a Primary node."""
        others = [u for u in app.units if u.name != unit.name]
        want = f"{unit.address}:{MYSQL_PORT}"

        def check() -> bool:
            if unit.host.daemon(DAEMON) is None:
                raise GaleraError(f"{unit.name}: mariadbd exited while joining: {self._log_tail(unit)}")
            for o in others:
                try:
                    if not o.host.is_on() or o.host.daemon(DAEMON) is None:
                        continue
                    r = o.host.run(["mariadb", f"--defaults-file={ROOT_CNF}", "-N", "-B", "-e",
                                    "SHOW GLOBAL STATUS WHERE Variable_name IN "
                                    "('wsrep_cluster_status', 'wsrep_incoming_addresses')"], timeout=QUERY_TIMEOUT_S)
                except HostError:
                    continue
                status = dict(line.partition("\t")[::2] for line in r.stdout.splitlines()) if r.ok else {}
                if status.get("wsrep_cluster_status") == "Primary" and \
                        want in status.get("wsrep_incoming_addresses", "").split(","):
                    return True
            return False
        _poll(check, timeout=JOIN_TIMEOUT_S, what=f"{unit.name}: entering the Primary component", interval=0.1)

    def _transfer_kind(self, unit: Unit) -> str:
        """"IST" or "SST": how the node's current run got its state, from the lines logged since
        its last "Starting MariaDB" (the rsync script logs "rsync IST completed on joiner" when
        the donor sent only write-sets, "rsync SST completed on joiner" for a full copy)."""
        path = self._logs.get(unit.host.name)
        raw = unit.host.read_file(path) if path else None
        text = raw.decode(errors="replace") if raw else ""
        text = text[text.rfind("Starting MariaDB"):]
        if "SST completed on joiner" in text:
            return "SST"
        if "IST completed on joiner" in text or "IST received" in text:
            return "IST"
        return "state transfer"

    def _restart(self, app: AppContext, unit: Unit) -> list[str]:
        """Rolling restart of one running node (its my.cnf changed): only while every other node
        is Synced, so the cluster keeps its majority."""
        others = [p for p in self._probe_all(app) if p.unit.name != unit.name]
        if not all(p.synced for p in others):
            raise GaleraError(f"{unit.name}: my.cnf changed but not every other node is Synced; "
                              f"not restarting it now (run apply again once they are)")
        unit.host.stop(DAEMON, timeout=STOP_TIMEOUT_S)
        return [f"{unit.name}: restarted for the new my.cnf"] + self._join(app, [unit])

    def _restore_primary(self, app: AppContext, probes: list[Probe],
                         bootstrap_unit: str | None = None) -> list[str]:
        """No Primary component: compare every unit's position and bootstrap the most advanced
        (module docstring).  Raises :class:`GaleraBlocked` instead of guessing."""
        positions: dict[str, Position] = {}
        problems: list[str] = []
        empty: list[str] = []
        for p in probes:
            u = p.unit
            if not p.on:
                problems.append(f"{u.name}: host {u.host.name} is powered off, its position cannot be read")
            elif p.running:
                if p.status is None:
                    problems.append(f"{u.name}: mariadbd is running but does not answer ({p.error.strip(': ')})")
                else:
                    positions[u.name] = Position(p.status.get("wsrep_local_state_uuid", ZERO_UUID),
                                                 int(p.status.get("wsrep_last_committed") or -1),
                                                 source="running non-Primary node")
            else:
                try:
                    pos = self._recover_position(u)
                except (GaleraError, HostError) as exc:
                    problems.append(str(exc))
                    continue
                if pos is None:
                    empty.append(u.name)
                elif not pos.readable:
                    problems.append(f"{u.name}: position unreadable ({pos.source} gives {pos})")
                else:
                    positions[u.name] = pos
        uuids = {pos.uuid for pos in positions.values()}
        if len(uuids) > 1:
            problems.append("units hold different cluster UUIDs: "
                            + ", ".join(f"{n} {pos}" for n, pos in sorted(positions.items())))
        if not positions:
            problems.append("no unit has a readable position"
                            + (f" ({', '.join(empty)} have no data)" if empty else ""))
        if bootstrap_unit is not None:
            if bootstrap_unit not in positions:
                raise GaleraBlocked(f"bootstrap_unit {bootstrap_unit} has no readable position"
                                    + (f"; {'; '.join(problems)}" if problems else ""))
            chosen = bootstrap_unit
        elif problems:
            reason = "; ".join(problems) + (
                " — not bootstrapping: a wrong choice discards committed transactions. Bring the unit back "
                "(power the host on) and run recover again, or force a unit with recover(bootstrap_unit=...)")
            self._set_blocked(app, reason)
            raise GaleraBlocked(reason)
        else:
            running = {p.unit.name for p in probes if p.running}
            chosen = max(positions, key=lambda n: (positions[n].seqno, n in running,
                                                   positions[n].safe_to_bootstrap, -app.unit(n).number))
        pos = positions[chosen]
        unit = app.unit(chosen)
        detail = ", ".join(f"{n} {positions[n].seqno}" for n in sorted(positions))
        why = f"highest seqno ({detail})" if bootstrap_unit is None else f"forced by operator ({detail})"
        t0 = time.monotonic()
        chosen_probe = next(p for p in probes if p.unit.name == chosen)
        if chosen_probe.running:
            self._sql(unit, "SET GLOBAL wsrep_provider_options='pc.bootstrap=YES'")
            self._wait_synced(unit, BOOTSTRAP_TIMEOUT_S, "promoting to Primary")
            return [f"{chosen}: promoted its non-Primary component to Primary at seqno {pos.seqno}: {why} "
                    f"({time.monotonic() - t0:.1f} s)"]
        changes = []
        for p in probes:
            if p.running:
                p.unit.host.stop(DAEMON, timeout=STOP_TIMEOUT_S)
                changes.append(f"{p.unit.name}: stopped (non-Primary) to rejoin the bootstrapped node")
        self._mark_safe_to_bootstrap(unit, pos)
        unit.host.run(["rm", "-f", GVWSTATE], check=True)
        self._start(unit, new_cluster=True, position=pos)
        self._wait_synced(unit, BOOTSTRAP_TIMEOUT_S, "bootstrapping from its recovered position")
        return changes + [f"{chosen}: bootstrapped the cluster at {pos}: {why} ({time.monotonic() - t0:.1f} s)"]

    def _mark_safe_to_bootstrap(self, unit: Unit, pos: Position) -> None:
        """Write grastate.dat with ``safe_to_bootstrap: 1`` (uuid kept; seqno as recovered)."""
        text = ("# GALERA saved state\nversion: 2.1\n"
                f"uuid:    {pos.uuid}\nseqno:   {pos.seqno}\nsafe_to_bootstrap: 1\n")
        unit.host.write_file(GRASTATE, text, mode=0o660, owner="mysql")

    def _set_blocked(self, app: AppContext, reason: str) -> None:
        for u in app.units:
            try:
                if u.host.is_on():
                    u.host.write_file(BLOCKED_FILE, reason + "\n", mode=0o644)
            except HostError:
                pass

    def _clear_blocked(self, app: AppContext) -> None:
        for u in app.units:
            try:
                if u.host.is_on() and u.host.exists(BLOCKED_FILE):
                    u.host.run(["rm", "-f", BLOCKED_FILE], check=True)
            except HostError:
                pass

    def _ensure_clustercheck(self, app: AppContext) -> list[str]:
        changes = []
        for u in app.units:
            if not u.host.is_on() or u.host.daemon(CHECK_DAEMON) is not None:
                continue
            u.host.spawn(CHECK_DAEMON, ["socat", f"TCP-LISTEN:{CHECK_PORT},bind={u.address},reuseaddr,fork",
                                        f"EXEC:{CHECK_SCRIPT}"], user="mysql")
            changes.append(f"{u.name}: started clustercheck on {u.address}:{CHECK_PORT}")
        return changes

    # ================================================================ SQL and users
    def _synced_unit(self, app: AppContext) -> Unit:
        for p in self._probe_all(app):
            if p.synced:
                return p.unit
        raise GaleraError(f"{app.name}: no unit is Synced in a Primary component; run recover first")

    def _sql(self, unit: Unit, sql: str, *, secrets: tuple[str, ...] = (), timeout: float = 60.0) -> str:
        """Run ``sql`` as root on ``unit`` (statements on stdin; tab-separated rows returned).
        Raises :class:`GaleraError` with the client's error, ``secrets`` masked."""
        r = unit.host.run(["mariadb", f"--defaults-file={ROOT_CNF}", "-N", "-B"], input=sql, timeout=timeout)
        if not r.ok:
            err = (r.stderr or r.stdout).strip()
            for s in secrets:
                err = err.replace(s, "***")
            raise GaleraError(f"{unit.name}: SQL failed: {err[-400:]}")
        return r.stdout

    def _host_pattern(self, app: AppContext) -> str:
        net = self.client_network(app)
        return f"{net.network_address}/{net.netmask}"

    def _ensure_user(self, unit: Unit, user: str, host: str, password: str, *, grants: list[str],
                     database: str | None = None, root_chain: bool = False) -> list[str]:
        """Create or re-password ``user@host`` and grant ``grants`` (each ``<privileges> ON <what>``),
        creating ``database`` first; returns what changed."""
        changes = []
        account = f"{_q(user)}@{_q(host)}"
        rows = self._sql(unit, f"SELECT authentication_string FROM mysql.user WHERE User={_q(user)} AND Host={_q(host)}")
        current = rows.strip().splitlines()
        stmts = []
        if database:
            exists = self._sql(unit, f"SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME={_q(database)}")
            if not exists.strip():
                stmts.append(f"CREATE DATABASE IF NOT EXISTS `{database}`")
                changes.append(f"{unit.name}: created database {database}")
        auth = (f"IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD({_q(password)})" if root_chain
                else f"IDENTIFIED BY {_q(password)}")
        if not current:
            stmts.append(f"CREATE USER {account} {auth}")
            changes.append(f"{unit.name}: created user {user}@{host}")
        elif current[0].strip() != native_password_hash(password):
            stmts.append(f"ALTER USER {account} {auth}")
            changes.append(f"{unit.name}: set the password of {user}@{host}")
        if stmts or changes:
            stmts += [f"GRANT {g} TO {account}" for g in grants]
        if stmts:
            self._sql(unit, ";\n".join(stmts) + ";\n", secrets=(password,))
        return changes

    def _ensure_users(self, app: AppContext) -> list[str]:
        unit = self._synced_unit(app)
        changes = []
        changes += self._ensure_user(unit, "root", "localhost", app.secrets.get("root-password"),
                                     grants=[], root_chain=True)
        changes += self._ensure_user(unit, SST_USER, "localhost", app.secrets.get("sst-password"),
                                     grants=["RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.*"])
        changes += self._ensure_user(unit, CHECK_USER, "localhost", app.secrets.get("clustercheck-password"),
                                     grants=["USAGE ON *.*"])
        changes += self._ensure_user(unit, CLIENT_USER, self._host_pattern(app), app.secrets.get("client-password"),
                                     grants=[f"ALL PRIVILEGES ON `{CLIENT_DATABASE}`.*"], database=CLIENT_DATABASE)
        return changes

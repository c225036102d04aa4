"""RabbitMQ 3.10 (Erlang 25) as a cluster of ≥ 3 nodes, one per unit.

How a node runs (LAB-NOTES "RabbitMQ 3.10 / Erlang 25"): ``/usr/lib/rabbitmq/bin/rabbitmq-server``
is started directly (the ``/usr/sbin`` wrapper would switch paths), as user ``rabbitmq``, with
every path under :data:`BASE` (``/srv/rabbitmq``, the host's disk) passed in the environment
(:func:`node_env`): long node names ``rabbit@<lab address>`` (no /etc/hosts needed), HOME holding
the Erlang cookie (a generated secret, mode 0400).  ``RABBITMQ_ALLOW_INPUT`` makes the script
``exec`` the VM, so the tracked daemon PID *is* the Erlang VM: a kill -9 of daemon ``rabbitmq``
kills the node, and TERM stops it cleanly.  epmd is a daemon of its own (``rabbitmq-epmd``); the
VM runs with ``-start_epmd false`` and the CLI is never called while that epmd is down (the CLI
would start an ``epmd -daemon`` of its own), so no untracked epmd is left behind;
:meth:`RabbitMQOperator.stop_unit` stops both by PID, and a power-off kills them with the host.

Cluster formation: every node boots alone, then each node that is not yet a member joins the
seed (stop_app, reset, join_cluster rabbit@<seed>, start_app) — the procedure of the clustering
guide.  Network splits: ``cluster_partition_handling = pause_minority``.

Quorum queues by default: RabbitMQ 3.10 cannot set a queue's *type* by policy (``x-queue-type``
is fixed at declaration) and its config schema has no ``default_queue_type`` key, but it has the
per-vhost *default queue type* metadata (``rabbitmqctl add_vhost --default-queue-type quorum``,
virtual_host_metadata feature flag).  Checked with the real 3.10.8 binary: in such a vhost a
*durable* queue declared without ``x-queue-type`` becomes a quorum queue, while non-durable,
exclusive and auto-delete queues stay classic (they cannot be quorum queues; oslo.messaging's
reply and fanout queues are of that kind).  3.10 has no command to change the metadata of an
existing vhost, so stackha re-creates the default vhost ``/`` with that metadata while it is
still empty (first deploy), and creates every vhost :meth:`ensure_user` needs the same way.
OpenStack services should still set ``[oslo_messaging_rabbit] rabbit_quorum_queue = true`` so
their queues are durable (oslo's default declares non-durable queues, which stay classic).

Clients get every broker in their transport URL (:meth:`RabbitMQOperator.transport_url`), as the
OpenStack HA guide recommends, instead of a VIP.

Known faults of RabbitMQ 3.10.8 / Erlang 25 / ra 2.2.0 that :meth:`RabbitMQOperator.recover`
handles (all measured in the lab):

- after a partition heals, the node paused by pause_minority sometimes hangs while restarting
  (≈ 1 run in 8); recover restarts it (:meth:`RabbitMQOperator._stuck`);
- after every node died at once, a quorum queue may have no leader, and a queue declared less
  than about a second before the power loss comes back *empty* (its Ra registration was still
  in a DETS buffer): recover triggers an election and reports the loss as "DATA LOST"
  (:meth:`RabbitMQOperator._leaderless`).  Queues that existed before are recovered intact.
"""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import quote, unquote, urlsplit

from stackha.errors import InvalidInput, UserError
from stackha.hosts.base import CommandResult, CommandTimeout, HostDown, HostError
from stackha.polling import WaitTimeout, wait_until
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

VERSION = "3.10"
BASE = "/srv/rabbitmq"
HOME = f"{BASE}/home"
COOKIE = f"{HOME}/.erlang.cookie"
CONFIG_FILE = f"{BASE}/rabbitmq.conf"
CONF_ENV_FILE = f"{BASE}/rabbitmq-env.conf"
PLUGINS_FILE = f"{BASE}/enabled_plugins"
PID_FILE = f"{BASE}/rabbitmq.pid"
MNESIA_BASE = f"{BASE}/mnesia"
LOG_BASE = f"{BASE}/log"
CTL_WRAPPER = f"{BASE}/rabbitmqctl"
BIN_DIR = "/usr/lib/rabbitmq/bin"
SERVER = f"{BIN_DIR}/rabbitmq-server"
CTL = f"{BIN_DIR}/rabbitmqctl"
DIAGNOSTICS = f"{BIN_DIR}/rabbitmq-diagnostics"
QUEUES = f"{BIN_DIR}/rabbitmq-queues"
EPMD = "/usr/bin/epmd"
USER = "rabbitmq"
AMQP_PORT = 5672
DIST_PORT = 25672
EPMD_PORT = 4369
DAEMON = "rabbitmq"
EPMD_DAEMON = "rabbitmq-epmd"
MIN_UNITS = 3
CLIENT_USER = "stackha-client"
COOKIE_SECRET = "erlang-cookie"

#: Seconds.  Boot of one node measured ≈ 6 s alone; a cold start waits for its peers.
STARTUP_TIMEOUT_S = 120.0
#: Seconds :meth:`RabbitMQOperator.recover` waits for restarted nodes while some hosts are off:
#: one mnesia table-loading retry period (30 s) plus margin; nodes that need an absent peer
#: are still waiting after it.
PEER_WAIT_S = 45.0
#: Seconds a node resuming after a partition gets to start its rabbit application before
#: :meth:`RabbitMQOperator.recover` calls it stuck and restarts it (measured resume: 3–8 s).
STUCK_GRACE_S = 15.0
#: Seconds quorum queues get to elect a leader after a restart before recover triggers an
#: election (a normal election takes well under a second).
QQ_LEADER_GRACE_S = 10.0
#: Seconds the CLI may take in :meth:`RabbitMQOperator.observe` before the node counts as unresponsive.
OBSERVE_TIMEOUT_S = 4.0


@dataclass(frozen=True)
class Tuning:
    """Timer values for one ``app.tuning``; None keeps RabbitMQ's default.

    ``net_ticktime`` (s): Erlang distribution tick time — how long a silent peer (power loss, cut
    link) takes to be declared down; stock 60 s.  ``heartbeat`` (s): AMQP heartbeat the broker
    proposes; stock 60 s.
    """

    net_ticktime: int | None
    heartbeat: int | None


#: "stackha": 10 s tick time (silent peer down in 7.5–12.5 s instead of 45–75 s, so
#: pause_minority and the cluster view react fast; the net tick guide warns that much lower
#: values cause false positives under load) and 10 s AMQP heartbeats (the heartbeat guide's
#: 5–20 s sweet spot).  A killed process needs neither: its peers see the TCP close at once.
#: "stock": the package defaults, the benchmark baseline.
TUNINGS = {
    "stackha": Tuning(net_ticktime=10, heartbeat=10),
    "stock": Tuning(net_ticktime=None, heartbeat=None),
}


class RabbitMQError(UserError):
    """A RabbitMQ operation failed (a node would not start, a join failed); the message says which."""


def node_name(unit: Unit) -> str:
    """The Erlang node name of a unit: ``rabbit@<lab address>`` (long names)."""
    return f"rabbit@{unit.address}"


def node_env(unit: Unit) -> dict[str, str]:
    """The environment for ``rabbitmq-server`` and the CLI of ``unit`` (LAB-NOTES): node name,
    listener address and every path under :data:`BASE`, HOME holding the cookie."""
    addr = str(unit.address)
    return {
        "RABBITMQ_USE_LONGNAME": "true",
        "RABBITMQ_NODENAME": node_name(unit),
        "RABBITMQ_NODE_IP_ADDRESS": addr,
        "RABBITMQ_NODE_PORT": str(AMQP_PORT),
        "RABBITMQ_DIST_PORT": str(DIST_PORT),
        "RABBITMQ_MNESIA_BASE": MNESIA_BASE,
        "RABBITMQ_LOG_BASE": LOG_BASE,
        "RABBITMQ_CONFIG_FILE": CONFIG_FILE,
        "RABBITMQ_CONF_ENV_FILE": CONF_ENV_FILE,
        "RABBITMQ_ENABLED_PLUGINS_FILE": PLUGINS_FILE,
        "RABBITMQ_PID_FILE": PID_FILE,
        "HOME": HOME,
    }


def transport_url(brokers: Sequence[tuple[str, int]], user: str, password: str, vhost: str = "/") -> str:
    """An oslo.messaging transport URL listing every broker:
    ``rabbit://u:p@a1:5672,u:p@a2:5672,u:p@a3:5672/vhost``.  The default vhost ``/`` is written
    as an empty path (oslo's convention); other vhosts are percent-encoded."""
    if not brokers:
        raise InvalidInput("transport_url needs at least one broker")
    cred = f"{quote(user, safe='')}:{quote(password, safe='')}"
    hosts = ",".join(f"{cred}@{addr}:{port}" for addr, port in brokers)
    path = "" if vhost == "/" else quote(vhost, safe="")
    return f"rabbit://{hosts}/{path}"


@dataclass(frozen=True)
class Broker:
    """One broker of a transport URL (see :func:`parse_transport_url`)."""

    user: str
    password: str
    host: str
    port: int
    vhost: str

    def amqp_url(self) -> str:
        """The same broker as a pika/AMQP URL (``amqp://u:p@host:port/%2F``)."""
        return (f"amqp://{quote(self.user, safe='')}:{quote(self.password, safe='')}@{self.host}:{self.port}/"
                f"{quote(self.vhost, safe='')}")


def parse_transport_url(url: str) -> list[Broker]:
    """The brokers of an oslo.messaging ``rabbit://`` URL, in order (an empty path is vhost "/").
    Raises :class:`InvalidInput` for another scheme or a broker without user or host."""
    parts = urlsplit(url)
    if parts.scheme not in ("rabbit", "amqp"):
        raise InvalidInput(f"not a rabbit:// transport URL: scheme {parts.scheme!r}")
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    out = []
    for piece in parts.netloc.split(","):
        p = urlsplit("//" + piece)
        if not p.username or not p.hostname:
            raise InvalidInput(f"transport URL broker {piece.split('@')[-1]!r} lacks a user or host")
        out.append(Broker(unquote(p.username), unquote(p.password or ""), p.hostname, p.port or AMQP_PORT, vhost))
    return out


T = TypeVar("T")


def _parallel(items: Sequence[Any], fn: Callable[[Any], T]) -> list[T]:
    """``fn`` over ``items`` in threads, results in order (exceptions re-raised)."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(fn, items))


class RabbitMQOperator(BaseOperator):
    """Operator of kind ``rabbitmq`` (see the module docstring for how nodes run and cluster).

    Public methods: :meth:`render`, :meth:`apply`, :meth:`observe`, :meth:`recover`,
    :meth:`stop_unit`, :meth:`stop`, :meth:`ensure_user`, :meth:`transport_url`,
    :meth:`client_credentials`, :meth:`frontends`.
    """

    kind = "rabbitmq"

    # ------------------------------------------------------------------ pure
    def check(self, app: AppContext) -> None:
        """Raise :class:`InvalidInput` unless ``app`` has ≥ 3 units (pause_minority and quorum
        queues need a majority that survives one loss) and a known tuning."""
        if len(app.units) < MIN_UNITS:
            raise InvalidInput(
                f"{app.name}: RabbitMQ needs at least {MIN_UNITS} units (has {len(app.units)}): with fewer, "
                "losing one node loses the majority that pause_minority and quorum queues need")
        if app.tuning not in TUNINGS:
            raise InvalidInput(f"{app.name}: tuning {app.tuning!r} unknown; use one of {', '.join(TUNINGS)}")

    def render(self, app: AppContext) -> dict[str, dict[str, RenderedFile]]:
        """Files per unit: ``rabbitmq.conf``, ``rabbitmq-env.conf``, ``enabled_plugins``, the
        Erlang cookie (secret ``erlang-cookie``, 0400 owned by rabbitmq) and a ``rabbitmqctl``
        wrapper with the node's environment, all under :data:`BASE`.  Raises
        :class:`InvalidInput` (see :meth:`check`)."""
        self.check(app)
        tuning = TUNINGS[app.tuning]
        cookie = app.secrets.get(COOKIE_SECRET, length=32)
        out: dict[str, dict[str, RenderedFile]] = {}
        for unit in app.units:
            values = dict(
                version=VERSION, app=app.name, node=node_name(unit), address=str(unit.address),
                address_tuple=",".join(str(unit.address).split(".")), amqp_port=AMQP_PORT,
                dist_port=DIST_PORT, config_file=CONFIG_FILE,
                net_ticktime=tuning.net_ticktime, heartbeat=tuning.heartbeat,
            )
            out[unit.name] = {
                CONFIG_FILE: RenderedFile(render_template("rabbitmq/rabbitmq.conf.j2", **values), 0o644),
                CONF_ENV_FILE: RenderedFile(render_template("rabbitmq/rabbitmq-env.conf.j2", **values), 0o644),
                PLUGINS_FILE: RenderedFile(render_template("rabbitmq/enabled_plugins.j2"), 0o644, owner=USER),
                COOKIE: RenderedFile(cookie, 0o400, owner=USER),
                CTL_WRAPPER: RenderedFile(render_template(
                    "rabbitmq/rabbitmqctl.j2", node=node_name(unit), wrapper=CTL_WRAPPER, env=node_env(unit),
                    user=USER, bin_dir=BIN_DIR, epmd=EPMD), 0o755),
            }
        return out

    def frontends(self, app: AppContext) -> list[Frontend]:
        """None: clients list every broker in their transport URL (OpenStack HA guide), no VIP."""
        return []

    def client_credentials(self, app: AppContext) -> tuple[str, str]:
        """``(user, password)`` of the generic client user (``stackha-client``, all permissions on
        vhost ``/``) that :meth:`apply` creates for probes and tests.  No I/O."""
        return CLIENT_USER, app.secrets.get(f"user-{CLIENT_USER}")

    def transport_url(self, app: AppContext, user: str, password: str, vhost: str = "/") -> str:
        """``rabbit://u:p@a1:5672,u:p@a2:5672,u:p@a3:5672/vhost`` over every unit (unit order)."""
        return transport_url([(str(u.address), AMQP_PORT) for u in app.units], user, password, vhost)

    # ------------------------------------------------------------------ CLI
    def _ctl(self, unit: Unit, *args: str, timeout: float = 30.0, input: str | None = None,
             tool: str = CTL) -> CommandResult:
        """Run a CLI tool against ``unit``'s node, as user rabbitmq, with the node's environment.
        Refused (:class:`RabbitMQError`) while the host's epmd is not running: the CLI would
        start an untracked ``epmd -daemon`` that nothing could stop by PID."""
        if unit.host.daemon(EPMD_DAEMON) is None:
            raise RabbitMQError(f"{unit.name}: epmd is not running; not calling {tool.rsplit('/', 1)[-1]} {args[0]}")
        return unit.host.run([tool, *args], env=node_env(unit), user=USER, timeout=timeout, input=input)

    def _ctl_ok(self, unit: Unit, *args: str, timeout: float = 60.0, input: str | None = None) -> CommandResult:
        r = self._ctl(unit, *args, timeout=timeout, input=input)
        if not r.ok:
            tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
            raise RabbitMQError(f"{unit.name}: rabbitmqctl {args[0]} failed (rc {r.rc}): {tail}")
        return r

    def _json(self, unit: Unit, *args: str, timeout: float = 30.0) -> Any:
        r = self._ctl_ok(unit, *args, "--formatter", "json", timeout=timeout)
        return json.loads(r.stdout or "null")

    def _cluster_status(self, unit: Unit, timeout: float = OBSERVE_TIMEOUT_S) -> dict | None:
        """``rabbitmqctl cluster_status`` as a dict, or None if the node does not answer."""
        return self._cluster_status_why(unit, timeout)[0]

    def _cluster_status_why(self, unit: Unit, timeout: float = OBSERVE_TIMEOUT_S) -> tuple[dict | None, str]:
        """``(cluster_status dict, "")``, or ``(None, why)`` when the node does not answer: why is
        "app-stopped" (VM up, rabbit application stopped: paused by pause_minority or booting),
        "timeout", or the CLI's error."""
        try:
            r = self._ctl(unit, "cluster_status", "--formatter", "json", "-t", str(int(timeout)),
                          timeout=timeout + 3)
        except CommandTimeout:
            return None, "timeout"
        except (HostDown, RabbitMQError) as exc:
            return None, str(exc)
        if not r.ok:
            if "requires the 'rabbit' app to be running" in r.stderr:
                return None, "app-stopped"
            return None, " ".join(r.stderr.strip().splitlines()[:2]) or f"rc {r.rc}"
        try:
            return json.loads(r.stdout), ""
        except ValueError:
            return None, "unreadable cluster_status output"

    # ------------------------------------------------------------------ daemons
    def _start_epmd(self, unit: Unit) -> bool:
        """Start this host's epmd (daemon ``rabbitmq-epmd``, lab address + loopback) unless it
        runs, and wait until it answers (≤ 5 s).  True if it was started."""
        host = unit.host
        if host.daemon(EPMD_DAEMON) is not None:
            return False
        host.spawn(EPMD_DAEMON, [EPMD, "-address", str(unit.address), "-port", str(EPMD_PORT)], user=USER)
        def answering() -> bool:
            if host.run([EPMD, "-names"]).ok:
                return True
            if host.daemon(EPMD_DAEMON) is None:
                raise RabbitMQError(f"{unit.name}: epmd exited: {self._log_tail(unit, daemon=EPMD_DAEMON)}")
            return False

        wait_until(answering, 5, 0.05, error=lambda _: RabbitMQError(
            f"{unit.name}: epmd did not start in 5 s: {self._log_tail(unit, daemon=EPMD_DAEMON)}"))
        return True

    def _start(self, unit: Unit) -> bool:
        """Start epmd and the node on ``unit`` if they are not running; True if anything started."""
        started = self._start_epmd(unit)
        if unit.host.daemon(DAEMON) is None:
            unit.host.spawn(DAEMON, [SERVER], env={**node_env(unit), "RABBITMQ_ALLOW_INPUT": "true",
                                                   "ERL_CRASH_DUMP": f"{LOG_BASE}/erl_crash.dump"},
                            user=USER, cwd=BASE)
            started = True
        return started

    def _await_startup(self, unit: Unit, deadline_s: float = STARTUP_TIMEOUT_S) -> None:
        """Wait until the node's rabbit application runs.  Raises :class:`RabbitMQError` if the
        daemon exits (with the tail of its log) or after ``deadline_s`` seconds."""
        end = time.monotonic() + deadline_s
        while True:
            if unit.host.daemon(DAEMON) is None:
                raise RabbitMQError(f"{unit.name}: rabbitmq-server exited while starting: {self._log_tail(unit)}")
            left = end - time.monotonic()
            if left <= 0:
                tail = self._log_tail(unit)
                why = ("it waits for its peers to load the cluster metadata (mnesia tables)"
                       if "Waiting for Mnesia tables" in tail else tail)
                raise RabbitMQError(f"{unit.name}: node {node_name(unit)} did not finish booting in "
                                    f"{deadline_s:.0f} s: {why}")
            try:
                r = self._ctl(unit, "await_startup", "-t", str(max(1, int(min(left, 10)))), timeout=min(left, 10) + 5)
            except CommandTimeout:
                continue
            if r.ok:
                return
            time.sleep(0.2)

    def _log_tail(self, unit: Unit, n: int = 3, daemon: str = DAEMON) -> str:
        """What the node's console log (warnings and errors) says last: the first ``n`` error
        lines of its last 60 lines, else its last ``n`` lines."""
        raw = unit.host.read_file(f"/srv/stackha/log/{daemon}.log") or b""
        lines = [line.strip() for line in raw.decode(errors="replace").splitlines()[-60:] if line.strip()]
        errors = [line.split("> ", 1)[-1].strip() for line in lines if "[error]" in line]
        return " | ".join(errors[:n] if errors else lines[-n:])[-600:] or "(empty log)"

    def _app_running(self, unit: Unit) -> bool:
        """True if the node answers and its rabbit application runs (``check_running``)."""
        try:
            return self._ctl(unit, "check_running", "-t", "3", tool=DIAGNOSTICS, timeout=8).ok
        except (CommandTimeout, RabbitMQError):
            return False

    def stop_unit(self, app: AppContext, unit_name: str, timeout: float = 30.0) -> list[str]:
        """Stop the node of ``unit_name`` cleanly (TERM, KILL after ``timeout`` s), then its epmd,
        both by PID.  Returns what it stopped.  Raises HostDown if the host is off."""
        unit = app.unit(unit_name)
        done = []
        if unit.host.stop(DAEMON, timeout=timeout):
            done.append(f"{unit.name}: stopped rabbitmq-server")
        if unit.host.stop(EPMD_DAEMON, timeout=5):
            done.append(f"{unit.name}: stopped epmd")
        return done

    def stop(self, app: AppContext) -> list[str]:
        """Stop every unit's node (one at a time, last unit first) and epmd; hosts that are off
        are skipped.  Returns what it stopped."""
        done: list[str] = []
        for unit in reversed(app.units):
            if unit.host.is_on():
                done += self.stop_unit(app, unit.name)
        return done

    # ------------------------------------------------------------------ apply
    def _prepare(self, unit: Unit, files: dict[str, RenderedFile]) -> list[str]:
        """Create the directories and install ``files``; returns the paths that changed.  Raises
        :class:`RabbitMQError` (before writing anything) if the node runs with another Erlang
        cookie: a node restarted with a new cookie could no longer talk to its peers, so the
        cookie only changes with the whole cluster stopped (:meth:`stop`)."""
        current = unit.host.read_file(COOKIE)
        if (current is not None and current.decode() != files[COOKIE].content
                and unit.host.daemon(DAEMON) is not None):
            raise RabbitMQError(f"{unit.name}: the Erlang cookie secret differs from the one the running node uses; "
                                "stop every node first (the cookie can only change with the whole cluster down)")
        unit.host.run(["install", "-d", "-o", USER, "-g", USER, "-m", "0750", BASE, HOME, MNESIA_BASE, LOG_BASE],
                      check=True)
        return install_files(unit.host, files)

    def _seed(self, app: AppContext, statuses: dict[str, dict | None]) -> Unit:
        """The node others join: the running one with the most cluster members, lowest unit first."""
        best, best_n = None, -1
        for unit in app.units:
            st = statuses.get(unit.name)
            if st is None or node_name(unit) not in st.get("running_nodes", []):
                continue
            n = len(st.get("disk_nodes", []))
            if n > best_n:
                best, best_n = unit, n
        if best is None:
            raise RabbitMQError(f"{app.name}: no RabbitMQ node is running to form the cluster around")
        return best

    def _statuses(self, units: Sequence[Unit]) -> dict[str, dict | None]:
        """cluster_status of each unit whose node runs (in parallel), None for the others."""
        running = [u for u in units if u.host.is_on() and u.host.daemon(DAEMON) is not None]
        found = dict(zip([u.name for u in running], _parallel(running, lambda u: self._cluster_status(u, 10))))
        return {u.name: found.get(u.name) for u in units}

    def _join(self, app: AppContext, statuses: dict[str, dict | None]) -> tuple[list[str], Unit]:
        """Join every running node that is not clustered with the seed (stop_app, reset,
        join_cluster, start_app), one at a time: concurrent joins race in mnesia (RabbitMQ's
        peer discovery takes a lock for that reason).  ``statuses``: from :meth:`_statuses`.
        Returns what changed and the seed."""
        seed = self._seed(app, statuses)
        seed_node = node_name(seed)
        changes = []
        for unit in app.units:
            st = statuses.get(unit.name)
            if unit is seed or not unit.host.is_on() or unit.host.daemon(DAEMON) is None:
                continue
            if st is not None and seed_node in st.get("disk_nodes", []):
                continue
            self._ctl_ok(unit, "stop_app", timeout=120)
            self._ctl_ok(unit, "reset", timeout=120)
            forgotten = node_name(unit) in (statuses.get(seed.name) or {}).get("disk_nodes", [])
            if forgotten:
                # The cluster still lists this node (its disk was lost or reset): forget the
                # old incarnation, or join_cluster answers "already a member" and does nothing.
                self._ctl_ok(seed, "forget_cluster_node", node_name(unit), timeout=120)
                changes.append(f"{unit.name}: the cluster forgot the old incarnation of {node_name(unit)}")
            self._ctl_ok(unit, "join_cluster", seed_node, timeout=120)
            self._ctl_ok(unit, "start_app", timeout=120)
            changes.append(f"{unit.name}: joined the cluster of {seed_node}")
            if forgotten:
                # forget_cluster_node also removed the node from every quorum queue: give them
                # their replica on it back.
                r = self._ctl(unit, "grow", node_name(unit), "all", tool=QUEUES, timeout=300)
                if not r.ok:
                    raise RabbitMQError(f"{unit.name}: rabbitmq-queues grow failed (rc {r.rc}): "
                                        + " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:]))
                changes.append(f"{unit.name}: quorum queues got their replica on {node_name(unit)} back")
        return changes, seed

    def apply(self, app: AppContext) -> list[str]:
        """Install the files, start epmd and every node, form the cluster, re-create vhost ``/``
        with default queue type quorum while it is empty, delete ``guest``, create the client
        user.  A node whose files changed while it ran is restarted, one node at a time.
        Idempotent: returns what changed ([] when nothing did; ≈ 6 CLI calls then).  Raises
        :class:`InvalidInput` (see :meth:`check`), :class:`RabbitMQError`, HostDown."""
        rendered = self.render(app)
        changes: list[str] = []
        changed_files = _parallel(app.units, lambda u: self._prepare(u, rendered[u.name]))
        restart = []
        for unit, files in zip(app.units, changed_files):
            if files:
                changes.append(f"{unit.name}: wrote {', '.join(files)}")
                if unit.host.daemon(DAEMON) is not None:
                    restart.append(unit)
        started = _parallel(app.units, self._start)
        changes += [f"{u.name}: started {node_name(u)}" for u, s in zip(app.units, started) if s]
        statuses = self._statuses(app.units)
        booting = [u for u, s in zip(app.units, started)
                   if s or statuses[u.name] is None or node_name(u) not in statuses[u.name].get("running_nodes", [])]
        if booting:
            _parallel(booting, self._await_startup)
            statuses.update(self._statuses(booting))
        join_changes, seed = self._join(app, statuses)
        changes += join_changes
        for unit in restart:  # rolling: the others keep the majority
            self.stop_unit(app, unit.name)
            self._start(unit)
            self._await_startup(unit)
            changes.append(f"{unit.name}: restarted {node_name(unit)} (configuration changed)")
        changes += self._cluster_setup(app, seed, statuses[seed.name] or {})
        return changes

    def _cluster_setup(self, app: AppContext, unit: Unit, status: dict) -> list[str]:
        """Cluster-wide definitions (idempotent), run through ``unit``'s node; ``status`` is its
        cluster_status."""
        changes = []
        if status.get("cluster_name") != app.name:
            self._ctl_ok(unit, "set_cluster_name", app.name)
            changes.append(f"{app.name}: cluster name set")
        changes += self._ensure_vhost(unit, "/")
        users = {u["user"] for u in self._json(unit, "list_users")}
        if "guest" in users:
            self._ctl_ok(unit, "delete_user", "guest")
            changes.append(f"{app.name}: deleted the default guest user")
        user, password = self.client_credentials(app)
        changes += self._ensure_user(unit, user, password, "/", users)
        return changes

    def _ensure_vhost(self, unit: Unit, vhost: str, queue_type: str = "quorum") -> list[str]:
        """Vhost ``vhost`` with default queue type ``queue_type``.  For ``quorum``, an existing
        vhost without it is re-created only while it holds no queue (3.10 cannot change a vhost's
        metadata).  ``classic``: the vhost is made if missing and otherwise left as it is (the
        OpenStack services' vhost: oslo.messaging declares its reply and fanout queues transient,
        which a quorum default would refuse, and its topic queues as quorum queues itself)."""
        vhosts = {v["name"]: v.get("default_queue_type") for v in self._json(unit, "list_vhosts", "name", "default_queue_type")}
        if queue_type == "classic":
            if vhost in vhosts:
                return []
            self._ctl_ok(unit, "add_vhost", vhost, "--default-queue-type", "classic")
            return [f"{unit.name}: vhost {vhost} created (default queue type classic)"]
        if vhosts.get(vhost) == "quorum":
            return []
        if vhost in vhosts:
            queues = self._json(unit, "list_queues", "-p", vhost, "name")
            if queues:
                return []  # holds queues: left as it is (durable queues need x-queue-type there)
            self._ctl_ok(unit, "delete_vhost", vhost)
        self._ctl_ok(unit, "add_vhost", vhost, "--default-queue-type", "quorum")
        return [f"{unit.name}: vhost {vhost} (re)created with default queue type quorum"]

    def _ensure_user(self, unit: Unit, user: str, password: str, vhost: str,
                     users: set[str] | None = None) -> list[str]:
        """User with ``password`` (given on stdin, never in argv) and all permissions on ``vhost``;
        ``users``: the existing user names if already listed."""
        changes = []
        if users is None:
            users = {u["user"] for u in self._json(unit, "list_users")}
        if user not in users:
            self._ctl_ok(unit, "add_user", user, input=password + "\n")
            changes.append(f"{unit.name}: created user {user}")
        elif not self._ctl(unit, "authenticate_user", user, input=password + "\n").ok:
            self._ctl_ok(unit, "change_password", user, input=password + "\n")
            changes.append(f"{unit.name}: reset the password of user {user}")
        perms = self._json(unit, "list_user_permissions", user)
        want = {"vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
        if want not in perms:
            self._ctl_ok(unit, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
            changes.append(f"{unit.name}: granted {user} all permissions on vhost {vhost}")
        return changes

    def _any_running(self, app: AppContext) -> Unit:
        for unit in app.units:
            if unit.host.is_on() and unit.host.daemon(DAEMON) is not None:
                return unit
        raise RabbitMQError(f"{app.name}: no RabbitMQ node is running")

    def ensure_user(self, app: AppContext, user: str, vhost: str = "/", queue_type: str = "quorum") -> str:
        """Create (or repair) ``user`` with a generated password (secret ``user-<user>``) and all
        permissions on ``vhost`` (created with default queue type ``queue_type`` if missing — see
        :meth:`_ensure_vhost`); returns the password.  Idempotent.  Raises :class:`InvalidInput`
        for an empty name, :class:`RabbitMQError` when no node runs or a command fails."""
        if not user or not vhost:
            raise InvalidInput("ensure_user needs a user name and a vhost")
        password = app.secrets.get(f"user-{user}")
        unit = self._any_running(app)
        self._ensure_vhost(unit, vhost, queue_type)
        self._ensure_user(unit, user, password, vhost)
        return password

    # ------------------------------------------------------------------ observe
    def _local_status(self, unit: Unit) -> UnitStatus | None:
        """What the host alone tells (no CLI call): host off, daemon or epmd dead → that status;
        None when the node's processes run and the CLI must be asked."""
        host = unit.host
        try:
            if not host.is_on():
                return UnitStatus(unit.name, WorkloadState.ERROR, f"host {host.name} is powered off")
            if host.daemon(DAEMON) is None:
                return UnitStatus(unit.name, WorkloadState.ERROR, "rabbitmq-server is not running (exited or killed)")
            if host.daemon(EPMD_DAEMON) is None:
                return UnitStatus(unit.name, WorkloadState.ERROR, "epmd is not running")
        except HostDown:
            return UnitStatus(unit.name, WorkloadState.ERROR, f"host {host.name} is powered off")
        except HostError as exc:
            return UnitStatus(unit.name, WorkloadState.UNKNOWN, f"cannot observe: {exc}")
        return None

    def _silent_status(self, unit: Unit, why: str) -> UnitStatus:
        """Status of a unit whose processes ran but whose node gave no cluster_status (``why``).
        The processes are checked again first: a node killed just before the call is reported
        as not running rather than as silent."""
        me = node_name(unit)
        local = self._local_status(unit)
        if local is not None:
            return local
        if "Waiting for Mnesia tables" in self._log_tail(unit, n=1):
            return UnitStatus(unit.name, WorkloadState.MAINTENANCE,
                              f"node {me} is booting: waiting for its peers (cluster metadata)")
        if why == "app-stopped":
            return UnitStatus(unit.name, WorkloadState.BLOCKED,
                              f"rabbit application stopped on {me}: paused by pause_minority (no majority "
                              "in sight) or booting")
        if why == "timeout":
            return UnitStatus(unit.name, WorkloadState.MAINTENANCE,
                              f"node {me} does not answer the CLI within {OBSERVE_TIMEOUT_S:.0f} s "
                              "(booting, hung, or cut off from its peers)")
        return UnitStatus(unit.name, WorkloadState.MAINTENANCE, f"node {me} does not answer: {why}")

    def _view_status(self, app: AppContext, unit: Unit, st: dict, source: Unit) -> UnitStatus | None:
        """Status of ``unit`` from ``source``'s cluster_status ``st``; None when that view cannot
        tell (the unit's node is not among the running nodes and the view is not its own)."""
        me = node_name(unit)
        running = st.get("running_nodes", [])
        members = st.get("disk_nodes", []) + st.get("ram_nodes", [])
        partitions = {n: peers for n, peers in (st.get("partitions") or {}).items() if n == me or me in peers}
        # An alarm names its node ({"node": …, "resource": "disk"|"memory", …}); one without is cluster-wide.
        alarms = [a for a in (st.get("alarms") or []) if not isinstance(a, dict) or a.get("node") in (me, None)]
        facts = {"node": me, "view_of": node_name(source), "running_nodes": running, "members": members,
                 "partitions": partitions, "alarms": alarms, "cluster_name": st.get("cluster_name")}
        if me not in running:
            if source is not unit:
                return None
            return UnitStatus(unit.name, WorkloadState.BLOCKED,
                              "rabbit application not running (booting, or paused by pause_minority)", facts)
        if partitions:
            return UnitStatus(unit.name, WorkloadState.BLOCKED, f"network partition: {partitions}", facts)
        if alarms:
            what = ", ".join(f"{a.get('resource', '?')} alarm" if isinstance(a, dict) else str(a) for a in alarms)
            return UnitStatus(unit.name, WorkloadState.BLOCKED, f"{what}: publishers are blocked", facts)
        expected = [node_name(u) for u in app.units]
        missing = [n for n in expected if n not in members]
        if missing:
            return UnitStatus(unit.name, WorkloadState.WAITING, f"not clustered with {', '.join(missing)}", facts)
        down = [n for n in expected if n not in running]
        msg = f"cluster member; {len(expected) - len(down)}/{len(expected)} nodes running"
        if down:
            msg += f" ({', '.join(down)} down)"
        return UnitStatus(unit.name, WorkloadState.ACTIVE, msg, facts)

    def observe(self, app: AppContext) -> AppStatus:
        """Per unit: active only if its node runs, is among the running nodes, is clustered with
        every unit's node and is in no partition and raises no alarm; else error (host off,
        daemon or epmd dead — seen from the PID, no CLI call), maintenance (booting, or the CLI
        silent for :data:`OBSERVE_TIMEOUT_S`), blocked (rabbit application stopped or paused by
        pause_minority, partition, alarm) or waiting (not clustered), with the reason.

        Cost: one ``cluster_status`` (≈ 0.4 s on an idle machine) on the first unit whose node
        runs; its view (running nodes, members, partitions and alarms of every node) covers the
        others.  A unit that view cannot vouch for, and every unit when the first node does
        not answer with its own rabbit application running, is asked itself (in parallel).
        Facts per unit: node, view_of, running_nodes, members, partitions, alarms,
        cluster_name; for the application: expected_nodes, running_nodes (the first answering
        view), partitions, alarms.  Never changes anything."""
        local = _parallel(app.units, self._local_status)
        statuses: dict[str, UnitStatus] = {u.name: s for u, s in zip(app.units, local) if s is not None}
        alive = [u for u in app.units if u.name not in statuses]
        view: tuple[Unit, dict] | None = None
        if alive:
            st, why = self._cluster_status_why(alive[0])
            if st is not None and node_name(alive[0]) in st.get("running_nodes", []):
                view = (alive[0], st)
            else:
                statuses[alive[0].name] = (self._view_status(app, alive[0], st, alive[0]) if st is not None
                                           else self._silent_status(alive[0], why))
        pending = []
        for unit in alive:
            if unit.name in statuses:
                continue
            derived = self._view_status(app, unit, view[1], view[0]) if view else None
            if derived is None:
                pending.append(unit)
            else:
                statuses[unit.name] = derived

        def own(unit: Unit) -> UnitStatus:
            st, why = self._cluster_status_why(unit)
            if st is None:
                return self._silent_status(unit, why)
            return self._view_status(app, unit, st, unit)  # type: ignore[return-value]

        for unit, us in zip(pending, _parallel(pending, own)):
            statuses[unit.name] = us
        peers_running = {n for us in statuses.values() if us.state is WorkloadState.ACTIVE
                         for n in us.facts.get("running_nodes", [])}
        for unit in alive:
            us = statuses[unit.name]
            if us.state is WorkloadState.BLOCKED and ("not running" in us.message or "stopped" in us.message):
                if node_name(unit) in peers_running:
                    statuses[unit.name] = UnitStatus(
                        unit.name, WorkloadState.BLOCKED,
                        f"rabbit application stopped on {node_name(unit)} although its peers count it as running "
                        "(resuming, or stuck after a partition healed: recover restarts it)", us.facts)
        units = [statuses[u.name] for u in app.units]
        facts: dict[str, Any] = {"expected_nodes": [node_name(u) for u in app.units], "running_nodes": [],
                                 "partitions": {}, "alarms": []}
        for us in units:
            if us.state is WorkloadState.ACTIVE and not facts["running_nodes"]:
                facts["running_nodes"] = us.facts["running_nodes"]
            if "partitions" in us.facts:
                facts["partitions"].update(us.facts["partitions"])
                facts["alarms"] += [a for a in us.facts["alarms"] if a not in facts["alarms"]]
        return AppStatus(app.name, units, facts)

    # ------------------------------------------------------------------ recover
    def recover(self, app: AppContext, *, force_boot: bool = False) -> list[str]:
        """Restart every dead node (all at once), wait for them, and make any node that is not
        clustered rejoin (stop_app, reset, join_cluster, start_app).

        Cold start (every host powered off, then on): RabbitMQ ≥ 3.6 no longer needs the last node
        down to be started first — a booting node waits for its peers
        (``mnesia_table_loading_retry_timeout`` 30 s × ``mnesia_table_loading_retry_limit`` 10),
        so starting every node at once brings the cluster back with nothing lost (measured ≈ 11 s).
        ``force_boot`` is never used on its own: it lets a node boot without the peer that may
        hold newer metadata (users, vhosts, queue definitions), which can lose definitions.  When
        hosts are off and the nodes that were restarted still wait for them after
        :data:`PEER_WAIT_S` (else :data:`STARTUP_TIMEOUT_S`), :class:`RabbitMQError` names the
        waiting nodes and the hosts that are off.  ``force_boot=True`` is the operator's explicit
        choice: nodes on hosts that are on and not running the rabbit application are stopped,
        marked with ``rabbitmqctl force_boot`` and started.

        A node whose rabbit application stays stopped while its running peers count it as
        running (stuck after a partition healed, see :meth:`_stuck`) is restarted too.  After
        any restart, with a majority of hosts on, every quorum queue must have a leader within
        :data:`QQ_LEADER_GRACE_S`, else recover triggers an election (see :meth:`_leaderless`).
        Units on hosts that are off are skipped (observe reports them).  Returns what changed
        ([] when every node on a powered host runs in the cluster)."""
        self.check(app)
        changes: list[str] = []
        on = [u for u in app.units if u.host.is_on()]
        off = [u.host.name for u in app.units if u not in on]
        dead = [u for u in on if u.host.daemon(DAEMON) is None or u.host.daemon(EPMD_DAEMON) is None]
        for u in self._stuck(app, [u for u in on if u not in dead]):
            dead.append(u)
            changes.append(f"{u.name}: rabbit application not running although its peers count it as running "
                           "(stuck after a partition healed); restarting it")
        for u in self._partition_losers(app, [u for u in on if u not in dead]):
            dead.append(u)
            changes.append(f"{u.name}: on the minority side of a partition RabbitMQ still reports "
                           "(e.g. after the node was frozen); restarting it")
        if force_boot:
            dead += [u for u in on if u not in dead and not self._app_running(u)]
        if dead:
            for u in dead:  # a node whose epmd died is unreachable: restart both
                self.stop_unit(app, u.name)
            rendered = self.render(app)
            _parallel(dead, lambda u: self._prepare(u, rendered[u.name]))
            if force_boot:
                for u in dead:
                    self._start_epmd(u)
                    self._ctl_ok(u, "force_boot")
                    changes.append(f"{u.name}: force_boot set (boots without waiting for its peers)")
            _parallel(dead, self._start)
            changes += [f"{u.name}: restarted {node_name(u)}" for u in dead]
        deadline = PEER_WAIT_S if off else STARTUP_TIMEOUT_S
        errors = [str(exc) for exc in _parallel(on, lambda u: self._try(lambda: self._await_startup(u, deadline)))
                  if exc is not None]
        if errors:
            hint = (f"; hosts off: {', '.join(off)} — power them on, or recover(force_boot=True) to boot without "
                    "them (may lose definitions only they hold)") if off else ""
            raise RabbitMQError("; ".join(errors) + hint)
        if on:
            changes += self._join(app, self._statuses(app.units))[0]
        if dead and 2 * len(on) > len(app.units):  # without a majority no queue can elect
            changes += self._ensure_quorum_leaders(app, on)
        return changes

    def _leaderless(self, unit: Unit, trigger: bool) -> tuple[int, int]:
        """``(leaderless, empty)``: how many quorum queues with a member on ``unit``'s node know
        no leader there (the member does not answer ``ra:members`` within 1.5 s), and how many
        of those members hold nothing at all (term 0, every index 0 in ``ra_metrics``: the
        member was started anew).  With ``trigger``, each leaderless member is made to start an
        election (``ra:trigger_election``).

        Why (measured, RabbitMQ 3.10.8 / ra 2.2.0): when every node dies at once shortly after
        a quorum queue was declared, the queue's Ra members come back *new* — the name → UID
        registry (``names.dets``) is only flushed once idle for 0.5 s (DETS ``auto_save``), so
        the registration was lost although the messages were on disk in the old member's
        segment; the new, empty members never elect a leader (a new Ra cluster waits for an
        explicit trigger) and clients get INTERNAL_ERROR (45 s ra timeout) on basic.consume.
        Seen in 1 lab cold start of 2 when the hosts were powered off within a second of the
        last publish to a new queue; never for a queue that had been idle for a while.  The
        workaround reported upstream (rabbitmq-server issue #10070) is to trigger an election;
        3.10 has no CLI command for it, hence ``rabbitmqctl eval``.  Raises
        :class:`RabbitMQError`."""
        # ra:members/2 on the local member answers {ok, Members, Leader} once a leader is known
        # and {timeout, _} while none is (ra_leaderboard keeps stale leaders: not usable here).
        action = "[ra:trigger_election(Id) || Id <- Bad], " if trigger else ""
        expr = ("Ids = [{Name, node()} || Q <- rabbit_amqqueue:list_local_quorum_queues(), "
                "{Name, _} <- [amqqueue:get_pid(Q)]], "
                "Ks = [rpc:async_call(node(), ra, members, [Id, 1500]) || Id <- Ids], "
                "Bad = [Id || {Id, K} <- lists:zip(Ids, Ks), element(1, rpc:yield(K)) =/= ok], "
                "Empty = [N || {N, _} <- Bad, [M] <- [ets:lookup(ra_metrics, N)], "
                "lists:all(fun(X) -> X =:= 0 orelse not is_integer(X) end, tl(tuple_to_list(M)))], "
                f"{action}[length(Bad), length(Empty)].")
        r = self._ctl_ok(unit, "eval", expr, timeout=60)
        try:
            bad, empty = json.loads(r.stdout.strip().splitlines()[-1])
            return int(bad), int(empty)
        except (ValueError, IndexError, TypeError):
            raise RabbitMQError(f"{unit.name}: unexpected answer to the quorum queue leader check: {r.stdout[:200]!r}")

    def _ensure_quorum_leaders(self, app: AppContext, units: Sequence[Unit]) -> list[str]:
        """After nodes were restarted: give every quorum queue :data:`QQ_LEADER_GRACE_S` to
        elect a leader, then trigger an election where there is still none (see
        :meth:`_leaderless`) and wait as long again.  Returns what it did — saying so when the
        members it woke were empty (the queue's messages were lost); raises
        :class:`RabbitMQError` naming the nodes whose queues still have no leader."""
        def wait(deadline_s: float, until_only_empty: bool) -> dict[str, tuple[int, int]]:
            """Per unit (queues without a leader, of which empty) once all have one — or, with
            ``until_only_empty``, once only empty new members lack one (those never elect on
            their own: no use waiting) — or as they are after ``deadline_s`` s."""
            last: list[dict[str, tuple[int, int]]] = [{}]

            def settled() -> bool:
                counts = dict(zip([u.name for u in units], _parallel(units, lambda u: self._leaderless(u, False))))
                last[0] = counts
                return (not any(bad for bad, _ in counts.values())
                        or (until_only_empty and all(bad == empty for bad, empty in counts.values())))

            with contextlib.suppress(WaitTimeout):
                wait_until(settled, deadline_s, 1.0, what="quorum queue leaders")
            return last[0]

        counts = wait(QQ_LEADER_GRACE_S, True)
        if not any(bad for bad, _ in counts.values()):
            return []
        lacking = [u for u in units if counts[u.name][0]]
        triggered = _parallel(lacking, lambda u: self._leaderless(u, True))
        changes = []
        for u, (bad, empty) in zip(lacking, triggered):
            if bad:
                changes.append(f"{u.name}: triggered a leader election for {bad} quorum queue(s) without a leader "
                               "after the restart")
            if empty:
                changes.append(f"{u.name}: DATA LOST — {empty} quorum queue member(s) came back empty (their Ra "
                               "registration was not on disk when every node died; RabbitMQ 3.10/ra 2.2 limitation)")
        counts = wait(QQ_LEADER_GRACE_S, False)
        if any(bad for bad, _ in counts.values()):
            raise RabbitMQError("quorum queues still without a leader after an election was triggered: "
                                + ", ".join(f"{name}: {bad}" for name, (bad, _) in counts.items() if bad))
        return changes

    def _stuck(self, app: AppContext, alive: Sequence[Unit]) -> list[Unit]:
        """Nodes whose rabbit application is not running (still so after :data:`STUCK_GRACE_S`)
        while a peer whose application runs lists them among its running nodes.  Seen after a
        partition healed under pause_minority with RabbitMQ 3.10 / Erlang 25 (about 1 run in 8
        in the lab): the paused node's restart
        hangs in the boot step after peer discovery, its log saying "Global hang workaround:
        global state on … seems broken", while mnesia on the majority already counts it as
        running.  It does not recover on its own; a restart of that node does."""
        statuses = self._statuses(alive)
        running_views = [st for u in alive if (st := statuses[u.name]) is not None
                         and node_name(u) in st.get("running_nodes", [])]
        stuck = []
        for u in alive:
            st = statuses[u.name]
            if st is not None and node_name(u) in st.get("running_nodes", []):
                continue
            if any(node_name(u) in v.get("running_nodes", []) for v in running_views):
                stuck.append(u)
        # A node resuming from a pause shows the same picture for a few seconds: give it
        # STUCK_GRACE_S to finish before calling it stuck.
        left = [stuck]

        def resumed() -> bool:
            left[0] = [u for u in left[0] if not self._app_running(u)]
            return not left[0]

        if stuck:
            with contextlib.suppress(WaitTimeout):
                wait_until(resumed, STUCK_GRACE_S, 1.0, what="paused nodes resuming")
        return left[0]

    def _partition_losers(self, app: AppContext, alive: Sequence[Unit]) -> list[Unit]:
        """Nodes to restart when every node runs but a partition is still reported: the nodes
        outside the largest running view (RabbitMQ's "Clustering and Network Partitions" guide:
        pick the most trusted partition, restart every node of the others; a restart clears
        the record).  Seen after a node was frozen (SIGSTOP) for 20 s and resumed: its peers had
        counted it down, it had counted them down, and nothing healed it on its own
        (``stackha verify --scenario rabbit-node-freeze``).  Empty when no partition is reported."""
        statuses = self._statuses(alive)
        views = [st for st in statuses.values() if st is not None]
        if not any(st.get("partitions") for st in views):
            return []
        largest = max((set(st.get("running_nodes", [])) for st in views), key=len, default=set())
        losers = [u for u in alive if node_name(u) not in largest]
        if losers:
            return losers
        # every node is in the largest view, yet a partition is recorded: restart those reporting it
        return [u for u in alive if (st := statuses.get(u.name)) is not None and st.get("partitions")][:1]

    @staticmethod
    def _try(fn: Callable[[], Any]) -> Exception | None:
        try:
            fn()
        except Exception as exc:  # collected and re-raised together by the caller
            return exc
        return None

"""HAProxy: the load-balancer pair in front of every API and database VIP.

An ``haproxy`` application has ≥ 2 units (the load-balancer hosts); the ``keepalived`` subordinate
on the same hosts moves the VIP between them (:mod:`stackha.services.keepalived`).  Every unit runs
the same configuration: each :class:`~stackha.services.base.Frontend` of ``app.frontends`` becomes
one ``listen`` section bound to ``<VIP>:<port>`` — the backup unit can bind the VIP before it holds
it because ``net.ipv4.ip_nonlocal_bind=1`` (LAB-NOTES "HAProxy"; lab hosts set it at boot, apply
sets it on any host) — so a VIP move
needs no HAProxy action at all.

Files and processes on each unit's host:

- ``/srv/haproxy/haproxy.cfg`` (mode 0600: it holds the stats password);
- ``/run/haproxy-stackha/admin.sock`` — the admin stats socket (``show stat`` for :meth:`observe`,
  ``expose-fd listeners`` so a reload hands the listening sockets over) and
  ``/run/haproxy-stackha/master.sock`` — the master CLI (``show proc``: reload count and result);
- the tracked daemon ``haproxy``: ``haproxy -W -db -S <master.sock> -f <cfg>`` — master-worker mode
  in the foreground.  ``-db`` writes no pidfile (LAB-NOTES), but the master is the process
  ``host.spawn`` tracks and it keeps its PID across reloads;
- a stats page on the unit's own address (``stats_port``, default 8404, user ``stackha``, password
  the generated secret ``stats-password``);
- a health URL on 127.0.0.1 (``health_port``, default 8405, ``monitor-uri /healthz``) answered by
  the HAProxy worker itself: keepalived's track script polls it (:func:`health_url`).  A killed
  master takes its workers with it (measured: the health URL refuses within ≈ 20 ms), so the
  check sees a dead HAProxy at once, without ``pidof`` (LAB-NOTES).

Reload: on a config change :meth:`HAProxyOperator.apply` validates it (``haproxy -c``) and sends
SIGUSR2 to the master, which re-executes itself with the new file, starts a new worker that takes
the listening sockets over from the old one (``expose-fd listeners``: no refused connection) and
lets the old worker finish its sessions (``hard-stop-after`` bounds that).  The daemon keeps its
PID, so ``host.spawn`` keeps tracking it; the VIP never moves for a reload.  Success is read from
the master CLI (``show proc``: the reload counter moves, ``failed`` does not).

Single writer (Galera, ``Frontend.single_writer``): the first server is active, the others
``backup``; without ``option allbackups`` only the first backup takes traffic, so there is still a
single writer while the active one is down.  The active server carries ``on-marked-up
shutdown-backup-sessions``: when it is back UP, the sessions still open on the backup are closed,
so two nodes never take writes together for longer than one health check.  Stick tables (``stick
on dst``) were rejected: they would avoid the fail-back, but each load balancer has its own table
(unless a ``peers`` section syncs them), so after a VIP move the new holder could pick another
writer than the old one; the static order picks the same writer on both load balancers, always.

Timers (``app.tuning``): see :data:`TIMERS`.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from stackha.hosts.base import CommandError, HostDown, HostError
from stackha.errors import InvalidInput
from stackha.polling import WaitTimeout, wait_until
from stackha.services.base import (
    BaseOperator,
    log_tail,
    select_tuning,
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

KIND = "haproxy"
HAPROXY_BIN = "/usr/sbin/haproxy"
CONFIG_DIR = "/srv/haproxy"
CONFIG_PATH = f"{CONFIG_DIR}/haproxy.cfg"
RUN_DIR = "/run/haproxy-stackha"
ADMIN_SOCKET = f"{RUN_DIR}/admin.sock"
MASTER_SOCKET = f"{RUN_DIR}/master.sock"
DAEMON = "haproxy"
STATS_PORT = 8404
STATS_USER = "stackha"
STATS_SECRET = "stats-password"
HEALTH_PORT = 8405
HEALTH_URI = "/healthz"
BALANCES = ("roundrobin", "leastconn", "source", "uri")
MODES = ("tcp", "http")
START_TIMEOUT_S = 10.0
RELOAD_TIMEOUT_S = 10.0
_NAME_RE = re.compile(r"[^A-Za-z0-9._:-]")


@dataclass(frozen=True)
class HAProxyTimers:
    """Health-check and retry timers of one tuning.

    Times in milliseconds.  ``inter_ms``: check period while a server is UP; ``fastinter_ms``:
    period while it is changing state (after the first failed or first good check);
    ``downinter_ms``: period while DOWN; ``rise``/``fall``: consecutive good/failed checks to mark
    a server UP/DOWN; ``connect_ms``: ``timeout connect`` (a check's connect timeout is
    min(inter, connect) once ``timeout check`` is set); ``check_ms``: ``timeout check`` (read
    timeout of a check); ``retries``: connection retries; ``redispatch_every``: ``option redispatch
    N`` — pick another server after N failed attempts (1: at every retry); ``shutdown_sessions``:
    ``on-marked-down shutdown-sessions`` (kill the sessions of a server marked DOWN so clients
    reconnect at once instead of waiting for a TCP timeout).  Values are in HAProxy 2.6's
    configuration manual, section 5.2.
    """

    inter_ms: int
    fastinter_ms: int | None
    downinter_ms: int | None
    rise: int
    fall: int
    connect_ms: int
    check_ms: int
    retries: int
    redispatch_every: int | None
    shutdown_sessions: bool

    def server_options(self) -> str:
        """The ``default-server`` keywords of these timers (e.g. ``inter 500 fastinter 200 …``)."""
        parts = [f"inter {self.inter_ms}"]
        if self.fastinter_ms is not None:
            parts.append(f"fastinter {self.fastinter_ms}")
        if self.downinter_ms is not None:
            parts.append(f"downinter {self.downinter_ms}")
        parts += [f"rise {self.rise}", f"fall {self.fall}"]
        if self.shutdown_sessions:
            parts.append("on-marked-down shutdown-sessions")
        return " ".join(parts)

    def detection_ms(self) -> int:
        """Worst-case time (ms) to mark DOWN a server that refuses connections: one ``inter``
        until the first failed check, then ``fall - 1`` checks at ``fastinter``."""
        return self.inter_ms + (self.fall - 1) * (self.fastinter_ms or self.inter_ms)

    def silent_detection_ms(self) -> int:
        """Worst case (ms) for a server that stops answering (power-off: every check waits out
        its connect timeout, min(inter, connect))."""
        timeout = min(self.inter_ms, self.connect_ms)
        return self.detection_ms() + self.fall * timeout


#: The timers of each tuning.
#:
#: ``stackha``: checks every 500 ms, 200 ms once a check failed, DOWN after 2 failures → a dead
#: server (connection refused) is out of rotation within 0.7 s, a silent one (power-off) within
#: ≈ 1.7 s; rise 2 at fastinter → back within ≈ 1.2 s of recovering (downinter 1 s); sessions of a
#: DOWN server are shut so clients reconnect at once; ``timeout connect 1s``, 3 retries and a
#: redispatch at every retry let a connection that hit a dead, not-yet-DOWN server land on another.
#: Cost: 2 checks/s per server per load balancer.
#:
#: ``stock``: what the anchors ship (seed 001's HAProxy section; issue 6's baseline):
#: ``check inter 2000 rise 2 fall 5`` → a dead server is DOWN after ≈ 10 s; ``timeout connect
#: 5s``, ``timeout check 10s``, ``retries 3``, plain ``option redispatch``, no session shutdown.
TIMERS: dict[str, HAProxyTimers] = {
    "stackha": HAProxyTimers(inter_ms=500, fastinter_ms=200, downinter_ms=1000, rise=2, fall=2,
                             connect_ms=1000, check_ms=1000, retries=3, redispatch_every=1,
                             shutdown_sessions=True),
    "stock": HAProxyTimers(inter_ms=2000, fastinter_ms=None, downinter_ms=None, rise=2, fall=5,
                           connect_ms=5000, check_ms=10000, retries=3, redispatch_every=None,
                           shutdown_sessions=False),
}


#: The check timers of HTTP (OpenStack API) frontends under stackha's tuning: every 2 s, 500 ms
#: once a check failed, DOWN after 2 failures (a refused server is out within ≈ 2.5 s, a silent one
#: within ≈ 4.5 s).  An API check is a request through the service's Python stack, so the 500 ms of
#: :data:`TIMERS` cost an idle lab cloud (2 load balancers × 3 units × 10 APIs) over half a core;
#: clients do not wait for the check, since the L7 retries replay a request that met a dead server
#: on another one.  Stock keeps :data:`TIMERS`' stock values for every frontend.
HTTP_TIMERS: dict[str, HAProxyTimers] = {
    "stackha": HAProxyTimers(inter_ms=2000, fastinter_ms=500, downinter_ms=2000, rise=2, fall=2,
                             connect_ms=1000, check_ms=3000, retries=3, redispatch_every=1,
                             shutdown_sessions=True),
}


def timers(tuning: str) -> HAProxyTimers:
    """The :class:`HAProxyTimers` of ``tuning`` ("stackha" or "stock"); InvalidInput otherwise."""
    return select_tuning(TIMERS, tuning)


def proxy_name(name: str) -> str:
    """``name`` made valid as an HAProxy proxy or server name (letters, digits, ``.-_:``; other
    characters, such as the ``/`` of ``galera/0``, become ``-``)."""
    return _NAME_RE.sub("-", name)


def health_port(app: AppContext) -> int:
    """The TCP port of the health URL of haproxy application ``app`` (option ``health_port``)."""
    return int(app.options.get("health_port", HEALTH_PORT))


def health_url(app: AppContext) -> str:
    """The URL (on the unit's own loopback) that answers 200 while HAProxy serves: what
    keepalived's track script polls.  Example: ``http://127.0.0.1:8405/healthz``."""
    return f"http://127.0.0.1:{health_port(app)}{HEALTH_URI}"


def _check_frontends(app: AppContext) -> list[Frontend]:
    seen_ports: dict[int, str] = {}
    reserved = {int(app.options.get("stats_port", STATS_PORT)): "the stats page",
                health_port(app): "the health URL"}
    names: set[str] = set()
    for fe in app.frontends:
        where = f"{app.name}: frontend {fe.name!r} ({fe.app})"
        if fe.mode not in MODES:
            raise InvalidInput(f"{where}: mode {fe.mode!r}; use one of {', '.join(MODES)}")
        if fe.balance not in BALANCES:
            raise InvalidInput(f"{where}: balance {fe.balance!r}; use one of {', '.join(BALANCES)}")
        if fe.balance == "uri" and fe.mode != "http":
            raise InvalidInput(f"{where}: balance uri needs mode http (it hashes the request URI)")
        if not 0 < fe.port < 65536:
            raise InvalidInput(f"{where}: port {fe.port} out of range")
        if fe.port in seen_ports:
            raise InvalidInput(f"{where}: port {fe.port} is already used on the VIP by {seen_ports[fe.port]}")
        if fe.port in reserved:
            raise InvalidInput(f"{where}: port {fe.port} is {reserved[fe.port]}'s")
        if proxy_name(fe.name) in names:
            raise InvalidInput(f"{where}: two frontends are named {proxy_name(fe.name)!r}")
        seen_ports[fe.port] = repr(fe.name)
        names.add(proxy_name(fe.name))
    return list(app.frontends)


class HAProxyOperator(BaseOperator):
    """Operator of kind ``haproxy`` (see the module docstring for files, reload and timers).

    Options: ``stats_port`` (default 8404, on each unit's own address), ``health_port`` (8405, on
    127.0.0.1), ``maxconn`` (4096).  Needs ``app.vip`` when it has frontends.
    """

    kind = KIND

    # ----------------------------------------------------------------- render
    def render(self, app: AppContext) -> dict[str, dict[str, RenderedFile]]:
        """``{unit: {"/srv/haproxy/haproxy.cfg": file}}`` — pure.

        Raises :class:`InvalidInput` for an unknown tuning, balance or mode, ``balance uri`` on a
        tcp frontend, two frontends on one port (or on the stats/health port), or frontends
        without ``app.vip``.
        """
        t = timers(app.tuning)
        frontends = _check_frontends(app)
        if frontends and app.vip is None:
            raise InvalidInput(f"{app.name}: HAProxy frontends bind to the VIP, but the application has no vip option")
        password = app.secrets.get(STATS_SECRET)
        listens = []
        for fe in frontends:
            servers = []
            for i, (name, address) in enumerate(fe.servers):
                ipaddress.IPv4Address(address)  # ValueError for anything but an IPv4 address
                servers.append({
                    "name": proxy_name(name),
                    "address": address,
                    "backup": fe.single_writer and i > 0,
                    # the writer coming back closes what the backup still serves: one writer only
                    "shutdown_backup": fe.single_writer and i == 0 and len(fe.servers) > 1,
                })
            listens.append({
                "name": proxy_name(fe.name),
                "app": fe.app,
                "port": fe.port,
                "mode": fe.mode,
                "balance": fe.balance,
                "check_path": fe.check_path,
                "check_port": fe.check_port,
                "single_writer": fe.single_writer,
                # long-lived DB/AMQP connections: OpenStack HA guide uses 90m for Galera
                "client_timeout": "1m" if fe.mode == "http" else "90m",
                "servers": servers,
            })
        out: dict[str, dict[str, RenderedFile]] = {}
        for unit in app.units:
            text = render_template(
                "haproxy/haproxy.cfg.j2",
                app=app.name,
                unit=unit.name,
                tuning=app.tuning,
                t=t,
                http_timers=HTTP_TIMERS.get(app.tuning, t),
                maxconn=int(app.options.get("maxconn", 4096)),
                admin_socket=ADMIN_SOCKET,
                unit_address=str(unit.address),
                stats_port=int(app.options.get("stats_port", STATS_PORT)),
                stats_user=STATS_USER,
                stats_password=password,
                health_port=health_port(app),
                health_uri=HEALTH_URI,
                vip=str(app.vip.ip) if app.vip else None,
                listens=listens,
            )
            out[unit.name] = {CONFIG_PATH: RenderedFile(text, mode=0o600)}
        return out

    # ----------------------------------------------------------------- apply
    def apply(self, app: AppContext) -> list[str]:
        """Install the config on every unit, start HAProxy where it is not running, reload it
        (SIGUSR2, see the module docstring) where the config changed.  Idempotent: returns []
        when nothing changed.

        Units on powered-off hosts are skipped, then :class:`HostDown` is raised naming them
        (after the others were applied).  Raises :class:`CommandError` if HAProxy rejects the
        config (``haproxy -c`` output in the message), :class:`HostError` if it does not start
        or reload within 10 s.
        """
        rendered = self.render(app)
        changes: list[str] = []
        down: list[str] = []
        for unit in app.units:
            if not unit.host.is_on():
                down.append(f"{unit.name} ({unit.host.name})")
                continue
            changes += self._apply_unit(unit, rendered[unit.name])
        if down:
            raise HostDown(f"{app.name}: cannot apply on powered-off host(s): {', '.join(down)}")
        return changes

    def _apply_unit(self, unit: Unit, files: dict[str, RenderedFile]) -> list[str]:
        host = unit.host
        changed = install_files(host, files)
        # The backup binds the VIP before it holds it (the lab sets this at boot; a real machine
        # may not): idempotent, one command.
        host.run(["sh", "-c", "mkdir -p -m 0700 \"$0\" && sysctl -qw net.ipv4.ip_nonlocal_bind=1", RUN_DIR],
                 check=True)
        running = host.daemon(DAEMON)
        if changed or running is None:
            res = host.run([HAPROXY_BIN, "-c", "-q", "-f", CONFIG_PATH], timeout=30)
            if not res.ok:
                raise CommandError(host.name, res)
        if running is None:
            host.spawn(DAEMON, [HAPROXY_BIN, "-W", "-db", "-S", f"{MASTER_SOCKET},mode,600", "-f", CONFIG_PATH])
            self._wait_serving(unit, START_TIMEOUT_S)
            return [f"{unit.name}: started haproxy on {host.name}"]
        if changed:
            before = _master_reloads(host)
            host.signal(DAEMON, "USR2")
            self._wait_reloaded(unit, before, RELOAD_TIMEOUT_S)
            return [f"{unit.name}: reloaded haproxy ({', '.join(changed)})"]
        return []

    def _wait_serving(self, unit: Unit, timeout_s: float) -> None:
        host = unit.host

        def serving() -> str | bool:
            if host.daemon(DAEMON) is None:
                return "exited"
            return _stats(host) is not None and "serving"

        try:
            if wait_until(serving, timeout_s, 0.05, what="haproxy serving") == "serving":
                return
        except WaitTimeout:
            pass
        raise HostError(f"{unit.name}: haproxy did not start serving within {timeout_s:.0f} s: {log_tail(host, DAEMON, 3)}")

    def _wait_reloaded(self, unit: Unit, before: tuple[int, int] | None, timeout_s: float) -> None:
        host = unit.host

        def reloaded() -> bool:
            now = _master_reloads(host)
            if now is not None and before is not None and now[0] > before[0]:
                if now[1] > before[1]:
                    raise HostError(f"{unit.name}: haproxy reload failed (the old worker keeps serving): {log_tail(host, DAEMON, 3)}")
                return _stats(host) is not None
            # no master CLI to compare: best effort
            return before is None and _stats(host) is not None

        wait_until(reloaded, timeout_s, 0.05, error=lambda _: HostError(
            f"{unit.name}: haproxy did not finish reloading within {timeout_s:.0f} s: {log_tail(host, DAEMON, 3)}"))

    def recover(self, app: AppContext) -> list[str]:
        """Restart HAProxy where it died (the same as :meth:`apply`)."""
        return self.apply(app)

    # ----------------------------------------------------------------- observe
    def observe(self, app: AppContext) -> AppStatus:
        """Per unit: ``active`` when the daemon runs, its stats socket and health URL answer and
        every frontend has a server UP; ``waiting`` when a frontend has no server UP; ``error``
        (with the reason) when the host is off, haproxy is not running or does not answer.

        Unit facts: ``holds_vip`` (bool), ``backends`` — ``{frontend: {server: status}}`` with
        HAProxy's status strings (``UP``, ``DOWN``, ``UP 1/2`` going down, ``DOWN 1/2`` going up,
        ``MAINT`` …), ``writers`` — ``{frontend: server}`` for single-writer frontends (the first
        server UP in order: where writes go), ``health`` (HTTP code of the health URL), ``pid``
        (the master's).
        App facts: ``vip``, ``vip_holder`` (host name, or None; a list when several hosts hold
        it), ``backends`` as the VIP holder sees them.  Never changes anything; ≈ 50 ms per unit,
        units observed in parallel.
        """
        with ThreadPoolExecutor(max_workers=max(1, len(app.units))) as pool:
            statuses = list(pool.map(lambda u: self._observe_unit(app, u), app.units))
        holders = [u.host.name for u, s in zip(app.units, statuses) if s.facts.get("holds_vip")]
        facts: dict[str, Any] = {"vip": str(app.vip) if app.vip else None,
                                 "vip_holder": holders[0] if len(holders) == 1 else (holders or None)}
        for u, s in zip(app.units, statuses):
            if s.facts.get("holds_vip"):
                facts["backends"] = s.facts.get("backends", {})
                break
        if len(holders) > 1:
            facts["problems"] = [f"duplicate VIP {app.vip.ip}: held by {', '.join(holders)}"]
        return AppStatus(app=app.name, units=statuses, facts=facts)

    def _observe_unit(self, app: AppContext, unit: Unit) -> UnitStatus:
        host = unit.host
        facts: dict[str, Any] = {}
        try:
            if not host.is_on():
                return UnitStatus(unit.name, WorkloadState.ERROR, f"host {host.name} is powered off", facts)
            if app.vip is not None:
                facts["holds_vip"] = any(a.ip == app.vip.ip for a in host.addresses())
            d = host.daemon(DAEMON)
            if d is None:
                return UnitStatus(unit.name, WorkloadState.ERROR, f"haproxy is not running: {log_tail(host, DAEMON, 3)}", facts)
            facts["pid"] = d.pid
            rows = _stats(host)
            if rows is None:
                return UnitStatus(unit.name, WorkloadState.ERROR,
                                  f"haproxy runs (pid {d.pid}) but its stats socket does not answer", facts)
            code = host.run(["curl", "-s", "-o", "/dev/null", "-m", "1", "-w", "%{http_code}",
                             health_url(app)], timeout=5).stdout.strip()
            facts["health"] = code
            if code != "200":
                return UnitStatus(unit.name, WorkloadState.ERROR, f"health URL {health_url(app)} answered {code or 'nothing'}", facts)
        except HostDown:
            return UnitStatus(unit.name, WorkloadState.ERROR, f"host {host.name} is powered off", facts)
        except HostError as exc:
            return UnitStatus(unit.name, WorkloadState.UNKNOWN, f"cannot observe: {exc}", facts)
        backends = _backends(rows, [proxy_name(fe.name) for fe in app.frontends])
        facts["backends"] = backends
        writers = {}
        for fe in app.frontends:
            if fe.single_writer:
                up = [n for n, st in backends.get(proxy_name(fe.name), {}).items() if _is_up(st)]
                order = [proxy_name(n) for n, _ in fe.servers]
                writers[proxy_name(fe.name)] = next((n for n in order if n in up), None)
        if writers:
            facts["writers"] = writers
        empty = [fe for fe, servers in backends.items() if servers and not any(_is_up(s) for s in servers.values())]
        down = [f"{fe}/{s}" for fe, servers in backends.items() for s, st in servers.items() if not _is_up(st)]
        vip_note = ", holds the VIP" if facts.get("holds_vip") else ""
        if empty:
            return UnitStatus(unit.name, WorkloadState.WAITING,
                              f"no server UP behind {', '.join(empty)}{vip_note}", facts)
        msg = f"serving {len(backends)} frontend(s){vip_note}"
        if down:
            msg += f"; DOWN: {', '.join(down)}"
        return UnitStatus(unit.name, WorkloadState.ACTIVE, msg, facts)

    def frontends(self, app: AppContext) -> list[Frontend]:
        """HAProxy offers nothing through its own VIP: []."""
        return []


# --------------------------------------------------------------------------- helpers
def _is_up(status: str) -> bool:
    # "UP", "UP 1/2" (still UP, one check failed), "no check" (serving without checks)
    return status.startswith("UP") or status == "no check"


def _socket_cmd(host, socket: str, command: str, timeout: float = 3.0) -> str | None:
    """Send ``command`` to an HAProxy CLI socket on ``host`` with socat; its answer or None."""
    res = host.run(["socat", "-t", "1", "stdio", f"UNIX-CONNECT:{socket}"], input=command + "\n", timeout=timeout)
    if not res.ok or not res.stdout.strip():
        return None
    return res.stdout


def _stats(host) -> list[dict[str, str]] | None:
    """``show stat`` of the admin socket as CSV rows (dicts keyed by HAProxy's column names),
    or None when the socket does not answer."""
    out = _socket_cmd(host, ADMIN_SOCKET, "show stat")
    if out is None or not out.startswith("# "):
        return None
    return list(csv.DictReader(io.StringIO(out[2:])))


def _backends(rows: list[dict[str, str]], names: list[str]) -> dict[str, dict[str, str]]:
    """``{proxy: {server: status}}`` for the proxies in ``names`` (servers only: no FRONTEND or
    BACKEND aggregate rows)."""
    out: dict[str, dict[str, str]] = {n: {} for n in names}
    for row in rows:
        px, sv = row.get("pxname"), row.get("svname")
        if px in out and sv not in ("FRONTEND", "BACKEND"):
            out[px][sv] = row.get("status", "")
    return out


def _master_reloads(host) -> tuple[int, int] | None:
    """``(reloads, failed reloads)`` of the HAProxy master from ``show proc`` on the master CLI,
    or None when it does not answer (e.g. while it re-executes)."""
    out = _socket_cmd(host, MASTER_SOCKET, "show proc")
    if out is None:
        return None
    for line in out.splitlines():
        m = re.match(r"^\d+\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]", line)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None

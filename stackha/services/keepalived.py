"""keepalived: the VIP of a load-balancer pair, moved by VRRP.

A ``keepalived`` application is a subordinate of an ``haproxy`` application: its units run on the
HAProxy units' hosts, ``app.vip`` is the VIP (e.g. ``198.18.K.250/24``).  One VRRP instance per
application; every unit renders:

- ``/srv/keepalived/keepalived.conf`` — ``global_defs`` with ``enable_script_security`` and
  ``script_user root`` (LAB-NOTES: both work), the track script, one ``vrrp_instance`` with
  **unicast** peers (``unicast_src_ip`` = the unit's address, ``unicast_peer`` = the other units; no
  multicast ever leaves a host);
- ``/srv/keepalived/check_haproxy.sh`` — the track script: ``curl`` of HAProxy's health URL
  (:func:`stackha.services.haproxy.health_url`, ``monitor-uri`` answered by the HAProxy worker),
  never ``pidof`` (LAB-NOTES "Hosts": in namespaces pidof sees other hosts' processes).  Weight 0:
  a failing check puts the instance in FAULT, which releases the VIP at once (keepalived sends a
  priority-0 advert, so the peer takes over without waiting for the master-down timer);
- ``/srv/keepalived/notify.sh`` — writes each VRRP transition (MASTER/BACKUP/FAULT/STOP) to
  ``/run/keepalived-stackha/<instance>.state``, which :meth:`KeepalivedOperator.observe` reads.

The daemon ``keepalived`` is ``keepalived -n -l -D -G -P -f <conf> -p/-r/-c <own pid files>``:
no fork (``host.spawn`` tracks the parent), log to the console (the daemon log), VRRP subsystem
only, pid files under ``/run/keepalived-stackha`` (LAB-NOTES: separate pid files per instance).
A config change is applied with SIGHUP (keepalived reloads in place; the VIP stays where it is).

**Preemption policy: ``nopreempt``, every unit starts ``BACKUP``.**  Priorities still differ
(150, 140, … in unit order) so the first election is deterministic and a split brain heals towards
the higher unit, but a returning unit never takes the VIP back from a healthy master: each VIP move
costs a failover gap (measured below), and failing back would add a second, avoidable one — after
the host's own HAProxy and ARP caches were cold.  The VIP therefore stays where it landed until
that holder fails.

**Router id**: option ``router_id`` or :func:`allocate_router_id` (the VIP's last octet, probing
upwards past ids already taken).

Timers (``app.tuning``): see :data:`TIMERS`.
"""

from __future__ import annotations

import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from stackha.errors import InvalidInput
from stackha.hosts.base import CommandError, HostDown, HostError
from stackha.polling import wait_until
from stackha.services import haproxy as _haproxy
from stackha.model.options import allocate_router_id  # noqa: F401 (one rule for model and operator)
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

KIND = "keepalived"
KEEPALIVED_BIN = "/usr/sbin/keepalived"
CONFIG_DIR = "/srv/keepalived"
CONFIG_PATH = f"{CONFIG_DIR}/keepalived.conf"
CHECK_SCRIPT = f"{CONFIG_DIR}/check_haproxy.sh"
NOTIFY_SCRIPT = f"{CONFIG_DIR}/notify.sh"
RUN_DIR = "/run/keepalived-stackha"
DAEMON = "keepalived"
TOP_PRIORITY = 150
PRIORITY_STEP = 10
VRID_MIN, VRID_MAX = 1, 255
START_TIMEOUT_S = 10.0
STATES = ("MASTER", "BACKUP", "FAULT", "STOP")
_INSTANCE_RE = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class VrrpTimers:
    """VRRP and track-script timers of one tuning.

    ``version``: VRRP version (3 allows fractional ``advert_int``; keepalived's default is 2);
    ``advert_int_s``: advertisement interval (s) — a backup declares the master dead after
    3 × advert_int + skew, skew = (256 − priority) / 256 × advert_int (RFC 5798 §6.1);
    ``script_interval_s``/``script_timeout_s`` (s, integers: keepalived 2.2.7 refuses sub-second
    script intervals — verified: "vrrp script interval '0.2' must be between 1 and 4294"),
    ``script_fall``/``script_rise``: consecutive failures/successes to enter/leave FAULT;
    ``checks_per_run``/``check_rate_per_s``: how many health requests one run of the track script
    makes and at what rate (one ``curl --fail-early --rate R/s`` process: it exits non-zero at the
    first failure, so a run that covers most of the interval detects a dead HAProxy within
    1/R s instead of waiting for the next run); ``curl_max_time_s``: each request's own deadline; ``garp_*``: gratuitous ARPs sent on
    becoming MASTER (``garp_master_repeat`` at once, again after ``garp_master_delay_s``, and every
    ``garp_master_refresh_s`` while MASTER, 0 = never) so the switch and the clients' ARP caches learn
    the VIP's new MAC immediately; ``auto_priority_delay_us``: when set, ``max_auto_priority`` with
    ``min_auto_priority_delay`` — keepalived switches itself to realtime scheduling when it wakes
    up that late (µs) after a timer, so a busy host does not miss its own adverts (None: off, the
    keepalived default).
    """

    version: int
    advert_int_s: float
    script_interval_s: int
    script_timeout_s: int
    script_fall: int
    script_rise: int
    checks_per_run: int
    check_rate_per_s: int | None
    curl_max_time_s: float
    garp_master_delay_s: int
    garp_master_repeat: int
    garp_master_refresh_s: int
    auto_priority_delay_us: int | None = None

    def master_down_s(self, priority: int) -> float:
        """Seconds a backup of ``priority`` waits without adverts before it becomes MASTER."""
        return 3 * self.advert_int_s + (256 - priority) / 256 * self.advert_int_s

    def advert(self) -> str:
        """``advert_int`` as keepalived reads it (``0.2``, ``1``)."""
        return f"{self.advert_int_s:g}"


#: Timers of each tuning.
#:
#: ``stackha``: VRRPv3 with ``advert_int 0.2`` → a dead master (power-off, link loss) is replaced
#: after ≈ 0.65–0.7 s (3 × 0.2 + skew); 5 adverts/s per VIP is negligible traffic.  Smaller values
#: would make a busy 2-core lab flap.  Track script started every 1 s (the minimum keepalived
#: 2.2.7 accepts); each run polls the health URL 8 times at 10/s (≈ 0.75 s, timeout 2 s) and fails
#: at the first refused request, so a dead HAProxy is seen within ≈ 0.1 s when a run is under way
#: and ≤ 0.35 s otherwise (measured: runs start 1.0 s apart and last 0.76 s); FAULT on the first
#: failure (the health URL is local: it fails only when HAProxy is gone), back after 2 good runs.
#: Measured with 1 request per run, the VIP failover gap after an HAProxy kill was 0.23–1.13 s
#: (median 0.95 s over 7 runs) — the 1 s interval dominated.
#: GARP: 5 at once, again after 1 s, refreshed every 30 s.  Realtime scheduling on demand once
#: keepalived is woken ≥ 100 ms late (half an advert interval; verified to be allowed in lab hosts).
#:
#: ``stock``: what the anchors ship (seed 001: ``advert_int 1``, check ``interval 2``; keepalived
#: defaults otherwise: VRRPv2, fall 1, rise 1, GARP 5 at once and again after 5 s, no refresh).
TIMERS: dict[str, VrrpTimers] = {
    "stackha": VrrpTimers(version=3, advert_int_s=0.2, script_interval_s=1, script_timeout_s=2,
                          script_fall=1, script_rise=2, checks_per_run=8, check_rate_per_s=10,
                          curl_max_time_s=0.5, garp_master_delay_s=1,
                          garp_master_repeat=5, garp_master_refresh_s=30, auto_priority_delay_us=100_000),
    "stock": VrrpTimers(version=2, advert_int_s=1, script_interval_s=2, script_timeout_s=2,
                        script_fall=1, script_rise=1, checks_per_run=1, check_rate_per_s=None,
                        curl_max_time_s=1.5, garp_master_delay_s=5,
                        garp_master_repeat=5, garp_master_refresh_s=0),
}


def timers(tuning: str) -> VrrpTimers:
    """The :class:`VrrpTimers` of ``tuning`` ("stackha" or "stock"); InvalidInput otherwise."""
    return select_tuning(TIMERS, tuning)


def router_id(app: AppContext) -> int:
    """The application's virtual_router_id: option ``router_id`` (1–255, InvalidInput otherwise)
    or :func:`allocate_router_id` of its VIP."""
    if "router_id" in app.options and app.options["router_id"] is not None:
        try:
            vrid = int(app.options["router_id"])
        except (TypeError, ValueError):
            vrid = -1
        if not VRID_MIN <= vrid <= VRID_MAX:
            raise InvalidInput(f"{app.name}: router_id {app.options['router_id']!r} must be an integer 1-255")
        return vrid
    if app.vip is None:
        raise InvalidInput(f"{app.name}: keepalived needs a vip")
    return allocate_router_id(app.vip, ())


def instance_name(app: AppContext) -> str:
    """The ``vrrp_instance`` name: ``VI_<app>`` with non-word characters as ``_``."""
    return "VI_" + _INSTANCE_RE.sub("_", app.name)


def priority(app: AppContext, unit: Unit) -> int:
    """VRRP priority of ``unit``: 150 for the first unit, 10 less for each next one (min 1)."""
    return max(1, TOP_PRIORITY - PRIORITY_STEP * app.units.index(unit))


def _health_url(app: AppContext) -> str:
    lbs = app.related_of_kind(_haproxy.KIND)
    if "health_url" in app.options:
        return str(app.options["health_url"])
    return _haproxy.health_url(lbs[0]) if lbs else f"http://127.0.0.1:{_haproxy.HEALTH_PORT}{_haproxy.HEALTH_URI}"


class KeepalivedOperator(BaseOperator):
    """Operator of kind ``keepalived`` (see the module docstring: files, preemption, timers).

    Options: ``router_id`` (1–255, default :func:`allocate_router_id` of the VIP), ``interface``
    (default: each host's VIP interface — ``eth0`` in the lab, the inventory's ``interface`` over
    SSH), ``health_url`` (default: the related haproxy
    application's :func:`~stackha.services.haproxy.health_url`).  Needs ``app.vip`` and ≥ 2 units.
    """

    kind = KIND

    # ----------------------------------------------------------------- render
    def render(self, app: AppContext) -> dict[str, dict[str, RenderedFile]]:
        """``{unit: {path: file}}`` for keepalived.conf, check_haproxy.sh and notify.sh — pure.

        Raises :class:`InvalidInput` without a VIP, with fewer than 2 units, a bad router_id or
        tuning.
        """
        if app.vip is None:
            raise InvalidInput(f"{app.name}: keepalived needs a vip (e.g. 198.18.100.250/24)")
        if len(app.units) < 2:
            raise InvalidInput(f"{app.name}: a VIP pair needs at least 2 keepalived units, got {len(app.units)}")
        t = timers(app.tuning)
        vrid = router_id(app)
        name = instance_name(app)
        url = _health_url(app)
        check = render_template("keepalived/check_haproxy.sh.j2", url=shlex.quote(url), t=t,
                                max_time=f"{t.curl_max_time_s:g}")
        notify = render_template("keepalived/notify.sh.j2", run_dir=RUN_DIR)
        out: dict[str, dict[str, RenderedFile]] = {}
        for unit in app.units:
            conf = render_template(
                "keepalived/keepalived.conf.j2",
                app=app.name,
                unit=unit.name,
                tuning=app.tuning,
                t=t,
                lvs_id=unit.slug,
                instance=name,
                interface=str(app.options.get("interface") or unit.host.vip_interface),
                vrid=vrid,
                priority=priority(app, unit),
                src=str(unit.address),
                peers=[str(u.address) for u in app.units if u is not unit],
                vip=f"{app.vip.ip}/{app.vip.network.prefixlen}",
                check_script=CHECK_SCRIPT,
                notify_script=NOTIFY_SCRIPT,
            )
            out[unit.name] = {
                CONFIG_PATH: RenderedFile(conf, mode=0o644),
                CHECK_SCRIPT: RenderedFile(check, mode=0o755),
                NOTIFY_SCRIPT: RenderedFile(notify, mode=0o755),
            }
        return out

    # ----------------------------------------------------------------- apply
    def apply(self, app: AppContext) -> list[str]:
        """Install the files on every unit, start keepalived where it is not running, SIGHUP it
        where a file changed.  Idempotent: returns [] when nothing changed.

        Units on powered-off hosts are skipped, then :class:`HostDown` is raised naming them.
        Raises :class:`CommandError` when ``keepalived -t`` rejects the config,
        :class:`HostError` when the daemon dies at start or does not report a VRRP state in 10 s.
        """
        rendered = self.render(app)
        changes: list[str] = []
        down: list[str] = []
        for unit in app.units:
            if not unit.host.is_on():
                down.append(f"{unit.name} ({unit.host.name})")
                continue
            changes += self._apply_unit(app, unit, rendered[unit.name])
        if down:
            raise HostDown(f"{app.name}: cannot apply on powered-off host(s): {', '.join(down)}")
        return changes

    def _apply_unit(self, app: AppContext, unit: Unit, files: dict[str, RenderedFile]) -> list[str]:
        host = unit.host
        changed = install_files(host, files)
        host.run(["mkdir", "-p", "-m", "0755", RUN_DIR], check=True)
        running = host.daemon(DAEMON)
        if changed or running is None:
            res = host.run([KEEPALIVED_BIN, "-t", "-l", "-f", CONFIG_PATH], timeout=30)
            if not res.ok:
                raise CommandError(host.name, res)
        if running is None:
            host.run(["rm", "-f", _state_path(app)], check=True)
            host.spawn(DAEMON, [
                KEEPALIVED_BIN, "-n", "-l", "-D", "-G", "-P", "-f", CONFIG_PATH,
                "-p", f"{RUN_DIR}/keepalived.pid", "-r", f"{RUN_DIR}/vrrp.pid", "-c", f"{RUN_DIR}/checkers.pid",
            ])

            def reported() -> bool:
                if host.daemon(DAEMON) is None:
                    raise HostError(f"{unit.name}: keepalived exited: {log_tail(host, DAEMON, 2)}")
                return _read_state(host, app) is not None

            wait_until(reported, START_TIMEOUT_S, 0.05, error=lambda _: HostError(
                f"{unit.name}: keepalived reported no VRRP state in {START_TIMEOUT_S:.0f} s: {log_tail(host, DAEMON, 2)}"))
            return [f"{unit.name}: started keepalived on {host.name} (VRID {router_id(app)}, priority {priority(app, unit)})"]
        if changed:
            host.signal(DAEMON, "HUP")
            return [f"{unit.name}: reloaded keepalived ({', '.join(changed)})"]
        return []

    def recover(self, app: AppContext) -> list[str]:
        """Restart keepalived where it died (the same as :meth:`apply`)."""
        return self.apply(app)

    # ----------------------------------------------------------------- observe
    def observe(self, app: AppContext) -> AppStatus:
        """Which host holds the VIP (from ``host.addresses()``) and each unit's VRRP state.

        Unit states: ``active`` — MASTER holding the VIP, or BACKUP not holding it; ``blocked`` —
        FAULT (the track script fails: HAProxy is not healthy there); ``waiting`` — no VRRP state
        reported yet; ``error`` — host off, keepalived not running, MASTER without the VIP, a
        non-MASTER (or a dead keepalived) still holding the VIP, or a duplicate VIP.
        Unit facts: ``vrrp_state``, ``holds_vip``, ``priority``.  App facts: ``vip``,
        ``router_id``, ``vip_holder`` (host name or None), ``vip_holders`` (list),
        ``duplicate_vip`` (bool) and ``problems`` (list of sentences, empty when healthy).
        """
        vip = app.vip
        with ThreadPoolExecutor(max_workers=max(1, len(app.units))) as pool:
            raw = list(pool.map(lambda u: self._probe(app, u), app.units))
        holders = [u.host.name for u, r in zip(app.units, raw) if r.get("holds_vip")]
        problems: list[str] = []
        if len(holders) > 1:
            problems.append(f"duplicate VIP {vip.ip if vip else '?'}: held by {', '.join(holders)}")
        elif not holders:
            problems.append(f"no unit holds the VIP {vip.ip if vip else '?'}")
        statuses = []
        for unit, r in zip(app.units, raw):
            facts = {k: r[k] for k in ("vrrp_state", "holds_vip", "priority") if k in r}
            state, msg = r["state"], r["message"]
            if len(holders) > 1 and r.get("holds_vip"):
                others = [h for h in holders if h != unit.host.name]
                dup = f"duplicate VIP: {unit.host.name} and {', '.join(others)} both hold {vip.ip}"
                state, msg = WorkloadState.ERROR, dup if state == WorkloadState.ACTIVE else f"{dup}; {msg}"
            statuses.append(UnitStatus(unit.name, state, msg, facts))
        facts: dict[str, Any] = {
            "vip": str(vip) if vip else None,
            "router_id": router_id(app) if vip is not None or "router_id" in app.options else None,
            "vip_holder": holders[0] if len(holders) == 1 else None,
            "vip_holders": holders,
            "duplicate_vip": len(holders) > 1,
            "problems": problems,
        }
        return AppStatus(app=app.name, units=statuses, facts=facts)

    def vip_holders(self, app: AppContext) -> list[str]:
        """Names of the hosts whose interfaces carry the VIP right now (more than one: a duplicate
        VIP; empty: nobody holds it).  Only reads ``host.addresses()``: a few ms per unit."""
        out = []
        for u in app.units:
            try:
                if app.vip is not None and u.host.is_on() and any(a.ip == app.vip.ip for a in u.host.addresses()):
                    out.append(u.host.name)
            except HostError:
                pass
        return out

    def _probe(self, app: AppContext, unit: Unit) -> dict[str, Any]:
        host = unit.host
        r: dict[str, Any] = {"priority": priority(app, unit) if unit in app.units else None}
        try:
            if not host.is_on():
                return {**r, "holds_vip": False, "state": WorkloadState.ERROR, "message": f"host {host.name} is powered off"}
            holds = app.vip is not None and any(a.ip == app.vip.ip for a in host.addresses())
            r["holds_vip"] = holds
            if host.daemon(DAEMON) is None:
                msg = "keepalived is not running"
                if holds:
                    msg += f", yet the VIP {app.vip.ip} is still configured here"
                return {**r, "state": WorkloadState.ERROR, "message": f"{msg}: {log_tail(host, DAEMON, 2)}"}
            vrrp = _read_state(host, app)
        except HostDown:
            return {**r, "holds_vip": False, "state": WorkloadState.ERROR, "message": f"host {host.name} is powered off"}
        except HostError as exc:
            return {**r, "state": WorkloadState.UNKNOWN, "message": f"cannot observe: {exc}"}
        r["vrrp_state"] = vrrp
        vip = app.vip.ip if app.vip else None
        if vrrp is None:
            return {**r, "state": WorkloadState.WAITING, "message": "keepalived runs; no VRRP state reported yet"}
        if vrrp == "MASTER":
            if holds:
                return {**r, "state": WorkloadState.ACTIVE, "message": f"MASTER, holds VIP {vip}"}
            return {**r, "state": WorkloadState.ERROR, "message": f"MASTER but VIP {vip} is not configured"}
        if holds:
            return {**r, "state": WorkloadState.ERROR, "message": f"{vrrp} but VIP {vip} is still configured here"}
        if vrrp == "FAULT":
            return {**r, "state": WorkloadState.BLOCKED,
                    "message": f"FAULT: track script fails (HAProxy health {_health_url(app)} not answering)"}
        if vrrp == "BACKUP":
            return {**r, "state": WorkloadState.ACTIVE, "message": "BACKUP"}
        return {**r, "state": WorkloadState.ERROR, "message": f"VRRP state {vrrp}"}


# --------------------------------------------------------------------------- helpers
def _state_path(app: AppContext) -> str:
    return f"{RUN_DIR}/{instance_name(app)}.state"


def _read_state(host, app: AppContext) -> str | None:
    """The last VRRP state the notify script recorded (MASTER/BACKUP/FAULT/STOP), or None."""
    raw = host.read_file(_state_path(app))
    if not raw:
        return None
    word = raw.decode(errors="replace").split()[0] if raw.split() else ""
    return word if word in STATES else None

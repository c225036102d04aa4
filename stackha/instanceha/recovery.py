"""stackha's glue around Masakari: fence a failed compute host, force it down, notify Masakari,
follow the recovery; re-admit a repaired host.

Masakari's engine, given a COMPUTE_HOST notification, disables the host's compute service, sleeps
``wait_period_after_service_update`` (stock 180 s) to outwait Nova's heartbeat window and only
then evacuates (LAB-NOTES "Masakari").  stackha closes that window itself, in the order measured
in LAB-NOTES ("OpenStack services": force down first, then disable, then evacuate):

1. **fence** the host (the lab: cgroup.kill + link down, :meth:`Host.power_off`; a real machine:
   its fence device).  Nothing may be evacuated from a host that might still run its instances:
   two copies of one disk image would corrupt it;
2. **force down** its nova-compute service (compute API ≥ 2.11; ``forced_down`` makes Nova
   treat the service as down at once, so it accepts evacuations and does not call the dead host
   when the engine disables the service);
3. **notify** Masakari (COMPUTE_HOST, STOPPED, host_status NORMAL — what masakari-hostmonitor
   sends for a powered-off host): the engine disables the service, picks the target per the
   segment's recovery method and evacuates; with stackha's tuning it waits 0 s.

That is the path when stackha is *told* a host failed (``stackha instance-ha host-down``, the
verify scenarios).  With the compute hosts in a Pacemaker cluster (examples/lab-instance-ha-
monitors.yaml) nobody has to tell: the cluster fences the host (level: power, then
``fence_stackha_nova``'s force-down), masakari-hostmonitor on the cluster nodes notifies
Masakari, and the engine waits until Nova reports the host forced down before it disables and
evacuates.
:func:`detection` gathers the evidence of that path (fence times, the notification).

:func:`readmit` is the way back (seed 004): the compute service enabled, forced_down cleared,
``on_maintenance`` cleared on the host's Masakari entries.
"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import dataclass, field
from typing import Any

from stackha.errors import UserError
from stackha.polling import WaitTimeout, wait_until
from stackha.services.base import AppContext

#: Notification states after which Masakari does nothing more (masakari/objects/fields.py).
FINAL_STATES = ("finished", "failed", "ignored")


@dataclass
class HostFailure:
    """What :func:`host_failed` did: ``host``; seconds from ``started_at`` (``time.time()``
    when it began) until the fence was done (``fenced_s``, None when the host was fenced
    elsewhere), Nova answered the force-down (``forced_down_s``, None when not forced down) and Masakari accepted the
    notification (``notified_s``; None when ``notify`` was off) — the openstacksdk script's
    start-up included; ``notification``: Masakari's notification uuid."""

    host: str
    fenced_s: float | None
    forced_down_s: float | None
    notified_s: float | None
    notification: str | None
    started_at: float = 0.0


def masakari_app(d) -> AppContext:
    """The masakari application of deployment ``d``; :class:`UserError` when it has none."""
    for ctx in d.contexts().values():
        if ctx.kind == "masakari":
            return ctx
    raise UserError(f"deployment {d.name!r} has no masakari application: add one (examples/lab-instance-ha.yaml)")


def _api(d, action: str, *, timeout_s: float = 180, **payload: Any) -> Any:
    from stackha.services import operator_for

    return operator_for("masakari").api(masakari_app(d), action, timeout_s=timeout_s, **payload)


def compute_host(d, name: str):
    """The compute host called ``name`` (a Nova host name = the machine's host name) of
    deployment ``d``; :class:`UserError` naming the compute hosts otherwise."""
    hosts = {u.host.name: u.host for c in d.contexts().values() if c.kind == "nova-compute" for u in c.units}
    if name not in hosts:
        raise UserError(f"{name!r} is not a compute host of {d.name!r} (compute hosts: {', '.join(sorted(hosts))})")
    return hosts[name]


def host_failed(d, name: str, *, fence: bool = True, notify: bool = True, force_down: bool = True) -> HostFailure:
    """Fence compute host ``name`` (unless ``fence`` is False: it was fenced already), force its
    compute service down in Nova and post a COMPUTE_HOST notification to Masakari (module
    docstring).  ``force_down=False`` leaves Nova's service alone — Masakari's stock path, where
    the engine outwaits Nova's heartbeat window (bench/instanceha.py's baseline; its
    ``forced_down_s`` is then None).  Returns a :class:`HostFailure` with the times.  Raises :class:`UserError` for an
    unknown host, :class:`stackha.services.openstack.operator.ServiceError` when Nova or Masakari
    refused (e.g. HTTP 409: a notification for this host within
    ``duplicate_notification_detection_interval``, or the host on maintenance)."""
    host = compute_host(d, name)
    t0 = time.time()  # the lab's hosts share this clock; the script reports time.time() too
    fenced_s = None
    if fence:
        host.power_off()
        fenced_s = time.time() - t0
    elif host.is_on():
        raise UserError(f"{name} is still on: fence it first (or leave fencing to stackha)")
    out = _api(d, "host_down", host=name, notify=notify, force_down=force_down)
    return HostFailure(host=name, fenced_s=fenced_s,
                       forced_down_s=out["forced_down_at"] - t0 if out["forced_down_at"] else None,
                       notified_s=out["notified_at"] - t0 if out["notified_at"] else None,
                       notification=out["notification"], started_at=t0)


def notification(d, uuid: str) -> dict:
    """Masakari's view of notification ``uuid``: ``{"status", "type", "hostname", "payload"}``."""
    return _api(d, "notification", id=uuid)


def wait_notification(d, uuid: str, deadline_s: float = 600.0, interval_s: float = 1.0) -> dict:
    """Poll notification ``uuid`` until Masakari is done with it (finished, failed or ignored);
    its last state.  Raises :class:`UserError` after ``deadline_s`` seconds."""
    try:
        return wait_until(lambda: (lambda n: n if n["status"] in FINAL_STATES else None)(notification(d, uuid)),
                          deadline_s, interval_s, what=f"Masakari notification {uuid} to finish")
    except WaitTimeout as exc:
        raise UserError(str(exc)) from None


ENGINE_DAEMON = "masakari-engine"
#: Where a masakari-engine logs "Processing notification <uuid>" (Debian's log dir, or stackha's).
ENGINE_LOGS = ("/var/log/masakari", "/srv/stackha/log")


#: Seconds after a notification was accepted by which the engine that took it has logged so
#: (it logs before it marks the notification running; ≈ 1 s on the lab).
ORPHAN_GRACE_S = 10.0


def engine_of(d, uuid: str):
    """``(host, pid)`` of the masakari-engine process that logged that it processes notification
    ``uuid`` (masakari/engine/manager.py: "<date> <time> <pid> INFO … Processing notification
    <uuid>"); None when no masakari host that is on has logged it (a host that is off cannot be
    read)."""
    for u in masakari_app(d).units:
        if not u.host.is_on():
            continue
        res = u.host.run(["grep", "-rhF", f"Processing notification {uuid}", *ENGINE_LOGS], timeout=10)
        fields = res.stdout.split() if res.ok else []
        if len(fields) > 2 and fields[2].isdigit():
            return u.host, int(fields[2])
    return None


def orphaned_by(d, accepted_s_ago: float, found) -> list[str]:
    """The masakari hosts whose dead engine left a ``running`` notification orphaned; empty while
    its engine lives.  ``found`` is :func:`engine_of`'s answer for it: that engine is dead when
    its host is off or the host's masakari-engine daemon is another process (killed, maybe
    restarted since).  With no readable log line ``ORPHAN_GRACE_S`` s after the notification was
    accepted (``accepted_s_ago``), the engine that took it was on a masakari host that is off."""
    if found is not None:
        host, pid = found
        daemon = host.daemon(ENGINE_DAEMON) if host.is_on() else None
        return [] if daemon is not None and daemon.pid == pid else [host.name]
    off = [u.host.name for u in masakari_app(d).units if not u.host.is_on()]
    return off if accepted_s_ago > ORPHAN_GRACE_S else []


#: Marks one orphaned notification failed through Masakari's own object layer (what the engine's
#: _check_expired_notifications does after notifications_expired_interval, 24 h); argv[1] is the
#: uuid.  Run as the masakari user with Masakari's config (no credentials pass through stackha).
FAIL_ORPHAN = (
    "import sys, masakari.conf; from masakari import context, objects; "
    "C = masakari.conf.CONF; C(['--config-file', '/etc/masakari/masakari.conf'], project='masakari'); "
    "objects.register_all(); n = objects.Notification.get_by_uuid(context.get_admin_context(), sys.argv[1]); "
    "n.status = 'failed' if n.status == 'running' else n.status; n.save(); print(n.status)"
)


def fail_orphaned(d, uuid: str) -> str:
    """Mark notification ``uuid``, left ``running`` by a dead engine, failed — now rather than
    after Masakari's notifications_expired_interval (24 h).  While it is ``running`` Masakari
    refuses every host update in its segment (HTTP 409 HostInUse, masakari/ha/api.py
    is_failover_segment_under_recovery), so the host's on_maintenance flag could not be cleared for
    a re-run.  Uses Masakari's own objects on a masakari unit that is on; returns the status it
    left.  Raises :class:`UserError` when no unit is on or the script fails."""
    for u in masakari_app(d).units:
        if u.host.is_on():
            res = u.host.run(["/usr/bin/python3", "-c", FAIL_ORPHAN, uuid], user="masakari", timeout=60)
            if not res.ok:
                raise UserError(f"could not mark notification {uuid} failed on {u.host.name}: "
                                f"{res.stderr.strip().splitlines()[-1:] or res.stdout.strip()}")
            return res.stdout.strip().splitlines()[-1]
    raise UserError("no masakari unit is on to mark the orphaned notification failed")


def duplicate_window_s(app: AppContext) -> float:
    """Masakari's duplicate_notification_detection_interval (s) under ``app``'s tuning."""
    from stackha.services.base import select_tuning
    from stackha.services.openstack.masakari import ENGINE

    return float(select_tuning(ENGINE, app.tuning)["duplicate_notification_detection_interval"])


@dataclass
class Followed:
    """What :func:`follow_notification` saw: the last notification's ``status`` and every
    notification posted for the failure in order (``notifications``: the first, then re-runs);
    ``reruns``: one ``{"notification", "dead_engine", "after_s"}`` per re-run (``after_s``
    seconds after the failure began)."""

    status: str
    notifications: list[str]
    reruns: list[dict]


def follow_notification(d, failure: HostFailure, deadline_s: float = 600.0, interval_s: float = 0.5,
                        max_reruns: int = 2) -> Followed:
    """Follow ``failure``'s notification until Masakari is done with it; when the engine that
    runs it dies, re-run it.  Masakari marks a notification whose engine died while it was
    ``running`` as failed only after ``notifications_expired_interval`` (24 h) and never retries it
    (LAB-NOTES "Masakari"), so the host's instances would stay down: stackha restarts the dead
    engine (:meth:`Deployment.recover` of the masakari application), marks the orphan failed
    (:func:`fail_orphaned`: while it runs, Masakari refuses any host update in the segment) and
    posts the notification again once Masakari's duplicate window has passed (on_maintenance
    cleared; the wait is in ``reruns``); Masakari's flow then
    evacuates what is still on the failed host.  At most ``max_reruns`` re-runs.  Raises
    :class:`UserError` after ``deadline_s`` seconds."""
    uuid = failure.notification
    chain, reruns, engine = [uuid], [], None
    posted_at = failure.started_at + (failure.notified_s or 0.0)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        n = notification(d, uuid)
        if n["status"] in FINAL_STATES:
            return Followed(n["status"], chain, reruns)
        if n["status"] == "running":
            engine = engine or engine_of(d, uuid)
            dead = orphaned_by(d, time.time() - posted_at, engine)
            if dead and len(reruns) < max_reruns:
                app = masakari_app(d)
                if any(d.host(name).is_on() for name in dead):  # killed, not powered off: restart it
                    d.recover({app.name})
                fail_orphaned(d, uuid)
                window = duplicate_window_s(app)
                out = _api(d, "host_down", host=failure.host, rerun_of=uuid, duplicate_interval_s=window,
                           timeout_s=window + 180)
                posted_at = time.time()
                reruns.append({"notification": out["notification"], "dead_engine": ",".join(dead),
                               "after_s": round(time.time() - failure.started_at, 2),
                               "waited_duplicate_window_s": out.get("rerun_waited_s", 0.0)})
                uuid, engine = out["notification"], None
                chain.append(uuid)
                continue
        time.sleep(interval_s)
    raise UserError(f"Masakari notification {uuid} not done after {deadline_s:.0f} s (notifications: {', '.join(chain)})")


def segments(d) -> list[dict]:
    """Every failover segment with its hosts (``masakari_api``'s ``segments`` shape)."""
    return _api(d, "segments")


#: Applications with a unit on a re-admitted host that are recovered first (their daemons started).
READMIT_KINDS = ("nova-compute", "pacemaker-remote", "masakari-monitors")


def readmit(d, name: str) -> list[str]:
    """Re-admit repaired compute host ``name`` (seed 004): in Nova its compute service enabled and
    forced_down cleared, in Masakari on_maintenance cleared.  The host must be on; its
    nova-compute, pacemaker-remoted and masakari-hostmonitor are started first when they are not
    running, and its Pacemaker connection is cleaned up so the cluster reconnects at once
    (:meth:`Deployment.recover` of those applications).  Returns
    what changed.  Raises :class:`UserError` when the host is off or unknown."""
    host = compute_host(d, name)
    if not host.is_on():
        raise UserError(f"{name} is powered off: power it on (and repair it) before re-admitting it")
    ctxs = d.contexts().values()
    apps = {c.name for c in ctxs if c.kind in READMIT_KINDS and any(u.host.name == name for u in c.units)}
    # the cluster of a Pacemaker Remote node cleans its connection up: it reconnects at once
    apps |= {h.name for c in ctxs if c.name in apps for h in c.related_of_kind("hacluster")}
    changes = [f"{app}: {c}" for app, cs in d.recover(apps).items() for c in cs]
    return changes + _api(d, "readmit", host=name)["changes"]


def boot_ha_servers(d, host: str, count: int, name: str, deadline_s: float = 600.0) -> list[str]:
    """Boot ``count`` servers named ``name`` with ``HA_Enabled=True`` on compute host ``host``
    (no network; a 64 KiB image and a 64 MiB flavor made once) and wait until all are ACTIVE.
    Their IDs.  Raises ServiceError when one goes ERROR or ``deadline_s`` (s) passes."""
    return _api(d, "boot", host=compute_host(d, host).name, count=count, name=name, deadline_s=deadline_s,
                timeout_s=deadline_s + 120)["ids"]


@dataclass
class Evacuation:
    """Where the servers of a failed host ended: ``done_s`` seconds after ``started_at`` when
    the last one was ACTIVE (no task) on another host, None when that never happened within the
    deadline (no evidence of a recovery); ``active_s``: per server; ``where``: server ID →
    [host, status, task_state] at the end."""

    done_s: float | None
    active_s: dict[str, float]
    where: dict[str, list]


def wait_evacuated(d, failure: HostFailure, ids: list[str], deadline_s: float = 600.0,
                   interval_s: float = 0.5) -> Evacuation:
    """Poll Nova (one server list every ``interval_s`` s, from a keystone unit through the VIP) until every server
    in ``ids`` is ACTIVE with no task on a host other than ``failure.host``, or ``deadline_s``
    seconds pass.  Times are from ``failure.started_at`` (the fence)."""
    out = _api(d, "wait_evacuated", host=failure.host, ids=ids, deadline_s=deadline_s, interval_s=interval_s,
               timeout_s=deadline_s + 60)
    t0 = failure.started_at
    return Evacuation(done_s=out["done_at"] - t0 if out["done_at"] else None,
                      active_s={i: t - t0 for i, t in out["active_elsewhere_at"].items()}, where=out.get("where", {}))


def delete_servers(d, ids: list[str]) -> None:
    """Delete the servers in ``ids`` and wait until Nova lists none of them."""
    if ids:
        _api(d, "delete_servers", ids=ids, timeout_s=360)


def evacuation_starts(d, ids: list[str]) -> dict[str, list[float]]:
    """Server ID → start times (s since the epoch, whole seconds as Nova stores them) of its
    ``evacuate`` instance actions: when Nova's API accepted each evacuation."""
    return _api(d, "evacuations", ids=ids)


def reserve(d, name: str) -> list[str]:
    """Make compute host ``name`` a reserved host again: disabled in Nova, ``reserved`` in its
    Masakari segments.  Returns what changed."""
    return _api(d, "reserve", host=compute_host(d, name).name)["changes"]


@dataclass
class Detection:
    """Evidence that the cloud found, fenced and reported failed compute host ``host`` by itself
    (times in s since the epoch; None: no evidence).

    ``fence_completed_at``: Pacemaker's fence history (action off, success) — whole seconds, as
    crm_mon prints them; ``power_off_at``: the lab fence gateway's record of the power fence (ms;
    None off the lab); ``forced_down_at``: ``fence_stackha_nova``'s log line (ms);
    ``notifications``: Masakari's COMPUTE_HOST notifications for the host (masakari_api's
    ``host_notifications`` shape), oldest first."""

    host: str
    fence_completed_at: float | None = None
    power_off_at: float | None = None
    forced_down_at: float | None = None
    notifications: list[dict] = field(default_factory=list)


def _iso(text: str) -> float:
    """crm_mon's / the agent's UTC time text ("2026-12-08 04:06:29Z", ISO 8601) → s since the epoch."""
    t = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace(" ", "T", 1))
    return (t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)).timestamp()


def monitored(d, name: str) -> bool:
    """Whether compute host ``name`` is a Pacemaker Remote node of a cluster with its force-down
    level (it is fenced and reported without stackha: see the module docstring)."""
    from stackha.services import pacemaker as pcmk

    return any(c.kind == pcmk.KIND and pcmk.force_down_device(c) is not None
               and any(r.name == name for r in pcmk.remote_nodes(c)) for c in d.contexts().values())


def detection(d, name: str, since: float) -> Detection:
    """What the cluster and Masakari did about compute host ``name`` since ``since`` (s since the
    epoch): see :class:`Detection`.  Reads crm_mon and the force-down log on the powered-on
    cluster nodes, the lab's fence history, and Masakari through the VIP."""
    from stackha.hosts.base import HostError
    from stackha.services import pacemaker as pcmk

    host = compute_host(d, name)
    out = Detection(host=name)
    for c in d.contexts().values():
        if c.kind != pcmk.KIND or not any(r.name == name for r in pcmk.remote_nodes(c)):
            continue
        view = pcmk.HAClusterOperator().best_view(c)
        done = [_iso(e.completed) for e in (view.fence_history if view else [])
                if e.target == name and e.action == "off" and e.status == "success" and e.completed]
        out.fence_completed_at = min((t for t in done if t >= since - 1), default=None)
        for u in c.units:
            try:
                raw = u.host.read_file(pcmk.NOVA_FENCE_LOG) if u.host.is_on() else None
            except HostError:  # a node that is off or unreachable has nothing to tell
                raw = None
            for line in (raw or b"").decode(errors="replace").splitlines():
                rec = json.loads(line)
                t = _iso(rec["time"])
                if rec["host"] == name and rec["action"] == "off" and rec["ok"] and t >= since:
                    out.forced_down_at = min(out.forced_down_at or t, t)
    lab = getattr(host, "lab", None)
    if lab is not None:
        from stackha.hosts import labfence

        path = labfence.history_path(lab)
        lines = path.read_text().splitlines() if path.exists() else []
        offs = [r["t"] for r in map(json.loads, lines)
                if r["target"] == host.name and r["action"] == "off" and r["t"] >= since and r["result"].startswith("ok")]
        out.power_off_at = min(offs, default=None)
    out.notifications = _api(d, "host_notifications", host=name, since=since)
    return out

"""Instance HA scenarios for ``stackha verify`` (issue 14): a compute host running HA_Enabled
servers fails, stackha fences it, forces it down and notifies Masakari
(:func:`stackha.instanceha.recovery.host_failed`), and Masakari's engine evacuates.

- ``instance-ha-compute-poweroff``: the host loses power.
- ``instance-ha-engine-kill``: the host loses power and the masakari-engine running the
  notification is killed with SIGKILL as soon as it logged it.  Masakari would leave that
  notification ``running`` for 24 h and never retry it; stackha's
  :func:`~stackha.instanceha.recovery.follow_notification` restarts the engine and re-runs the
  notification, and the run fails unless it did and every server came back.
- ``instance-ha-controller-poweroff``: the same, but the controller whose engine runs the
  notification loses power (with its Galera node, RabbitMQ node and API units); the notification
  is re-run on another engine and the controller is powered on again after the run.
- ``instance-ha-compute-partition``: the host is cut off the network but keeps running (its
  nova-compute process alive, its servers still "running" there).  Evacuating now would run each
  server twice; the run proves the order from the cloud's own records: the fence completed
  before Nova's API accepted the first ``evacuate`` action of any of the host's servers (Nova's
  instance actions, ``GET /servers/{id}/os-instance-actions``; the lab's hosts share one clock).

What a run measures (:class:`~stackha.verify.scenarios.RunReport` ``extra``): the fence, the
force-down and the notification (s after the fault), the first evacuation Nova accepted, and the
time until every HA server is ACTIVE (no task) on another host (``all_active_s``; polled every
0.5 s).  Instances never on two hosts at once: every evacuation started after the fence.  The lab's
computes run Nova's fake driver, so "running twice" cannot be observed directly; the order of
fence and evacuation is what rules it out.

When the victim is a Pacemaker Remote node with the force-down level
(examples/lab-instance-ha-monitors.yaml; :func:`stackha.instanceha.recovery.monitored`), nobody is
told: the run only applies the fault, and reads from the cloud's records (:func:`detected`) when
Pacemaker's power fence and force-down happened and when a masakari-hostmonitor's notification
arrived — the figures then include detection, and the partition scenario proves that the
cluster, not stackha, powered the cut-off host off before any evacuation.  Otherwise stackha is
told at once (``host_failed``): the figures are fence → recovery, without detection.

After each run the servers are deleted, the host is healed and powered on, re-admitted
(:func:`~stackha.instanceha.recovery.readmit`), and a reserved host Masakari used is reserved
again, so runs repeat from the same state.
"""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from stackha.errors import UserError
from stackha.hosts.base import HostError

#: HA servers booted on the victim per run.
SERVERS = 4
#: Target for ``all_active_s`` (s, fence → every server ACTIVE elsewhere) for :data:`SERVERS`
#: servers; measured 13–25 s on a quiet lab (tests/lab/test_instance_ha_lab.py).
TARGET_S = 30.0
DEADLINE_S = 300.0
#: Nova stores an instance action's start_time in a MySQL DATETIME: whole seconds (truncated), so
#: a recorded start S means the evacuation began in [S, S + 1).
NOVA_TIME_RESOLUTION_S = 1.0


def pick_victim(d) -> tuple[str, set[str]]:
    """The first compute host of the first enabled segment that is not reserved, not on
    maintenance and on; and the segment's reserved hosts.  :class:`UserError` when none."""
    from stackha.instanceha import recovery

    for seg in recovery.segments(d):
        if seg["enabled"] is False:
            continue
        reserved = {h["name"] for h in seg["hosts"] if h["reserved"]}
        for h in seg["hosts"]:
            if not h["reserved"] and not h["on_maintenance"] and recovery.compute_host(d, h["name"]).is_on():
                return h["name"], reserved
    raise UserError(f"{d.name}: no failover segment has a compute host that is on, not reserved and not on maintenance")


def runner(kind: str) -> Callable:
    """A :attr:`~stackha.verify.scenarios.Scenario.runner` for ``kind`` "poweroff", "partition",
    "engine-kill" or "controller-poweroff" (module docstring)."""

    def run(d, s, run_no: int, out_dir: Path, say: Callable[[str], None]):
        from stackha.instanceha import recovery
        from stackha.verify.faults import recover_until_active
        from stackha.verify.scenarios import RECOVERY_DEADLINE_S, RunReport, _run_id

        rep = RunReport(scenario=s.name, run=run_no, run_id=_run_id(s, run_no), lab=d.name, tuning=d.tuning,
                        started=time.time(), description=s.description)
        out_dir.mkdir(parents=True, exist_ok=True)
        ids: list[str] = []
        victim, reserved_before, problems = None, set(), []
        try:
            victim, reserved_before = pick_victim(d)
            host = recovery.compute_host(d, victim)
            ids = recovery.boot_ha_servers(d, victim, SERVERS, f"verify-ih-{run_no}-{secrets.token_hex(2)}")
            say(f"{SERVERS} HA servers ACTIVE on {victim}")
            t_fault = time.time()
            facts: dict = {"victim": victim, "servers": SERVERS}
            if kind == "partition":
                host.partition()
                rep.fault = f"cut {victim} off the network, then fence it"
                alive = host.run(["pgrep", "-f", "nova-compute"], timeout=10)
                facts["nova_compute_alive_when_cut"] = alive.ok
                if not alive.ok:
                    problems.append("the cut-off host's nova-compute was not running: nothing to fence")
            else:
                rep.fault = f"power off {victim}"
            if recovery.monitored(d, victim):  # nobody tells: the cluster fences, a host monitor notifies
                facts["detected_by"] = "pacemaker + masakari-hostmonitor"
                if kind != "partition":
                    host.power_off()  # the fault itself (told, host_failed's fence does it)
                fail = detected(d, victim, t_fault)
            else:
                facts["detected_by"] = "told (stackha instance-ha host-down)"
                fail = recovery.host_failed(d, victim)  # the fence: power off (also for a cut-off host)
            say(f"notification {fail.notification} at {fail.notified_s:.1f} s after the "
                f"{'fault' if facts['detected_by'].startswith('pacemaker') else 'fence'}")
            if kind in ("engine-kill", "controller-poweroff"):
                facts.update(kill_engine(d, fail, t_fault, say, power_off=kind == "controller-poweroff"))
            with ThreadPoolExecutor(1) as pool:  # stackha follows (and re-runs) while Nova is polled
                followed = pool.submit(recovery.follow_notification, d, fail, DEADLINE_S + 60)
                ev = recovery.wait_evacuated(d, fail, ids, deadline_s=DEADLINE_S)
                note = followed.result()
            facts.update(notifications=note.notifications, reruns=note.reruns)
            if facts["detected_by"].startswith("pacemaker"):  # the fence, from the cloud's records
                det = recovery.detection(d, victim, t_fault)
                fail.fenced_s = None if det.power_off_at is None else det.power_off_at - t_fault
                fail.forced_down_s = None if det.forced_down_at is None else det.forced_down_at - t_fault
                if fail.fenced_s is None or fail.forced_down_s is None:
                    problems.append(f"no evidence of the fence: power fence {det.power_off_at}, force-down {det.forced_down_at}")
            fence_done = fail.started_at + (fail.fenced_s or 0.0)
            rep.extra = {"facts": facts, "t_fault": t_fault}  # kept if what follows raises
            facts.update(all_active_s=None if ev.done_s is None else round(fail.started_at + ev.done_s - t_fault, 2),
                         notification_status=note.status)
            starts = recovery.evacuation_starts(d, ids)
            first = min((t for ts in starts.values() for t in ts), default=None)
            facts.update(fenced_s=None if fail.fenced_s is None else round(fence_done - t_fault, 3),
                         forced_down_s=None if fail.forced_down_s is None else round(fail.started_at + fail.forced_down_s - t_fault, 2),
                         notified_s=round(fail.started_at + fail.notified_s - t_fault, 2),
                         first_evacuate_s=None if first is None else round(first - t_fault, 2),
                         per_server_s={i: round(fail.started_at + v - t_fault, 2) for i, v in ev.active_s.items()},
                         notification=fail.notification,
                         evacuations={i: len(ts) for i, ts in starts.items()},
                         targets=sorted({w[0] for w in ev.where.values() if w and w[0]}))
            say(f"every HA server ACTIVE elsewhere at {facts['all_active_s']} s; first evacuation accepted at "
                f"{facts['first_evacuate_s']} s, the fence done at {facts['fenced_s']} s")
            if ev.done_s is None:
                problems.append(f"no evidence: {len(ev.active_s)} of {SERVERS} servers ACTIVE elsewhere after {DEADLINE_S:.0f} s")
            if note.status != "finished":
                problems.append(f"notification {note.status}")
            if kind in ("engine-kill", "controller-poweroff") and not note.reruns:
                problems.append("the killed engine's notification was not re-run")
            if first is None:
                problems.append("no evidence: Nova recorded no evacuate action")
            elif first + NOVA_TIME_RESOLUTION_S <= fence_done:
                problems.append(f"an evacuation started {fence_done - first:.2f} s BEFORE the fence completed")
            elif first < fence_done:
                problems.append("no evidence of the order: Nova's first evacuate action and the fence fall in the "
                                "same second (Nova keeps whole seconds)")
            val = facts["all_active_s"]
            rep.expectations = [{"target": f"fence → {SERVERS} HA servers ACTIVE elsewhere ≤ {TARGET_S:.0f} s",
                                 "probe": "instance-ha", "metric": "all_active_s", "limit": TARGET_S, "value": val,
                                 "met": val is not None and val <= TARGET_S,
                                 "why": "" if val is not None and val <= TARGET_S else ("no value" if val is None else f"{val:g} > {TARGET_S:g}")}]
        except Exception as exc:  # the run fails with the reason; other scenarios still run
            problems.append(str(exc) if isinstance(exc, (UserError, HostError)) else f"{type(exc).__name__}: {exc}")
        finally:
            off = [u.host for u in recovery.masakari_app(d).units] if kind == "controller-poweroff" else []
            for h in (h for h in off if not h.is_on()):
                try:
                    h.power_on()
                except Exception as exc:
                    problems.append(f"restore: power on {h.name}: {exc}")
            problems += _restore(d, victim, ids, reserved_before, say)
        say("stackha recovery (Deployment.recover) until every unit is active")
        recovery_ = recover_until_active(d, RECOVERY_DEADLINE_S, progress=say)
        rep.recovery, rep.recovery_s = recovery_.to_dict(), recovery_.seconds
        if recovery_.seconds is None:
            problems.append("not recovered: " + "; ".join(recovery_.not_active))
        if problems:
            rep.verdict, rep.error = "problems", "; ".join(problems)
        path = out_dir / f"{rep.run_id}.json"
        rep.files = {"report": str(path)}
        path.write_text(json.dumps(rep.to_dict(), indent=2, default=str))
        return rep

    return run


def detected(d, victim: str, t_fault: float, deadline_s: float = 90.0):
    """Wait (polling Masakari every 0.5 s, up to ``deadline_s`` s) until a host monitor's
    notification for ``victim`` arrived; a :class:`~stackha.instanceha.recovery.HostFailure` with
    its time counted from ``t_fault`` — the fence's times are read after the recovery
    (:func:`stackha.instanceha.recovery.detection`), so an engine can be killed while it runs the
    notification.  Raises :class:`UserError` when none came (no evidence)."""
    from stackha.instanceha import recovery
    from stackha.polling import WaitTimeout, wait_until

    try:
        found = wait_until(lambda: recovery._api(d, "host_notifications", host=victim, since=t_fault) or None,
                           deadline_s, 0.5, what=f"a notification for {victim}")
    except WaitTimeout:
        raise UserError(f"no evidence within {deadline_s:.0f} s: Masakari got no notification for {victim}") from None
    first = found[0]
    return recovery.HostFailure(host=victim, fenced_s=None, forced_down_s=None,
                                notified_s=first["created_at"] - t_fault, notification=first["uuid"], started_at=t_fault)


def kill_engine(d, fail, t_fault: float, say, deadline_s: float = 20.0, power_off: bool = False) -> dict:
    """kill -9 the masakari-engine that processes ``fail``'s notification (``power_off``: power
    off its controller instead), as soon as one logged that it does (polled every 0.2 s for
    ``deadline_s`` s).  Facts: which engine, when (s after the fault) and the notification's
    status then (it must be ``running``: a kill before or after the recovery would prove
    nothing).  Raises :class:`UserError` when no engine took it."""
    from stackha.instanceha import recovery
    from stackha.verify.faults import KillDaemon, PowerOff

    end = time.monotonic() + deadline_s
    found = None
    while found is None and time.monotonic() < end:
        found = recovery.engine_of(d, fail.notification)
        if found is None:
            time.sleep(0.2)
    engine = found[0] if found else None
    if engine is None:
        raise UserError(f"no masakari-engine logged notification {fail.notification} within {deadline_s:.0f} s")
    fault = PowerOff([engine]) if power_off else KillDaemon(engine, recovery.ENGINE_DAEMON)
    ev = fault.inject()[0]
    status = recovery.notification(d, fail.notification)["status"]
    say(f"{fault.describe()} {ev.t - t_fault:.1f} s after the fault (notification {status})")
    if status != "running":
        raise UserError(f"the engine was killed while notification {fail.notification} was {status}, not running")
    return {"killed_engine": engine.name, "killed_at_s": round(ev.t - t_fault, 2), "status_at_kill": status,
            "engine_fault": fault.describe()}


def _restore(d, victim: str | None, ids: list[str], reserved_before: set[str], say) -> list[str]:
    """Delete the run's servers, heal and power the victim on, re-admit it, reserve again the
    reserved hosts Masakari used.  Returns the problems (never raises)."""
    from stackha.instanceha import recovery

    problems = []
    steps: list[tuple[str, Callable]] = [("delete the run's servers", lambda: recovery.delete_servers(d, ids))]
    if victim:
        host = recovery.compute_host(d, victim)
        steps += [("heal", host.heal), ("power on", lambda: host.is_on() or host.power_on()),
                  ("re-admit", lambda: recovery.readmit(d, victim))]
    for name in sorted(reserved_before):
        steps.append((f"reserve {name} again", lambda name=name: recovery.reserve(d, name)))
    for what, step in steps:
        try:
            step()
        except Exception as exc:
            problems.append(f"restore: {what}: {exc}")
    say("restored: " + ", ".join(w for w, _ in steps))
    return problems

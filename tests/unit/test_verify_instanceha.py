"""The instance HA verify scenarios without a lab: the victim choice, and a run's verdict from
what Nova recorded — an evacuation Nova accepted before the fence completed fails the run, a
server that never came back is "no evidence", never a time."""

from __future__ import annotations

import time

import pytest

from stackha.errors import UserError
from stackha.instanceha import recovery
from stackha.verify import faults, instanceha, scenarios


class Host:
    def __init__(self, name):
        self.name, self.on, self.cut = name, True, False

    def is_on(self):
        return self.on

    def power_on(self):
        self.on = True

    def partition(self):
        self.cut = True

    def power_off(self):
        self.on = False

    def heal(self):
        self.cut = False

    def run(self, argv, timeout=None):
        return type("R", (), {"ok": self.on})()


class D:
    name, tuning = "t", "stackha"


SEGS = [{"name": "s", "uuid": "u", "recovery_method": "reserved_host", "enabled": True,
         "hosts": [{"name": "c0", "reserved": False, "on_maintenance": True},
                   {"name": "c1", "reserved": False, "on_maintenance": False},
                   {"name": "c2", "reserved": True, "on_maintenance": False}]}]


@pytest.fixture
def lab(monkeypatch):
    """A fake cloud: three compute hosts, Masakari's answers scripted by ``lab["evacuate_at"]``
    (seconds after the fence completed when Nova accepted the evacuation; None: never) and
    ``lab["done"]``."""
    hosts = {n: Host(n) for n in ("c0", "c1", "c2")}
    state = {"hosts": hosts, "evacuate_at": 0.5, "done": True, "api": []}
    monkeypatch.setattr(recovery, "segments", lambda d: SEGS)
    monkeypatch.setattr(recovery, "compute_host", lambda d, n: hosts[n])
    monkeypatch.setattr(recovery, "boot_ha_servers", lambda d, h, n, name: [f"s{i}" for i in range(n)])

    def host_failed(d, name, **kw):
        t0 = time.time()
        hosts[name].on = False
        state["fenced_at"] = time.time()
        return recovery.HostFailure(host=name, fenced_s=state["fenced_at"] - t0, forced_down_s=0.5, notified_s=0.6,
                                    notification="n", started_at=t0)

    monkeypatch.setattr(recovery, "host_failed", host_failed)
    monkeypatch.setattr(recovery, "monitored", lambda d, n: state.get("monitored", False))
    monkeypatch.setattr(recovery, "wait_evacuated", lambda d, f, ids, deadline_s: recovery.Evacuation(
        done_s=5.0 if state["done"] else None, active_s={i: 5.0 for i in ids} if state["done"] else {},
        where={i: ["c2", "ACTIVE", None] for i in ids}))
    monkeypatch.setattr(recovery, "follow_notification", lambda d, f, deadline_s: recovery.Followed(
        "finished", [f.notification] + [r["notification"] for r in state["reruns"]], state["reruns"]))
    state["reruns"] = []
    monkeypatch.setattr(recovery, "delete_servers", lambda d, ids: None)
    monkeypatch.setattr(recovery, "readmit", lambda d, n: [])

    def api(d, action, **payload):
        state["api"].append((action, payload))
        if action == "evacuations":
            at = state["evacuate_at"]
            return {i: [] if at is None else [state["fenced_at"] + at] for i in payload["ids"]}
        return {"changes": []}

    monkeypatch.setattr(recovery, "_api", api)
    monkeypatch.setattr(faults, "recover_until_active", lambda d, s, progress: faults.Recovery(seconds=1.0))
    return state


def run(kind, tmp_path):
    s = scenarios.scenario({"engine-kill": "instance-ha-engine-kill", "controller-poweroff": "instance-ha-controller-poweroff"}
                           .get(kind, f"instance-ha-compute-{kind}"))
    return s.runner(D(), s, 1, tmp_path, lambda m: None)


def test_the_victim_is_on_not_reserved_and_not_on_maintenance(lab):
    assert instanceha.pick_victim(D()) == ("c1", {"c2"})
    lab["hosts"]["c1"].on = False
    with pytest.raises(UserError, match="no failover segment"):
        instanceha.pick_victim(D())


@pytest.mark.parametrize("kind", ["poweroff", "partition"])
def test_a_recovery_after_the_fence_is_ok_and_restores_the_segment(lab, tmp_path, kind):
    rep = run(kind, tmp_path)
    assert rep.verdict == "ok", rep.error
    facts = rep.extra["facts"]
    assert facts["first_evacuate_s"] >= facts["fenced_s"] and facts["all_active_s"] is not None
    assert rep.expectations[0]["met"]
    assert lab["hosts"]["c1"].on and not lab["hosts"]["c1"].cut  # healed and powered on again
    assert ("reserve", {"host": "c2"}) in lab["api"]


@pytest.mark.parametrize("kind", ["poweroff", "partition"])
def test_a_monitored_host_is_only_faulted_and_the_cloud_records_are_the_evidence(lab, tmp_path, monkeypatch, kind):
    """With the cluster and host monitors nobody is told: no host_failed; the fence, force-down and
    notification times come from :func:`recovery.detection`."""
    lab["monitored"] = True
    monkeypatch.setattr(recovery, "host_failed", lambda *a, **k: pytest.fail("stackha was told"))
    seen = []

    lab["powered_off"] = []
    host = lab["hosts"]["c1"]
    host.power_off = lambda: (lab["powered_off"].append("c1"), setattr(host, "on", False))  # recorded

    api = recovery._api

    def notifications(d, action, **payload):
        if action != "host_notifications":
            return api(d, action, **payload)
        seen.append(payload["host"])
        if len(seen) < 2:  # the host monitor has not reported yet
            return []
        return [{"uuid": "hm", "created_at": payload["since"] + 4.5}]

    def detection(d, name, since):
        lab["fenced_at"] = since + 3.3
        lab["hosts"][name].on = False
        return recovery.Detection(host=name, fence_completed_at=since + 4.0, power_off_at=since + 3.3,
                                  forced_down_at=since + 3.8, notifications=[{"uuid": "hm", "created_at": since + 4.5}])

    monkeypatch.setattr(recovery, "_api", notifications)
    monkeypatch.setattr(recovery, "detection", detection)
    rep = run(kind, tmp_path)
    assert rep.verdict == "ok", rep.error
    facts = rep.extra["facts"]
    assert facts["detected_by"].startswith("pacemaker") and facts["notification"] == "hm"
    # the fault really happened: powered off, or cut off (and powered off by the cluster's fence)
    assert lab["powered_off"] == (["c1"] if kind == "poweroff" else [])
    assert facts["fenced_s"] == pytest.approx(3.3, abs=0.01) and facts["forced_down_s"] == pytest.approx(3.8, abs=0.01)
    assert len(seen) >= 2


def test_a_monitored_host_nobody_reported_is_no_evidence(lab, tmp_path, monkeypatch):
    lab["monitored"] = True
    monkeypatch.setattr(instanceha, "detected", lambda d, v, t, deadline_s=90.0: (_ for _ in ()).throw(
        UserError("no evidence within 90 s: Masakari got no notification for c1")))
    rep = run("partition", tmp_path)
    assert rep.verdict == "problems" and "no evidence" in rep.error


def test_a_monitored_host_recovered_without_a_recorded_fence_fails_the_run(lab, tmp_path, monkeypatch):
    lab["monitored"] = True
    monkeypatch.setattr(instanceha, "detected", lambda d, v, t, deadline_s=90.0: recovery.HostFailure(
        host=v, fenced_s=None, forced_down_s=None, notified_s=4.0, notification="hm", started_at=t))
    monkeypatch.setattr(recovery, "detection", lambda d, name, since: recovery.Detection(host=name))
    lab["fenced_at"] = time.time()
    rep = run("poweroff", tmp_path)
    assert rep.verdict == "problems" and "no evidence of the fence" in rep.error


def test_an_evacuation_before_the_fence_fails_the_run(lab, tmp_path):
    lab["evacuate_at"] = -1.2
    rep = run("partition", tmp_path)
    assert rep.verdict == "problems" and "BEFORE the fence" in rep.error


def test_an_evacuation_in_the_fences_second_proves_no_order(lab, tmp_path):
    """Nova keeps whole seconds: a recorded start 0.5 s before the fence may be 0.4 s after it."""
    lab["evacuate_at"] = -0.5
    rep = run("partition", tmp_path)
    assert rep.verdict == "problems" and "no evidence of the order" in rep.error


@pytest.mark.parametrize("what", ["never back", "no evacuate action"])
def test_no_recovery_is_no_evidence(lab, tmp_path, what):
    if what == "never back":
        lab["done"] = False
    else:
        lab["evacuate_at"] = None
    rep = run("poweroff", tmp_path)
    assert rep.verdict == "problems" and "no evidence" in rep.error


@pytest.mark.parametrize("kind", ["engine-kill", "controller-poweroff"])
def test_an_engine_loss_run_fails_unless_stackha_re_ran_the_notification(lab, tmp_path, monkeypatch, kind):
    engine = Host("m1")
    monkeypatch.setattr(recovery, "engine_of", lambda d, uuid: (engine, 7))
    monkeypatch.setattr(recovery, "notification", lambda d, uuid: {"status": "running"})
    monkeypatch.setattr(recovery, "masakari_app", lambda d: type("A", (), {"units": [type("U", (), {"host": engine})]}))
    killed = []

    def kill(self):
        hosts = getattr(self, "hosts", None) or [self.host]
        killed.extend(h.name for h in hosts)
        if hasattr(self, "hosts"):
            engine.on = False
        return [faults.FaultEvent(time.time(), "x", hosts[0].name)]

    monkeypatch.setattr(faults.KillDaemon, "inject", kill)
    monkeypatch.setattr(faults.PowerOff, "inject", kill)
    rep = run(kind, tmp_path)
    assert killed == ["m1"] and rep.verdict == "problems" and "not re-run" in rep.error
    assert engine.on  # a controller the run powered off is powered on again
    lab["reruns"] = [{"notification": "n2", "dead_engine": "m1", "after_s": 3.0}]
    rep = run(kind, tmp_path)
    assert rep.verdict == "ok", rep.error
    assert rep.extra["facts"]["notifications"] == ["n", "n2"] and rep.extra["facts"]["killed_engine"] == "m1"

"""Instance HA without I/O: the bundle's ``segments`` option (shape errors, one line each, with
the option's path), its resolution to Nova host names (applications, units, reserved hosts, a
host in two segments refused), Masakari's config per tuning, and the seed-004 style overlay
loading with the lab cloud."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from stackha.errors import InvalidInput
from stackha.instanceha.segments import resolve
from stackha.model.options import check_options
from stackha.services import operator_for
from stackha.services.openstack import masakari
from tests.unit.test_openstack_render import NET, cloud

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def seg(**kw):
    return {"name": "s", "recovery_method": "auto", "hosts": ["nova-compute"], **kw}


def messages(segments) -> list[str]:
    return [f"{p.path}: {p.message}" for p in check_options("masakari", "masakari", {"segments": segments})]


def test_a_good_segments_option_has_no_problem():
    assert messages([seg(recovery_method="reserved_host", hosts=["nova-compute/0"],
                         reserved_hosts=["nova-compute/2"])]) == []


@pytest.mark.parametrize("segments, expected", [
    ("seg1", "segments 'seg1' is not a list of segments"),
    ([seg(recovery_method="evacuate")], "segments[0].recovery_method: segments[0].recovery_method 'evacuate' is not a Masakari recovery method"),
    ([seg(name="")], "segments[0].name: segments[0] has no name"),
    ([seg(), seg()], "segments[1].name: segment name 's' is given twice"),
    ([seg(hosts=[])], "segments[0].hosts: segments[0].hosts [] is not a list"),
    ([seg(recovery_method="rh_priority")], "segments[0] recovers with rh_priority but has no reserved host"),
    ([seg(extra=1)], "segments[0] has unknown key 'extra'"),
    ([seg(hosts=["a"]), seg(name="t", hosts=["a"])], "a is in segments[0] and segments[1]"),
    ([seg(hosts=["a"], reserved_hosts=["a"])], "a is both a host and a reserved host"),
])
def test_bad_segments_are_named_in_one_line(segments, expected):
    found = messages(segments)
    assert any(expected in m for m in found), found
    assert all("\n" not in m and m.startswith("applications.masakari.options.segments") for m in found)


def test_segments_resolve_to_nova_host_names():
    ctx = cloud()
    m = ctx["masakari"]
    m.options["segments"] = [{"name": "rh", "recovery_method": "reserved_host", "hosts": ["nova-compute"],
                              "reserved_hosts": ["nova-compute/2"]}]
    [spec] = resolve(m)
    hosts = [u.host.name for u in ctx["nova-compute"].units]
    # an application names all its units; its reserved unit is a reserved host only
    assert spec.hosts == tuple(hosts[:2]) and spec.reserved == (hosts[2],)
    assert spec.as_request()["recovery_method"] == "reserved_host"


def test_masakari_finds_compute_hosts_without_a_direct_relation():
    ctx = cloud()
    assert "nova-compute" not in ctx["masakari"].related  # as in seed 004
    assert resolve(ctx["masakari"])[0].hosts


@pytest.mark.parametrize("segments, match", [
    ([seg(hosts=["nova-compute/7"])], r"segments\[0\]\.hosts: 'nova-compute/7' is no nova-compute application or unit"),
    ([seg(hosts=["nova-compute/0"]), seg(name="t", hosts=["nova-compute"])], "is also in segment 's'"),
])
def test_unresolvable_segments_are_refused(segments, match):
    m = cloud()["masakari"]
    m.options["segments"] = segments
    with pytest.raises(InvalidInput, match=match):
        resolve(m)


def _conf(tuning: str) -> configparser.ConfigParser:
    m = cloud()["masakari"]
    m.tuning = tuning
    text = operator_for("masakari").render(m)["masakari/0"][masakari.CONF].content
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(text)
    return cp


def test_stackha_tuning_waits_for_nothing_and_stock_keeps_masakaris_defaults():
    tuned, stock = _conf("stackha"), _conf("stock")
    assert tuned["DEFAULT"]["wait_period_after_service_update"] == "0"
    assert stock["DEFAULT"]["wait_period_after_service_update"] == "180"
    assert stock["DEFAULT"]["duplicate_notification_detection_interval"] == "180"
    assert stock["DEFAULT"]["host_failure_recovery_threads"] == "3"
    with pytest.raises(InvalidInput, match="tuning 'fast'"):
        _conf("fast")


def _files(tuning: str) -> dict:
    m = cloud()["masakari"]
    m.tuning = tuning
    return operator_for("masakari").render(m)["masakari/0"]


def test_the_engine_shares_one_keystone_token_only_under_stackhas_tuning(tmp_path):
    """The rendered auth cache, imported by Debian's python3 with Debian's keystoneauth1: the
    same options give the same password plugin (so its token is reused), other options another."""
    import subprocess
    import sys

    tuned, stock = _files("stackha"), _files("stock")
    assert masakari.AUTH_CACHE not in stock and "nova_auth_cache" not in stock[masakari.ENGINE_BIN].content
    assert "import masakari_nova_auth_cache" in tuned[masakari.ENGINE_BIN].content
    (tmp_path / "masakari_nova_auth_cache.py").write_text(tuned[masakari.AUTH_CACHE].content)
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import masakari_nova_auth_cache, keystoneauth1.loading as l\n"
        "kw = dict(auth_url='http://198.18.0.1:5000/v3', username='masakari', password='p', project_name='service',"
        " user_domain_name='Default', project_domain_name='Default')\n"
        "a = l.get_plugin_loader('password').load_from_options(**kw)\n"
        "b = l.get_plugin_loader('password').load_from_options(**kw)\n"
        "c = l.get_plugin_loader('password').load_from_options(**{**kw, 'username': 'nova'})\n"
        "print(a is b, a is c, type(a).__name__)\n")
    res = subprocess.run(["/usr/bin/python3", "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=60)
    if "No module named 'keystoneauth1'" in res.stderr:
        pytest.skip("Debian's python3-keystoneauth1 is not installed (scripts/setup.sh installs it)")
    assert res.stdout.split() == ["True", "False", "Password"], res.stderr[-800:]


def test_taskflow_and_coordination_use_the_galera_vip():
    cp = _conf("stackha")
    assert cp["taskflow"]["connection"].endswith(f"@{NET}.250:3306/masakari_taskflow")
    url = cp["coordination"]["backend_url"]
    assert url.startswith("mysql://masakari:") and url.endswith(f"@{NET}.250:3306/masakari")
    assert cp["host_failure"]["evacuate_all_instances"] == "true"
    assert cp["DEFAULT"]["host"] == "t-m0"


def test_api_is_behind_the_vip_with_the_instance_ha_catalog_type():
    m = cloud()["masakari"]
    op = operator_for("masakari")
    [fe] = op.frontends(m)
    assert fe.port == 15868 and fe.check_path == "/" and len(fe.servers) == 3
    assert [(e.type, e.port) for e in op.descriptor.catalog] == [("instance-ha", 15868)]
    assert {w.name for w in op.workers_on(m, m.units[1])} == {"masakari-engine"}  # on every unit


def test_coordination_url_refuses_a_non_mysql_url():
    with pytest.raises(ValueError):
        masakari.coordination_url("sqlite:///x")


def test_the_lab_overlay_loads_on_the_lab_cloud():
    from stackha.model import load_bundle

    b = load_bundle(EXAMPLES / "lab-cloud.yaml", overlays=[EXAMPLES / "lab-instance-ha.yaml"])
    app = b.applications["masakari"]
    assert app.kind == "masakari" and app.deployable and app.num_units == 3
    assert check_options("masakari", "masakari", app.options) == []


# ------------------------------------------------------------------ the glue: fence first
class FakeHost:
    def __init__(self, name: str, log: list):
        self.name, self.log, self.on = name, log, True

    def power_off(self):
        self.log.append(("fence", self.name))
        self.on = False
        return 0.01

    def is_on(self):
        return self.on


class FakeDeployment:
    name = "t"

    def __init__(self, log: list):
        ctx = cloud()
        self.hosts = {u.host.name: FakeHost(u.host.name, log) for u in ctx["nova-compute"].units}
        for u in ctx["nova-compute"].units:
            u.host = self.hosts[u.host.name]
        self._ctx = ctx

    def contexts(self):
        return self._ctx


def test_host_failed_fences_before_it_forces_down_and_notifies(monkeypatch):
    import time

    from stackha.instanceha import recovery

    log: list = []
    d = FakeDeployment(log)

    def api(d, action, **payload):
        log.append((action, payload["host"]))
        assert not d.hosts[payload["host"]].is_on(), "forced down before the fence"
        now = time.time()
        return {"forced_down_at": now, "notified_at": now, "notification": "n-1"}

    monkeypatch.setattr(recovery, "_api", api)
    r = recovery.host_failed(d, "t-m8")
    assert log == [("fence", "t-m8"), ("host_down", "t-m8")]
    assert r.notification == "n-1" and r.fenced_s is not None and r.notified_s >= r.forced_down_s >= 0


def test_host_failed_refuses_an_unfenced_host_and_an_unknown_one(monkeypatch):
    from stackha.errors import UserError
    from stackha.instanceha import recovery

    d = FakeDeployment([])
    monkeypatch.setattr(recovery, "_api", lambda *a, **k: pytest.fail("called the API"))
    with pytest.raises(UserError, match="still on: fence it first"):
        recovery.host_failed(d, "t-m8", fence=False)
    with pytest.raises(UserError, match="not a compute host"):
        recovery.host_failed(d, "t-m0")


# ------------------------------------------------------------------ the script's timing actions
class FakeServer:
    def __init__(self, sid: str, host: str, status: str = "ACTIVE", task=None):
        self.id, self.compute_host, self.status, self.task_state = sid, host, status, task


class FakeNova:
    """A Nova whose server list follows a script: one list of FakeServer per call, the last one
    repeated."""

    def __init__(self, script: list[list[FakeServer]]):
        self.script, self.calls, self.services = script, 0, []

    def servers(self, **query):
        rows = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        return list(rows)


class FakeConn:
    def __init__(self, nova):
        self.compute = nova


def test_wait_evacuated_counts_a_server_only_when_active_without_a_task_on_another_host():
    from stackha.instanceha import masakari_api as api

    S = FakeServer
    nova = FakeNova([
        [S("a", "c0"), S("b", "c0")],
        [S("a", "c1", "REBUILD", "rebuild_spawning"), S("b", "c0", "ERROR")],
        [S("a", "c1"), S("b", "c1", "ACTIVE", "rebuilding")],
        [S("a", "c1"), S("b", "c1")],
    ])
    out = api.wait_evacuated(FakeConn(nova), {"host": "c0", "ids": ["a", "b"], "deadline_s": 5, "interval_s": 0})
    assert nova.calls == 4
    assert out["done_at"] == out["active_elsewhere_at"]["b"] >= out["active_elsewhere_at"]["a"]
    assert out["where"]["b"] == ["c1", "ACTIVE", None]


def test_wait_evacuated_without_a_full_recovery_is_no_evidence():
    from stackha.instanceha import masakari_api as api

    nova = FakeNova([[FakeServer("a", "c1"), FakeServer("b", "c0")]])
    out = api.wait_evacuated(FakeConn(nova), {"host": "c0", "ids": ["a", "b"], "deadline_s": 0.05, "interval_s": 0.01})
    assert out["done_at"] is None and set(out["active_elsewhere_at"]) == {"a"}


def test_host_down_without_force_down_leaves_nova_alone():
    from stackha.instanceha import masakari_api as api

    class Nova:
        def services(self, **q):
            raise AssertionError("asked Nova for the service")

    class HA:
        def create_notification(self, **attrs):
            assert attrs["type"] == "COMPUTE_HOST" and attrs["payload"]["event"] == "STOPPED"
            return type("N", (), {"notification_uuid": "n-2"})()

    conn = FakeConn(Nova())
    conn.instance_ha = HA()
    out = api.host_down(conn, {"host": "c0", "force_down": False})
    assert out["forced_down_at"] is None and out["notification"] == "n-2" and out["notified_at"]


def test_follow_notification_re_runs_a_notification_whose_engine_died(monkeypatch):
    """Masakari leaves a notification ``running`` forever when its engine dies: stackha restarts
    the engine and posts it again (once), then follows the new one to the end."""
    from stackha.instanceha import recovery

    class Engine:
        name, on, running, pid = "m1", True, True, 100

        def is_on(self):
            return self.on

        def daemon(self, name):
            assert name == "masakari-engine"
            return type("Daemon", (), {"pid": self.pid})() if self.running else None

    engine = Engine()
    took = {"n1": 100, "n2": 101}  # the pid that logged each notification
    statuses = {"n1": ["running", "running", "running"], "n2": ["running", "finished"]}
    posted, recovered = [], []

    class App:
        name, tuning = "masakari", "stackha"
        units = [type("Unit", (), {"host": engine})]

    class D:
        def host(self, name):
            assert name == engine.name
            return engine

        def recover(self, apps):
            recovered.append(apps)
            engine.running, engine.pid = True, 101  # a new process
            return {}

    def notification(d, uuid):
        st = statuses[uuid]
        if uuid == "n1" and len(st) == 2:
            engine.running = False  # killed while it runs n1
        return {"status": st.pop(0) if len(st) > 1 else st[0]}

    def api(d, action, **payload):
        posted.append((action, payload))
        return {"notification": "n2", "forced_down_at": None, "notified_at": 0}

    monkeypatch.setattr(recovery, "notification", notification)
    monkeypatch.setattr(recovery, "engine_of", lambda d, uuid: (engine, took[uuid]))
    monkeypatch.setattr(recovery, "masakari_app", lambda d: App)
    monkeypatch.setattr(recovery, "_api", api)
    monkeypatch.setattr(recovery, "fail_orphaned", lambda d, uuid: posted.append(("fail_orphaned", uuid)) or "failed")
    fail = recovery.HostFailure(host="c0", fenced_s=0.01, forced_down_s=0.5, notified_s=0.6, notification="n1",
                                started_at=0.0)
    out = recovery.follow_notification(D(), fail, deadline_s=10, interval_s=0)
    assert out.status == "finished" and out.notifications == ["n1", "n2"]
    # the orphan is failed first: while it runs, Masakari refuses to clear the host's on_maintenance
    # the re-run waits out Masakari's duplicate window (10 s under stackha's tuning)
    assert posted == [("fail_orphaned", "n1"), ("host_down", {"host": "c0", "rerun_of": "n1",
                                                              "duplicate_interval_s": 10.0, "timeout_s": 190.0})]
    assert recovered == [{"masakari"}]
    assert out.reruns[0]["dead_engine"] == "m1"


def test_follow_notification_leaves_a_live_engine_alone(monkeypatch):
    from stackha.instanceha import recovery

    class Engine:
        name = "m1"

        def is_on(self):
            return True

        def daemon(self, name):
            return type("Daemon", (), {"pid": 100})()

    seq = ["running", "running", "finished"]
    monkeypatch.setattr(recovery, "notification", lambda d, uuid: {"status": seq.pop(0)})
    monkeypatch.setattr(recovery, "engine_of", lambda d, uuid: (Engine(), 100))
    monkeypatch.setattr(recovery, "_api", lambda *a, **k: pytest.fail("re-posted a live engine's notification"))
    fail = recovery.HostFailure(host="c0", fenced_s=0.01, forced_down_s=0.5, notified_s=0.6, notification="n1",
                                started_at=0.0)
    out = recovery.follow_notification(object(), fail, deadline_s=10, interval_s=0)
    assert out.status == "finished" and out.notifications == ["n1"] and out.reruns == []


def test_an_engine_restarted_since_or_on_a_host_that_is_off_is_dead(monkeypatch):
    """The process that logged the notification is what counts: a daemon restarted since (another
    pid) does not run it; with no readable log line, a masakari host that is off had it."""
    from stackha.instanceha import recovery

    class H:
        def __init__(self, name, on, pid):
            self.name, self.on, self.pid = name, on, pid

        def is_on(self):
            return self.on

        def daemon(self, name):
            return type("Daemon", (), {"pid": self.pid})() if self.on else None

    a, b = H("m0", True, 5), H("m2", False, None)
    App = type("App", (), {"units": [type("U", (), {"host": a}), type("U", (), {"host": b})]})
    monkeypatch.setattr(recovery, "masakari_app", lambda d: App)
    assert recovery.orphaned_by(None, 3.0, (a, 5)) == []
    assert recovery.orphaned_by(None, 3.0, (a, 4)) == ["m0"]
    assert recovery.orphaned_by(None, 3.0, None) == []  # within the grace: may not have logged yet
    assert recovery.orphaned_by(None, recovery.ORPHAN_GRACE_S + 1, None) == ["m2"]
    b.on = True
    assert recovery.orphaned_by(None, recovery.ORPHAN_GRACE_S + 1, None) == []


def test_reserve_and_readmit_touch_only_the_named_hosts_entries():
    from types import SimpleNamespace as NS

    from stackha.instanceha import masakari_api as api

    svc = NS(host="c2", binary="nova-compute", status="enabled", is_forced_down=True)
    calls = []

    class Nova:
        def services(self, **q):
            return [svc]

        def disable_service(self, s, disabled_reason):
            calls.append(("disable", s.host))

        def enable_service(self, s):
            calls.append(("enable", s.host))

        def update_service_forced_down(self, s, forced):
            calls.append(("forced_down", forced))

    hosts = {"seg": [NS(name="c1", uuid="h1", reserved=False, on_maintenance=True),
                     NS(name="c2", uuid="h2", reserved=False, on_maintenance=True)]}

    class HA:
        def segments(self):
            return [NS(name="seg", uuid="seg")]

        def hosts(self, seg):
            return hosts[seg]

        def update_host(self, uuid, seg, **kw):
            calls.append(("update", uuid, kw))

    conn = FakeConn(Nova())
    conn.instance_ha = HA()
    assert api.reserve(conn, {"host": "c2"})["changes"] == ["disabled nova-compute on c2", "segment seg: c2 reserved again"]
    assert calls == [("disable", "c2"), ("update", "h2", {"reserved": True})]
    calls.clear()
    svc.status = "disabled"
    api.readmit(conn, {"host": "c2"})
    assert calls == [("forced_down", False), ("enable", "c2"), ("update", "h2", {"on_maintenance": False})]

"""Compute hosts as Pacemaker Remote nodes (seed 004's overlay), rendered without I/O: the remote
connections, each remote node's fencing level (power, then Nova force-down), the shared key, the
masakari-hostmonitor config, Masakari's host-down task — and the force-down fence agent against a
fake Keystone + Nova."""

from __future__ import annotations

import configparser
import http.server
import ipaddress
import json
import subprocess
import threading
import xml.etree.ElementTree as ET

import pytest

from stackha.errors import InvalidInput
from stackha.hosts import labfence
from stackha.instanceha import fence_nova
from stackha.services import masakari_monitors as mm
from stackha.services import pacemaker as pm
from stackha.services.base import AppContext, MemorySecrets, Unit
from stackha.services.openstack import masakari
from stackha.services.pacemaker_remote import PacemakerRemoteOperator

VIP = ipaddress.IPv4Interface("198.18.42.250/24")


class FakeHost:
    """Name, address and the lab's fence device; any other access fails the test."""

    def __init__(self, name: str, address: str):
        self.name = name
        self.address = ipaddress.IPv4Address(address)
        self.vip_interface = "eth0"

    def __getattr__(self, attr):
        if attr == "fence_device":
            return lambda: labfence.device_for(self.name)
        raise AssertionError(f"render touched host.{attr}")


def cloud(tuning: str = "stackha", ha_options=None, keystone: bool = True) -> dict[str, AppContext]:
    ctl = [FakeHost(f"t-c{i}", f"198.18.42.{11 + i}") for i in range(3)]
    cmp = [FakeHost(f"t-n{i}", f"198.18.42.{21 + i}") for i in range(3)]

    def mk(name, kind, hosts, options=None, vip=None):
        return AppContext(name, kind, dict(options or {}), [Unit(f"{name}/{i}", h) for i, h in enumerate(hosts)],
                          MemorySecrets(), vip=vip, tuning=tuning)

    apps = {a.name: a for a in (
        mk("keystone", "keystone", ctl, vip=VIP), mk("masakari", "masakari", ctl, vip=VIP),
        mk("hacluster", "hacluster", ctl, ha_options if ha_options is not None else {"cluster_count": 3}),
        mk("nova-compute", "nova-compute", cmp), mk("pacemaker-remote", "pacemaker-remote", cmp),
        mk("masakari-monitors", "masakari-monitors", cmp))}
    rel = [("masakari", "hacluster"), ("hacluster", "pacemaker-remote"), ("nova-compute", "pacemaker-remote"),
           ("nova-compute", "masakari-monitors")]
    if keystone:
        rel += [("masakari", "keystone"), ("keystone", "masakari-monitors")]
    for a, b in rel:
        apps[a].related[b] = apps[b]
        apps[b].related[a] = apps[a]
    return apps


def test_remote_nodes_get_a_connection_a_power_fence_and_a_level_power_then_force_down():
    c = cloud()
    files = pm.HAClusterOperator().render(c["hacluster"])["hacluster/0"]
    res = ET.fromstring(files[pm.CIB_RESOURCES].content)
    prims = {p.get("id"): p for p in res.iter("primitive")}
    for i in range(3):
        conn = prims[f"t-n{i}"]
        assert (conn.get("class"), conn.get("provider"), conn.get("type")) == ("ocf", "pacemaker", "remote")
        params = {nv.get("name"): nv.get("value") for nv in conn.find("instance_attributes")}
        assert params == {"server": f"198.18.42.{21 + i}", "port": "3121", "reconnect_interval": "60s"}
        mon = next(op for op in conn.iter("op") if op.get("name") == "monitor")
        assert (mon.get("interval"), mon.get("timeout")) == ("1s", "3s")
        assert prims[f"fence-t-n{i}"].get("type") == "fence_stackha_lab"
    fd = prims[pm.FORCE_DOWN_ID]
    assert fd.get("type") == "fence_stackha_nova"
    assert {nv.get("name"): nv.get("value") for nv in fd.find("instance_attributes")} == {"pcmk_host_list": "t-n0 t-n1 t-n2"}
    # a start that failed (Keystone slow) is retried once the failure expires; a token may take seconds
    assert {nv.get("name"): nv.get("value") for nv in fd.find("meta_attributes")} == {"failure-timeout": "60s"}
    assert {op.get("name"): op.get("timeout") for op in fd.iter("op")} == {"start": "60s", "monitor": "60s"}
    levels = ET.fromstring(files[pm.CIB_FENCING].content).findall("fencing-level")
    assert [(lv.get("target"), lv.get("index"), lv.get("devices")) for lv in levels] == [
        (f"t-n{i}", "1", f"fence-t-n{i},{pm.FORCE_DOWN_ID}") for i in range(3)]
    # the controllers keep their own devices, and no level: any device that can fence them does
    assert {"fence-t-c0", "fence-t-c1", "fence-t-c2"} <= set(prims)
    assert not any(lv.get("target", "").startswith("t-c") for lv in levels)


def test_remote_node_timers_follow_the_tuning():
    res = ET.fromstring(pm.HAClusterOperator().render(cloud("stock")["hacluster"])["hacluster/0"][pm.CIB_RESOURCES].content)
    conn = next(p for p in res.iter("primitive") if p.get("id") == "t-n0")
    mon = next(op for op in conn.iter("op") if op.get("name") == "monitor")
    assert (mon.get("interval"), mon.get("timeout")) == ("60s", "30s")
    assert "reconnect_interval" not in {nv.get("name") for nv in conn.iter("nvpair")}
    meta = {nv.get("name"): nv.get("value") for nv in conn.find("meta_attributes")}
    assert meta == {"resource-stickiness": "100"}  # stock: failures never expire


def test_vip_and_daemons_avoid_remote_nodes():
    c = cloud(ha_options={"resources": {"web": {"command": "/bin/sleep 1000"}}})
    c["masakari"].options["vip"] = "198.18.42.240"
    cons = ET.fromstring(pm.HAClusterOperator().render(c["hacluster"])["hacluster/0"][pm.CIB_CONSTRAINTS].content)
    avoids = {(x.get("rsc"), x.get("node")) for x in cons.iter("rsc_location") if x.get("score") == "-INFINITY"}
    for i in range(3):
        assert {("vip", f"t-n{i}"), ("web", f"t-n{i}")} <= avoids


def test_one_remote_key_on_cluster_and_remote_nodes_and_a_0600_credentials_file():
    c = cloud()
    ha = pm.HAClusterOperator().render(c["hacluster"])
    remote = PacemakerRemoteOperator().render(c["pacemaker-remote"])
    keys = {f[pm.REMOTE_AUTHKEY].content for f in (*ha.values(), *remote.values())}
    assert len(keys) == 1 and len(keys.pop()) == pm.REMOTE_AUTHKEY_LENGTH
    assert {f[pm.REMOTE_AUTHKEY].mode for f in (*ha.values(), *remote.values())} == {0o640}
    conf = ha["hacluster/0"][pm.NOVA_FENCE_CONF]
    assert conf.mode == 0o600
    auth = json.loads(conf.content)["auth"]
    assert auth["username"] == pm.FORCE_DOWN_USER and auth["auth_url"] == "http://198.18.42.250:5000/v3"
    assert auth["password"] == c["keystone"].secrets.get(f"service-{pm.FORCE_DOWN_USER}")
    assert auth["password"] not in ha["hacluster/0"][pm.CIB_RESOURCES].content
    assert ha["hacluster/0"]["/usr/sbin/fence_stackha_nova"].mode == 0o755
    assert pm.PACEMAKER_ENV["PCMK_authkey_location"] == pm.REMOTE_AUTHKEY


def test_force_down_false_keeps_the_power_fence_alone_and_no_keystone_is_needed():
    c = cloud(ha_options={"force_down": False}, keystone=False)
    files = pm.HAClusterOperator().render(c["hacluster"])["hacluster/0"]
    assert pm.FORCE_DOWN_ID not in files[pm.CIB_RESOURCES].content
    assert len(ET.fromstring(files[pm.CIB_FENCING].content)) == 0 and pm.NOVA_FENCE_CONF not in files


def test_force_down_without_keystone_names_the_fix():
    with pytest.raises(InvalidInput, match="relate its principal to keystone, or set force_down: false"):
        pm.HAClusterOperator().render(cloud(keystone=False)["hacluster"])


def test_pacemaker_remote_without_its_cluster_names_the_relation():
    c = cloud()
    c["pacemaker-remote"].related.pop("hacluster")
    with pytest.raises(InvalidInput, match=r"hacluster:pacemaker-remote, pacemaker-remote:pacemaker-remote"):
        PacemakerRemoteOperator().render(c["pacemaker-remote"])


def test_a_principal_behind_a_load_balancer_lends_the_cluster_no_vip():
    c = cloud()  # masakari's VIP is HAProxy's (the engine gave it), not an option of its own
    assert pm.with_vip(c["hacluster"]).vip is None
    assert "IPaddr2" not in pm.HAClusterOperator().render(c["hacluster"])["hacluster/0"][pm.CIB_RESOURCES].content


def test_fencing_topology_is_inserted_after_constraints_and_removed_with_the_last_level():
    live = ET.fromstring("<cib><configuration><crm_config/><nodes/><resources/><constraints/></configuration>"
                         "<status/></cib>")
    c = cloud()
    op = pm.HAClusterOperator()
    new = op.wanted_configuration(c["hacluster"], live, op.render(c["hacluster"])["hacluster/0"])
    tags = [el.tag for el in new.find("configuration")]
    assert tags.index("fencing-topology") == tags.index("constraints") + 1
    assert len(new.find("configuration/fencing-topology")) == 3
    off = cloud(ha_options={"force_down": False}, keystone=False)
    again = op.wanted_configuration(off["hacluster"], new, op.render(off["hacluster"])["hacluster/0"])
    assert again.find("configuration/fencing-topology") is None


# ----------------------------------------------------------------------------- masakari-hostmonitor
def test_hostmonitor_runs_on_the_cluster_nodes_and_watches_the_remote_nodes_without_ipmi():
    """crm_mon is read where it is local (a CIB reply through pacemaker-remoted's proxy, in flight
    to a compute host that lost power, hung pacemaker-controld on the lab)."""
    for tuning, interval in (("stackha", "2"), ("stock", "60")):
        c = cloud(tuning)
        op = mm.MasakariMonitorsOperator()
        assert [u.host.name for u in op.hostmonitor_units(c["masakari-monitors"])] == ["t-c0", "t-c1", "t-c2"]
        files = op.render_hostmonitors(c["masakari-monitors"])
        f = files["hacluster/1"][mm.CONF]
        assert f.mode == 0o600
        cp = configparser.ConfigParser(interpolation=None)
        cp.read_string(f.content)
        assert cp["host"]["pacemaker_node_type"] == "cluster" and cp["host"]["restrict_to_remotes"] == "True"
        assert cp["host"]["corosync_multicast_interfaces"] == "eth0" and cp["host"]["corosync_multicast_ports"] == "5405"
        assert cp["host"]["disable_ipmi_check"] == "True" and cp["host"]["monitoring_interval"] == interval
        assert cp["api"]["username"] == mm.USER and cp["api"]["auth_url"] == "http://198.18.42.250:5000/v3"
        assert cp["api"]["password"] == c["keystone"].secrets.get(f"service-{mm.USER}")
        assert cp["masakarimonitors_privileged"]["helper_command"].startswith("privsep-helper ")


def test_without_a_cluster_the_hostmonitor_runs_on_the_compute_hosts_as_remote_nodes():
    c = cloud()
    c["nova-compute"].related.pop("pacemaker-remote")
    op = mm.MasakariMonitorsOperator()
    assert [u.name for u in op.hostmonitor_units(c["masakari-monitors"])] == [f"masakari-monitors/{i}" for i in range(3)]
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(op.render_hostmonitors(c["masakari-monitors"])["masakari-monitors/0"][mm.CONF].content)
    assert cp["host"]["pacemaker_node_type"] == "remote" and "corosync_multicast_interfaces" not in cp["host"]


def test_hostmonitor_without_keystone_names_the_relation():
    with pytest.raises(InvalidInput, match="identity-credentials"):
        mm.MasakariMonitorsOperator().render(cloud(keystone=False)["masakari-monitors"])


# ----------------------------------------------------------------------------- Masakari's flow
def test_stackha_flows_wait_for_the_host_down_before_disabling_it_and_stock_keeps_masakaris():
    assert masakari.flow_option(masakari.FLOWS["stackha"]["host_rh_failure_recovery_tasks"]) == (
        "pre:['stackha_confirm_host_down_task', 'disable_compute_service_task'],"
        "main:['prepare_HA_enabled_instances_task', 'evacuate_instances_task'],post:[]")
    assert masakari.FLOWS["stock"] is None


def test_host_down_task_module_and_entry_point_render():
    from stackha.services.base import render_template

    src = render_template("masakari/host_down_task.py.j2", task_name=masakari.HOST_DOWN_TASK, wait_s=60, poll_s=0.5)
    compile(src, "stackha_masakari_tasks.py", "exec")
    assert "class ConfirmHostDownTask(base.MasakariTask)" in src and "WAIT_S = 60" in src


# ----------------------------------------------------------------------------- the force-down agent
class FakeCloud(http.server.BaseHTTPRequestHandler):
    """Keystone's token API and Nova's os-services, as much as the agent uses."""

    services: list[dict] = []
    calls: list[tuple[str, str, dict | None]] = []

    def log_message(self, *a):
        pass

    def _send(self, code, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        base = f"http://127.0.0.1:{self.server.server_port}"
        token = {"token": {"expires_at": "2999-01-01T00:00:00.000000Z", "catalog": [
            {"type": "compute", "name": "nova", "endpoints": [
                {"interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": f"{base}/compute/v2.1"}]}],
            "user": {"id": "u", "name": "stackha-fence", "domain": {"id": "default", "name": "Default"}},
            "project": {"id": "p", "name": "service", "domain": {"id": "default", "name": "Default"}},
            "methods": ["password"], "roles": [{"id": "r", "name": "admin"}]}}
        self._send(201, token, {"X-Subject-Token": "tok"})

    def do_GET(self):
        assert self.headers["X-Auth-Token"] == "tok" and self.headers["OpenStack-API-Version"] == "compute 2.53"
        host = self.path.partition("host=")[2]
        FakeCloud.calls.append(("GET", self.path, None))
        self._send(200, {"services": [s for s in FakeCloud.services if not host or s["host"] == host]})

    def do_PUT(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeCloud.calls.append(("PUT", self.path, body))
        sid = self.path.rsplit("/", 1)[1]
        for s in FakeCloud.services:
            if s["id"] == sid:
                s.update(body)
        self._send(200, {"service": {}})


@pytest.fixture
def fake_cloud(tmp_path):
    FakeCloud.services = [{"id": "s1", "host": "t-n0", "forced_down": False},
                          {"id": "s2", "host": "t-n1", "forced_down": False}]
    FakeCloud.calls = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeCloud)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    conf = tmp_path / "nova-fence.json"
    conf.write_text(json.dumps({"auth": {"auth_url": f"http://127.0.0.1:{srv.server_port}/v3", "username": "stackha-fence",
                                         "password": "pw", "project_name": "service", "user_domain_name": "Default",
                                         "project_domain_name": "Default"},
                                "region": "RegionOne", "log": str(tmp_path / "fence.log")}))
    yield conf
    srv.shutdown()


def run_agent(conf, text, *, err=None):
    """The agent as Pacemaker's fencer runs it: Debian's python3 (its keystoneauth1), options on stdin."""
    res = subprocess.run(["/usr/bin/python3", fence_nova.__file__], input=text + f"\nconfig={conf}\n",
                         capture_output=True, text=True, timeout=60)
    if err is not None:
        err.append(res.stderr)
    return res.returncode


def test_agent_off_forces_only_the_target_down_and_logs_it(fake_cloud):
    assert run_agent(fake_cloud, "action=monitor") == fence_nova.EXIT_OK
    assert run_agent(fake_cloud, "action=off\nport=t-n1\nnodename=t-c0") == fence_nova.EXIT_OK
    assert [c for c in FakeCloud.calls if c[0] == "PUT"] == [("PUT", "/compute/v2.1/os-services/s2", {"forced_down": True})]
    assert run_agent(fake_cloud, "action=status\nplug=t-n1") == fence_nova.EXIT_OFF
    assert run_agent(fake_cloud, "action=status\nplug=t-n0") == fence_nova.EXIT_OK
    line = json.loads((fake_cloud.parent / "fence.log").read_text().splitlines()[-1])
    assert (line["action"], line["host"], line["ok"]) == ("off", "t-n1", True) and line["time"].endswith("+00:00")
    assert run_agent(fake_cloud, "action=on\nport=t-n1") == fence_nova.EXIT_OK
    assert FakeCloud.services[1]["forced_down"] is False


def test_agent_fails_for_an_unknown_host_a_missing_plug_and_an_unreachable_keystone(fake_cloud, tmp_path):
    err: list[str] = []
    assert run_agent(fake_cloud, "action=off\nport=t-n9", err=err) == fence_nova.EXIT_FAIL
    assert "no nova-compute service on host 't-n9'" in err[0]
    assert run_agent(fake_cloud, "action=off") == fence_nova.EXIT_FAIL
    bad = tmp_path / "bad.json"
    cfg = json.loads(fake_cloud.read_text())
    cfg["auth"]["auth_url"] = "http://127.0.0.1:9/v3"
    bad.write_text(json.dumps(cfg))
    assert run_agent(bad, "action=off\nport=t-n1") == fence_nova.EXIT_FAIL
    assert not any(c[0] == "PUT" for c in FakeCloud.calls)
    # the monitor is local: an unreachable Keystone does not stop the device, a missing file does
    assert run_agent(bad, "action=monitor") == fence_nova.EXIT_OK
    assert run_agent(tmp_path / "missing.json", "action=monitor") == fence_nova.EXIT_FAIL


def test_agent_metadata_declares_the_actions_pacemaker_needs(capsys):
    assert fence_nova.main(["-o", "metadata"]) == fence_nova.EXIT_OK
    root = ET.fromstring(capsys.readouterr().out)
    assert {a.get("name") for a in root.iter("action")} >= {"off", "on", "status", "monitor", "metadata", "list"}


# ----------------------------------------------------------------------------- seed 004's overlay on the lab cloud
def test_seed_004_overlay_needs_exactly_its_authors_two_fixes():
    """Seed 004's Masakari overlay on examples/lab-cloud.yaml: the analysis names the router's
    missing database relation, the lab refuses the VIP outside its network, and with
    examples/seed-004-lab-fixes.yaml neither remains."""
    from pathlib import Path

    from stackha.hosts.labprovider import check_lab_fit, wanted_subnet
    from stackha.model import load_bundle
    from stackha.model.analysis import analyze

    ex = Path(__file__).resolve().parents[2] / "examples"
    seed = [ex / "seed-004-masakari-overlay.yaml"]
    for overlays, warnings in ((seed, ["missing-relation"]), (seed + [ex / "seed-004-lab-fixes.yaml"], [])):
        b = load_bundle(ex / "lab-cloud.yaml", overlays)
        found = [f for f in analyze(b).findings if f.severity in ("warning", "error")]
        assert [f.code for f in found] == warnings, found
        if warnings:
            assert "masakari-mysql-router" in found[0].path and "db-router" in found[0].message
    # the VIP: the seed's (198.18.7.72) is outside the lab's /24; the fix's is in its VIP range
    import ipaddress

    lb = ipaddress.IPv4Interface("198.18.100.250/24")
    with pytest.raises(InvalidInput, match="several /24s"):
        wanted_subnet({"haproxy": lb, "masakari": ipaddress.IPv4Interface("198.18.7.72/24")})
    fixed = load_bundle(ex / "lab-cloud.yaml", seed + [ex / "seed-004-lab-fixes.yaml"])
    vip = ipaddress.IPv4Interface(f"{fixed.applications['masakari'].options['vip']}/24")
    net = ipaddress.IPv4Network(wanted_subnet({"haproxy": lb, "masakari": vip}))
    check_lab_fit("s4", {"haproxy": lb, "masakari": vip}, net)


def test_mysql_router_routes_the_database_relation_to_galera_and_names_the_missing_relation():
    from stackha.services.mysql_router import MysqlRouterOperator

    calls = []

    class Galera:
        def ensure_database(self, app, db, user):
            calls.append((app.name, db, user))
            return "pw"

        def client_address(self, app):
            return "198.18.42.250"

    c = cloud()
    router = AppContext("masakari-mysql-router", "mysql-router", {}, list(c["masakari"].units), MemorySecrets())
    galera = AppContext("galera", "galera", {}, [], MemorySecrets())
    router.related = {"masakari": c["masakari"]}
    with pytest.raises(InvalidInput, match=r"masakari-mysql-router:db-router, galera:db-router"):
        MysqlRouterOperator().apply(router)
    router.related["galera"] = galera
    import stackha.services as services

    orig = services.operator_for
    services.operator_for = lambda kind: Galera() if kind == "galera" else orig(kind)
    try:
        op = MysqlRouterOperator()
        assert op.apply(router) == [] and op.ensure_database(router, "masakari", "masakari") == "pw"
        assert op.client_address(router) == "198.18.42.250" and calls == [("galera", "masakari", "masakari")]
    finally:
        services.operator_for = orig


def test_detection_reads_crm_mon_and_agent_times_as_utc():
    from stackha.instanceha import recovery

    assert recovery._iso("2026-12-08 04:06:29Z") == recovery._iso("2026-12-08T04:06:29.000+00:00")
    assert recovery._iso("2026-12-08T04:06:29.273+00:00") - recovery._iso("2026-12-08 04:06:29Z") == pytest.approx(0.273)
    assert recovery._iso("2026-12-08 04:06:29Z") == 1796702789.0


def test_a_host_is_monitored_only_as_a_remote_node_with_the_force_down_level():
    from stackha.instanceha import recovery

    class D:
        def __init__(self, c):
            self.c = c

        def contexts(self):
            return self.c

    assert recovery.monitored(D(cloud()), "t-n1")
    assert not recovery.monitored(D(cloud()), "t-c1")  # a controller: a cluster node, not a remote one
    assert not recovery.monitored(D(cloud(ha_options={"force_down": False}, keystone=False)), "t-n1")


def test_processmonitor_watches_the_hosts_nova_compute_with_stackhas_own_launcher():
    import yaml

    from stackha.services.openstack import nova

    c = cloud()
    files = mm.MasakariMonitorsOperator().render(c["masakari-monitors"])["masakari-monitors/2"]
    entries = yaml.safe_load(files[mm.PROCESS_LIST].content)
    assert len(entries) == 1 and entries[0]["process_name"].startswith(nova.COMPUTE_BIN)
    assert entries[0]["start_command"] == entries[0]["restart_command"] == f"{mm.BIN_DIR}/start-nova-compute"
    launcher = files[f"{mm.BIN_DIR}/start-nova-compute"]
    assert launcher.mode == 0o755 and launcher.content.startswith("#!/bin/sh")
    # idempotent (processmonitor runs every start command when it starts), same files as Host.spawn
    assert "check /run/stackha/nova-compute.json >/dev/null 2>&1 && exit 0" in launcher.content
    assert "spawn /run/stackha/nova-compute.json /run/stackha/nova-compute.pid /srv/stackha/log/nova-compute.log" in launcher.content
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(files[mm.CONF].content)
    assert cp["process"]["process_list_path"] == mm.PROCESS_LIST and cp["process"]["check_interval"] == "1"

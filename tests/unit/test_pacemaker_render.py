"""The hacluster operator's pure parts: render (corosync.conf, authkey, CIB XML, launchers), the
CIB merge, crm_mon parsing — and the lab fence agent and gateway protocol, against a fake gateway."""

from __future__ import annotations

import io
import ipaddress
import json
import os
import re
import socketserver
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

import pytest

from stackha.errors import InvalidInput
from stackha.hosts import fence_stackha_lab as agent
from stackha.hosts import labfence
from stackha.services import pacemaker as pm
from stackha.services.base import AppContext, MemorySecrets, Unit
from stackha.services.pacemaker import HAClusterOperator, parse_crm_mon

VIP = ipaddress.IPv4Interface("198.18.42.200/24")


class FakeHost:
    """Name, address and the lab's fence-device description; any other access fails the test."""

    def __init__(self, name: str, address: str, fence: bool = True):
        self.name = name
        self.address = ipaddress.IPv4Address(address)
        self.vip_interface = "eth0"
        self._fence = fence

    def __getattr__(self, attr):
        if attr == "fence_device" and self.__dict__.get("_fence"):
            return lambda: labfence.device_for(self.name)
        if attr == "fence_device":
            raise AttributeError(attr)
        raise AssertionError(f"render touched host.{attr}")


WEB = {"command": "/usr/bin/python3 -m http.server 8080 --directory /srv/web", "dirs": ["/srv/web"],
       "check_url": "http://127.0.0.1:8080/"}


def app(n: int = 3, options=None, tuning: str = "stackha", vip=VIP, fence: bool = True,
        secrets=None) -> AppContext:
    hosts = [FakeHost(f"t-h{i + 1}", f"198.18.42.{11 + i}", fence) for i in range(n)]
    principal = AppContext("web", "webtest", {"vip": str(vip.ip)} if vip else {},
                           [Unit(f"web/{i}", h) for i, h in enumerate(hosts)], MemorySecrets(), vip=vip)
    a = AppContext("ha", "hacluster", options if options is not None else {"resources": {"web": dict(WEB)}},
                   [Unit(f"ha/{i}", h) for i, h in enumerate(hosts)], secrets or MemorySecrets(),
                   related={"web": principal}, vip=vip, tuning=tuning)
    principal.related = {"ha": a}
    return a


def render(a: AppContext):
    return HAClusterOperator().render(a)


# ----------------------------------------------------------------------------- corosync
def test_corosync_conf_knet_unicast_nodelist_one_item_per_line():
    files = render(app())
    for i, unit in enumerate(("ha/0", "ha/1", "ha/2")):
        text = files[unit][pm.COROSYNC_CONF].content
        for line in text.splitlines():
            if line.lstrip().startswith("#"):
                continue
            if "{" in line:  # corosync's parser rejects anything after "{" (LAB-NOTES)
                assert line.rstrip().endswith("{"), line
            assert line.count(":") <= 1 and line.count("}") <= 1, line
        assert "transport: knet" in text and "crypto_cipher: aes256" in text and "crypto_hash: sha256" in text
        assert "mcastaddr" not in text.replace("# ", "") and "multicast" not in text
        nodes = re.findall(r"ring0_addr: (\S+)", text)
        assert nodes == ["198.18.42.11", "198.18.42.12", "198.18.42.13"]
        assert "name: t-h1" in text and "nodeid: 1" in text and "nodeid: 3" in text
        assert f"keyfile: {pm.AUTHKEY}" in text
        assert f"ha/{i}" in text.splitlines()[0]


@pytest.mark.parametrize("tuning,token,coef", [("stackha", 1000, 0), ("stock", 3000, 650)])
def test_corosync_timers_per_tuning(tuning, token, coef):
    text = render(app(tuning=tuning))["ha/0"][pm.COROSYNC_CONF].content
    assert f"token: {token}\n" in text and f"token_coefficient: {coef}\n" in text
    assert "consensus:" not in text  # corosync's default 1.2 × token
    t = pm.timers(tuning)
    assert t.token_loss_ms(3) == token + coef
    assert t.membership_ms(3) == int((token + coef) * 2.2)


def test_multicast_option_is_noted_not_used():
    a = app(options={"corosync_transport": "multicast", "corosync_mcastaddr": "226.94.1.2", "resources": {}})
    text = render(a)["ha/0"][pm.COROSYNC_CONF].content
    assert "226.94.1.2" in text and "not used" in text and "transport: knet" in text


def test_authkey_is_one_secret_mode_0400_on_every_unit_and_stable():
    secrets = MemorySecrets()
    a = app(secrets=secrets)
    first = render(a)
    keys = {first[u][pm.AUTHKEY].content for u in first}
    assert len(keys) == 1 and len(keys.pop()) == pm.AUTHKEY_LENGTH
    assert all(first[u][pm.AUTHKEY].mode == 0o400 for u in first)
    assert render(a)["ha/0"][pm.AUTHKEY].content == first["ha/0"][pm.AUTHKEY].content


def test_render_does_not_print_the_authkey_in_other_files():
    files = render(app())
    key = files["ha/0"][pm.AUTHKEY].content
    assert all(key not in f.content for p, f in files["ha/0"].items() if p != pm.AUTHKEY)


# ----------------------------------------------------------------------------- CIB
def test_resources_fence_per_node_vip_and_daemon():
    files = render(app())
    res = ET.fromstring(files["ha/0"][pm.CIB_RESOURCES].content)
    prims = {p.get("id"): p for p in res.iter("primitive")}
    assert set(prims) == {"fence-t-h1", "fence-t-h2", "fence-t-h3", "vip", "web"}
    f2 = prims["fence-t-h2"]
    assert (f2.get("class"), f2.get("type")) == ("stonith", "fence_stackha_lab")
    params = {nv.get("name"): nv.get("value") for nv in f2.iter("nvpair")}
    assert params["plug"] == "t-h2" and params["pcmk_host_list"] == "t-h2"
    assert params["socket"] == labfence.HOST_SOCKET
    vip = {nv.get("name"): nv.get("value") for nv in prims["vip"].find("instance_attributes")}
    assert vip == {"ip": "198.18.42.200", "cidr_netmask": "24", "nic": "eth0"}
    assert (prims["vip"].get("provider"), prims["vip"].get("type")) == ("heartbeat", "IPaddr2")
    web = {nv.get("name"): nv.get("value") for nv in prims["web"].find("instance_attributes")}
    assert web["binfile"] == "/srv/pacemaker/bin/web" and web["pidfile"] == "/run/stackha-pcmk/web.pid"
    assert web["monitor_hook"] == "/srv/pacemaker/bin/web-check $__OCF_ACTION"
    ops = {o.get("name"): o.get("interval") for o in prims["web"].iter("op")}
    assert ops["monitor"] == "2s"
    meta = {nv.get("name"): nv.get("value") for nv in prims["web"].find("meta_attributes")}
    assert meta == {"migration-threshold": "3", "failure-timeout": "60s", "resource-stickiness": "100"}
    ids = [e.get("id") for e in res.iter() if e.get("id")]
    assert len(ids) == len(set(ids)), "XML ids must be unique in the CIB"


def test_constraints_fence_avoids_its_target_daemon_follows_the_vip():
    files = render(app(options={"resources": {"web": dict(WEB), "db": {"command": "sleep 1000", "after": ["web"]}}}))
    con = ET.fromstring(files["ha/0"][pm.CIB_CONSTRAINTS].content)
    locs = {(c.get("rsc"), c.get("node"), c.get("score")) for c in con.iter("rsc_location")}
    assert locs == {(f"fence-t-h{i}", f"t-h{i}", "-INFINITY") for i in (1, 2, 3)}
    cols = {(c.get("rsc"), c.get("with-rsc"), c.get("score")) for c in con.iter("rsc_colocation")}
    assert cols == {("web", "vip", "INFINITY"), ("db", "vip", "INFINITY")}
    orders = {(o.get("first"), o.get("then"), o.get("kind")) for o in con.iter("rsc_order")}
    assert orders == {("vip", "web", "Mandatory"), ("vip", "db", "Mandatory"), ("web", "db", "Mandatory")}


def test_vip_comes_from_the_principal_when_the_engine_gives_none():
    a = app()
    a.vip = None  # the engine shares VIPs only among VIP providers and load balancers
    res = ET.fromstring(render(a)["ha/0"][pm.CIB_RESOURCES].content)
    vip = res.find("primitive[@id='vip']")
    assert vip is not None and vip.find("instance_attributes/nvpair[@name='ip']").get("value") == "198.18.42.200"
    a.related["web"].vip = None  # only the option is there
    a.related["web"].options.update(vip_cidr=25)
    res = ET.fromstring(render(a)["ha/0"][pm.CIB_RESOURCES].content)
    assert res.find("primitive[@id='vip']/instance_attributes/nvpair[@name='cidr_netmask']").get("value") == "25"


def test_clone_resource_carries_the_vip():
    a = app(options={"resources": {"lb": {"command": ["/usr/sbin/haproxy", "-db", "-f", "/x"], "clone": True,
                                          "check_command": "true"}}})
    files = render(a)
    res = ET.fromstring(files["ha/0"][pm.CIB_RESOURCES].content)
    clone = res.find("clone[@id='lb-clone']")
    assert clone is not None and clone.find("primitive[@id='lb']") is not None
    con = ET.fromstring(files["ha/0"][pm.CIB_CONSTRAINTS].content)
    cols = {(c.get("rsc"), c.get("with-rsc")) for c in con.iter("rsc_colocation")}
    assert cols == {("vip", "lb-clone")}
    assert {(o.get("first"), o.get("then"), o.get("kind")) for o in con.iter("rsc_order")} == {("lb-clone", "vip", "Optional")}


def test_launcher_and_check_scripts_are_valid_shell():
    a = app(options={"resources": {"web": {**WEB, "user": "nobody", "env": {"GREETING": "it's me"}, "cwd": "/srv/web"}}})
    files = render(a)["ha/1"]
    launcher = files["/srv/pacemaker/bin/web"].content
    check = files["/srv/pacemaker/bin/web-check"].content
    for script in (launcher, check):
        subprocess.run(["sh", "-n"], input=script.encode(), check=True)
    assert "exec setpriv --reuid=nobody" in launcher
    assert "export GREETING='it'\"'\"'s me'" in launcher
    assert launcher.rstrip().endswith("/usr/bin/python3 -m http.server 8080 --directory /srv/web")
    assert "curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:8080/" in check
    assert files["/srv/pacemaker/bin/web"].mode == 0o755


def test_check_script_waits_during_start_only(tmp_path):
    a = app(options={"resources": {"svc": {"command": "sleep 100", "check_command": f"test -e {tmp_path}/up",
                                           "start_timeout": 6}}})
    script = tmp_path / "check"
    script.write_text(render(a)["ha/0"]["/srv/pacemaker/bin/svc-check"].content)
    script.chmod(0o755)
    assert subprocess.run([str(script), "monitor"]).returncode == 1
    proc = subprocess.Popen([str(script), "start"])
    (tmp_path / "up").touch()
    assert proc.wait(10) == 0
    assert subprocess.run([str(script), "monitor"]).returncode == 0


def test_properties_stonith_on_quorum_stop_and_timers():
    props = dict(pm.properties(app()))
    assert props["stonith-enabled"] == "true" and props["no-quorum-policy"] == "stop"
    assert props["stonith-action"] == "off" and props["dc-deadtime"] == "5s"
    assert dict(pm.properties(app(tuning="stock")))["dc-deadtime"] == "20s"
    seed = ET.fromstring(HAClusterOperator().seed_cib(app()))
    assert {nv.get("name"): nv.get("value") for nv in seed.iter("nvpair")} == props
    with pytest.raises(InvalidInput, match="stonith_action"):
        pm.properties(app(options={"stonith_action": "on"}))


def test_fence_agent_installed_for_lab_hosts():
    files = render(app())["ha/2"]
    f = files[labfence.AGENT_PATH]
    assert f.mode == 0o755 and f.content.startswith("#!/usr/bin/python3")


@pytest.mark.parametrize("agent_name,extra", [("ipmilan", {"lanplus": "1"}), ("redfish", {"systems_uri": "/redfish/v1/Systems/1"})])
def test_real_machine_fence_devices_rendered_from_options(agent_name, extra):
    secrets = MemorySecrets()
    bmc = {f"t-h{i}": {"ip": f"198.19.0.{i}", "username": "admin", "systems_uri": "/redfish/v1/Systems/1"} for i in (1, 2, 3)}
    for i in (1, 2, 3):
        secrets.put(f"bmc-password-t-h{i}", f"pw{i}")
    a = app(options={"fence_agent": agent_name, "fence_bmc": bmc}, fence=False, secrets=secrets)
    files = render(a)["ha/0"]
    assert labfence.AGENT_PATH not in files
    res = ET.fromstring(files[pm.CIB_RESOURCES].content)
    f1 = res.find("primitive[@id='fence-t-h1']")
    assert f1.get("type") == f"fence_{agent_name}"
    params = {nv.get("name"): nv.get("value") for nv in f1.iter("nvpair")}
    assert params["ip"] == "198.19.0.1" and params["username"] == "admin" and params["password"] == "pw1"
    assert params["pcmk_host_list"] == "t-h1"
    for k, v in extra.items():
        assert params[k] == v
    assert files[pm.CIB_RESOURCES].mode == 0o600  # it holds BMC passwords


def test_refusals():
    with pytest.raises(InvalidInput, match="at least 2 nodes"):
        render(app(n=1))
    with pytest.raises(InvalidInput, match="tuning"):
        render(app(tuning="fast"))
    with pytest.raises(InvalidInput, match="fence_agent"):
        render(app(options={"fence_agent": "dummy"}))
    with pytest.raises(InvalidInput, match="no built-in fence device"):
        render(app(fence=False, options={}))
    with pytest.raises(InvalidInput, match="fence_bmc"):
        render(app(fence=False, options={"fence_agent": "ipmilan"}))
    with pytest.raises(InvalidInput, match="BMC password"):
        render(app(fence=False, options={"fence_agent": "ipmilan", "fence_bmc": {
            f"t-h{i}": {"ip": "198.19.0.1", "username": "u"} for i in (1, 2, 3)}}))
    with pytest.raises(InvalidInput, match="command"):
        render(app(options={"resources": {"web": {"check_url": "x"}}}))
    with pytest.raises(InvalidInput, match="unknown key"):
        render(app(options={"resources": {"web": {**WEB, "restart": "always"}}}))
    with pytest.raises(InvalidInput, match="resource id"):
        render(app(options={"resources": {"vip": dict(WEB)}}))
    with pytest.raises(InvalidInput, match="resource id"):
        render(app(options={"resources": {"bad id": dict(WEB)}}))
    with pytest.raises(InvalidInput, match="not a resource"):
        render(app(options={"resources": {"web": {**WEB, "after": ["db"]}}}))
    with pytest.raises(InvalidInput, match="monitor_interval"):
        render(app(options={"resources": {"web": {**WEB, "monitor_interval": "soon"}}}))


def test_cluster_count_is_checked_before_anything_runs():
    a = app(n=2, options={"cluster_count": 3, "resources": {}})
    with pytest.raises(InvalidInput, match="cluster_count"):
        HAClusterOperator().apply(a)


# ----------------------------------------------------------------------------- CIB merge
LIVE = """<cib epoch="7" num_updates="3" admin_epoch="0" validate-with="pacemaker-3.9">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="cib-bootstrap-options-dc-version" name="dc-version" value="2.1.5"/>
        <nvpair id="cib-bootstrap-options-stonith-enabled" name="stonith-enabled" value="false"/>
      </cluster_property_set>
    </crm_config>
    <nodes><node id="1" uname="t-h1"/></nodes>
    <resources/>
    <constraints/>
  </configuration>
  <status><node_state id="1" uname="t-h1"/></status>
</cib>"""


def test_wanted_configuration_keeps_pacemakers_own_and_is_a_fixed_point():
    a = app()
    files = render(a)["ha/0"]
    op = HAClusterOperator()
    live = ET.fromstring(LIVE)
    new = op.wanted_configuration(a, live, files)
    props = {nv.get("name"): nv.get("value") for nv in new.iter("nvpair") if nv.get("id", "").startswith("cib-bootstrap")}
    assert props["dc-version"] == "2.1.5" and props["stonith-enabled"] == "true"
    assert props["no-quorum-policy"] == "stop"
    assert new.find("configuration/nodes/node").get("uname") == "t-h1"
    assert new.find("status/node_state") is not None
    assert {p.get("id") for p in new.iter("primitive")} == {"fence-t-h1", "fence-t-h2", "fence-t-h3", "vip", "web"}
    assert ET.fromstring(LIVE).find("configuration/resources") is not None and len(live.find("configuration/resources")) == 0
    again = op.wanted_configuration(a, new, files)
    assert pm._canonical(again.find("configuration")) == pm._canonical(new.find("configuration"))
    assert pm._canonical(live.find("configuration")) != pm._canonical(new.find("configuration"))


# ----------------------------------------------------------------------------- crm_mon
CRM_MON = """<pacemaker-result api-version="2.25" request="crm_mon --output-as=xml --inactive --fence-history=3">
  <summary>
    <stack type="corosync"/>
    <current_dc present="true" version="2.1.5" name="t-h2" id="2" with_quorum="true" mixed_version="false"/>
  </summary>
  <nodes>
    <node name="t-h1" id="1" online="true" standby="false" maintenance="false" pending="false" unclean="false" shutdown="false" is_dc="false" resources_running="2" type="member"/>
    <node name="t-h2" id="2" online="true" standby="false" maintenance="false" pending="false" unclean="false" shutdown="false" is_dc="true" resources_running="3" type="member"/>
    <node name="t-h3" id="3" online="false" standby="false" maintenance="false" pending="false" unclean="false" shutdown="false" is_dc="false" resources_running="0" type="member"/>
  </nodes>
  <resources>
    <resource id="fence-t-h1" resource_agent="stonith:fence_stackha_lab" role="Started" active="true" blocked="false" managed="true" failed="false" nodes_running_on="1">
      <node name="t-h2" id="2" cached="true"/>
    </resource>
    <resource id="vip" resource_agent="ocf:heartbeat:IPaddr2" role="Started" active="true" blocked="false" managed="true" failed="false" nodes_running_on="1">
      <node name="t-h2" id="2" cached="true"/>
    </resource>
    <resource id="web" resource_agent="ocf:heartbeat:anything" role="Started" active="true" blocked="false" managed="true" failed="false" nodes_running_on="1">
      <node name="t-h2" id="2" cached="true"/>
    </resource>
    <clone id="lb-clone" multi_state="false" unique="false" managed="true" failed="false">
      <resource id="lb" resource_agent="ocf:heartbeat:anything" role="Started" active="true" failed="false" nodes_running_on="1">
        <node name="t-h1" id="1" cached="true"/>
      </resource>
      <resource id="lb" resource_agent="ocf:heartbeat:anything" role="Started" active="true" failed="false" nodes_running_on="1">
        <node name="t-h2" id="2" cached="true"/>
      </resource>
      <resource id="lb" resource_agent="ocf:heartbeat:anything" role="Stopped" active="false" failed="false" nodes_running_on="0"/>
    </clone>
  </resources>
  <node_history>
    <node name="t-h2">
      <resource_history id="web" orphan="false" migration-threshold="3" fail-count="1" last-failure="Sat Nov 21 06:16:40 2026"/>
      <resource_history id="vip" orphan="false" migration-threshold="1000000"/>
    </node>
    <node name="t-h1">
      <resource_history id="web" orphan="false" migration-threshold="3" fail-count="INFINITY"/>
    </node>
  </node_history>
  <failures>
    <failure op_key="web_monitor_2000" node="t-h2" exitstatus="error" exitreason="" exitcode="1" call="27" status="complete" task="monitor"/>
  </failures>
  <fence_history>
    <fence_event action="off" target="t-h3" client="pacemaker-controld.71" origin="t-h2" status="success" delegate="t-h1" completed="2026-11-21 06:17:30Z"/>
    <fence_event action="off" target="t-h3" client="pacemaker-controld.71" origin="t-h2" status="success" delegate="t-h1" completed="2026-11-21 06:16:14Z"/>
  </fence_history>
  <status code="0" message="OK"/>
</pacemaker-result>"""


def test_parse_crm_mon():
    v = parse_crm_mon(CRM_MON)
    assert v.quorum and v.dc == "t-h2"
    assert {n: s.state for n, s in v.nodes.items()} == {"t-h1": "online", "t-h2": "online", "t-h3": "offline"}
    assert v.nodes["t-h2"].is_dc
    assert v.where("vip") == ["t-h2"] and v.where("web") == ["t-h2"] and v.where("lb") == ["t-h1", "t-h2"]
    assert v.where("nothing") == []
    assert v.running_on("t-h2") == ["fence-t-h1", "lb", "vip", "web"]
    assert sorted(v.failcounts) == [("t-h1", "web", 1000000), ("t-h2", "web", 1)]
    assert v.failures == [{"op": "web_monitor_2000", "node": "t-h2", "status": "error", "exit_reason": ""}]
    assert [e.completed for e in v.fence_history] == ["2026-11-21 06:16:14Z", "2026-11-21 06:17:30Z"]
    assert v.fence_history[0].target == "t-h3" and v.fence_history[0].delegate == "t-h1"


def test_a_start_in_flight_is_not_started():
    text = CRM_MON.replace('<resource id="web" resource_agent="ocf:heartbeat:anything" role="Started" active="true"',
                           '<resource id="web" resource_agent="ocf:heartbeat:anything" role="Started" pending="Starting" active="true"')
    v = parse_crm_mon(text)
    assert v.where("web") == ["t-h2"] and v.started("web") == [] and v.resources["web"].pending == "Starting"
    assert v.started("vip") == ["t-h2"] and v.started("lb") == ["t-h1", "t-h2"]
    starting = parse_crm_mon(CRM_MON.replace('<resource id="vip" resource_agent="ocf:heartbeat:IPaddr2" role="Started"',
                                             '<resource id="vip" resource_agent="ocf:heartbeat:IPaddr2" role="Starting"'))
    assert starting.where("vip") == ["t-h2"] and starting.started("vip") == []


def test_parse_crm_mon_minority_and_unclean():
    text = CRM_MON.replace('with_quorum="true"', 'with_quorum="false"').replace(
        '<node name="t-h3" id="3" online="false" standby="false" maintenance="false" pending="false" unclean="false"',
        '<node name="t-h3" id="3" online="false" standby="false" maintenance="false" pending="false" unclean="true"')
    v = parse_crm_mon(text)
    assert not v.quorum and v.nodes["t-h3"].state == "UNCLEAN"
    no_dc = parse_crm_mon(CRM_MON.replace('present="true"', 'present="false"'))
    assert no_dc.dc is None
    with pytest.raises(ValueError):
        parse_crm_mon("not xml")
    with pytest.raises(ValueError):
        parse_crm_mon("<cib/>")


# ----------------------------------------------------------------------------- fence agent
class FakeGateway(socketserver.ThreadingUnixStreamServer):
    """Answers like the lab gateway; records every request line."""

    def __init__(self, path: str, hosts=("t-h1", "t-h2", "t-h3")):
        self.lines: list[str] = []
        self.power = {h: "on" for h in hosts}
        gw = self

        class H(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline().decode().strip()
                gw.lines.append(line)
                words = line.split()
                if words == ["ping"]:
                    ans = "ok pong"
                elif words == ["list"]:
                    ans = "ok " + " ".join(gw.power)
                elif len(words) == 2 and words[1] in gw.power:
                    if words[0] in ("off", "on"):
                        gw.power[words[1]] = words[0]
                    elif words[0] == "reboot":
                        gw.power[words[1]] = "on"
                    ans = f"ok {gw.power[words[1]]}"
                else:
                    ans = f"error {words[1] if len(words) > 1 else '?'!r} is not a host of lab t"
                self.wfile.write(ans.encode() + b"\n")

        super().__init__(path, H)


@pytest.fixture
def gateway(tmp_path):
    path = str(tmp_path / "fence.sock")
    gw = FakeGateway(path)
    t = threading.Thread(target=gw.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield path, gw
    gw.shutdown()
    gw.server_close()


def run_agent(argv=None, stdin: str = ""):
    out = io.StringIO()
    old = sys.stdout
    sys.stdout = out
    try:
        rc = agent.main(argv if argv is not None else [], io.StringIO(stdin))
    finally:
        sys.stdout = old
    return rc, out.getvalue()


def test_agent_metadata_is_an_rhcs_description():
    rc, out = run_agent(["-o", "metadata"])
    assert rc == 0
    root = ET.fromstring(out)
    assert root.get("name") == "fence_stackha_lab"
    assert {p.get("name") for p in root.iter("parameter")} >= {"action", "plug", "port", "socket"}
    assert {a.get("name") for a in root.iter("action")} >= {"on", "off", "reboot", "status", "list", "monitor", "metadata"}


def test_agent_stdin_options_as_pacemaker_passes_them(gateway):
    path, gw = gateway
    rc, _ = run_agent(stdin=f"action=off\nport=t-h2\nnodename=t-h1\n# comment\nsocket={path}\nunknown=1\n")
    assert rc == 0 and gw.lines == ["off t-h2"] and gw.power["t-h2"] == "off"
    rc, out = run_agent(["-o", "status", "-n", "t-h2", "--socket", path])
    assert rc == 2 and "OFF" in out  # fence-agents: status exit 2 = off
    rc, _ = run_agent(["--action=reboot", "--plug=t-h2", f"--socket={path}"])
    assert rc == 0 and gw.power["t-h2"] == "on"
    rc, out = run_agent(["-o", "status", "-n", "t-h2", "--socket", path])
    assert rc == 0 and "ON" in out


def test_agent_list_monitor_and_refusals(gateway, tmp_path):
    path, gw = gateway
    rc, out = run_agent(["-o", "list", "--socket", path])
    assert rc == 0 and out.splitlines() == ["t-h1,t-h1", "t-h2,t-h2", "t-h3,t-h3"]
    assert run_agent(["-o", "monitor", "--socket", path])[0] == 0
    assert run_agent(["-o", "off", "-n", "elsewhere-h1", "--socket", path])[0] == 1
    assert run_agent(["-o", "off", "--socket", path])[0] == 1  # no plug
    assert run_agent(["-o", "frobnicate", "-n", "t-h1", "--socket", path])[0] == 1
    missing = str(tmp_path / "none.sock")
    assert run_agent(["-o", "monitor", "--socket", missing])[0] == 1
    assert run_agent(["-o", "off", "-n", "t-h1", "--socket", missing])[0] == 1
    assert gw.power["t-h1"] == "on"


def test_agent_script_runs_standalone_under_debian_python(gateway):
    path, gw = gateway
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    res = subprocess.run([py, "-I", "-S", str(labfence.AGENT_SOURCE)], input=f"action=off\nplug=t-h3\nsocket={path}\n",
                         capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, res.stderr
    assert gw.power["t-h3"] == "off"


def test_gateway_client_request(gateway):
    path, gw = gateway
    assert labfence.request(path, "ping") == ["pong"]
    assert labfence.request(path, "status t-h1") == ["on"]
    with pytest.raises(labfence.FenceError, match="not a host"):
        labfence.request(path, "off other-h9")
    with pytest.raises(labfence.FenceError, match="unreachable"):
        labfence.request(path + ".missing", "ping", timeout_s=1)


def test_gateway_answers_only_for_its_own_lab(monkeypatch, tmp_path):
    class FH:
        def __init__(self, name):
            self.name, self.on, self.calls = name, True, []

        def is_on(self):
            return self.on

        def power_off(self):
            self.calls.append("off")
            self.on = False

        def power_on(self):
            self.calls.append("on")
            self.on = True

    hosts = {"t-h1": FH("t-h1"), "t-h2": FH("t-h2")}

    class FakeLab:
        dir = tmp_path

        def __init__(self):
            self.hosts = hosts

    from stackha.hosts import lab as labmod

    monkeypatch.setattr(labmod.Lab, "load", classmethod(lambda cls, prefix, state_dir=None: FakeLab()))
    gw = object.__new__(labfence.GatewayServer)
    gw.prefix, gw.state_dir, gw.lab_dir = "t", tmp_path, tmp_path
    monkeypatch.setattr(gw, "_log", lambda text: None, raising=False)
    assert gw.answer("ping", "t-h1") == "ok pong"
    assert gw.answer("list", "t-h1") == "ok t-h1 t-h2"
    assert gw.answer("off other-h2", "t-h1").startswith("error")
    assert gw.answer("off", "t-h1").startswith("error")
    assert gw.answer("halt t-h2", "t-h1").startswith("error unknown request")
    assert gw.answer("status h2", "t-h1") == "ok on"  # the bare suffix names the lab's host
    assert gw.answer("off t-h2", "t-h1") == "ok off" and hosts["t-h2"].calls == ["off"]
    assert gw.answer("reboot t-h2", "t-h1") == "ok on" and hosts["t-h2"].calls == ["off", "off", "on"]
    history = [json.loads(x) for x in (tmp_path / "fence-history.jsonl").read_text().splitlines()]
    assert [(h["action"], h["target"], h["by"], h["result"]) for h in history] == [
        ("off", "t-h2", "t-h1", "ok off"), ("reboot", "t-h2", "t-h1", "ok on")]

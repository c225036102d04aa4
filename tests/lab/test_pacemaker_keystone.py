"""Issue 7 acceptance: keystone + hacluster (vip_provider pacemaker) from a bundle, on a real lab.

The bundle (written below): galera ×3 and keystone ×3 on machines 0–2, haproxy ×2 + keepalived on
machines 3–4 holding the database VIP (.250); keystone has its own VIP (.249) moved by Pacemaker
(``hacluster`` subordinate: an HAProxy clone on the keystone hosts bound to the VIP, the VIP
colocated with it).  Keystone is also related to haproxy, so it is reachable through the
keepalived VIP too — the same run measures both VIP providers for a power-off of the VIP holder.
One deploy for the module (≈ 75 s); the finalizer tears the lab down, also after a failure.
"""

from __future__ import annotations

import os
import secrets
import time

import pytest

from stackha import cli
from stackha.cli.deploy import run_deploy
from stackha.engine.deploy import Deployment
from stackha.hosts.lab import LEASE_DIR, teardown
from stackha.services import operator_for
from stackha.verify import scenarios as ps

BUNDLE = """
series: bookworm
machines: {"0": {}, "1": {}, "2": {}, "3": {}, "4": {}}
applications:
  galera: {charm: ch:percona-cluster, num_units: 3, to: ["0", "1", "2"]}
  keystone:
    charm: ch:keystone
    num_units: 3
    to: ["0", "1", "2"]
    options: {vip: 198.18.NET.249, vip_cidr: 24, vip_provider: pacemaker}
  hacluster: {charm: ch:hacluster, options: {cluster_count: 3}}
  haproxy:
    charm: ch:haproxy
    num_units: 2
    to: ["3", "4"]
    options: {vip: 198.18.NET.250, vip_cidr: 24, vip_provider: keepalived}
  keepalived: {charm: ch:keepalived}
relations:
  - [keystone:shared-db, galera:shared-db]
  - [haproxy:reverseproxy, galera:db]
  - [haproxy:reverseproxy, keystone:website]
  - [keepalived:juju-info, haproxy:juju-info]
  - [hacluster:ha, keystone:ha]
"""


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("lab tests need root")
    state = tmp_path_factory.mktemp("state")
    taken = {p.name for p in LEASE_DIR.iterdir()} if LEASE_DIR.is_dir() else set()
    third = next(t for t in range(101, 256) if str(t) not in taken)
    bundle = tmp_path_factory.mktemp("bundle") / "keystone-hacluster.yaml"
    bundle.write_text(BUNDLE.replace("NET", str(third)))
    prefix = "tk" + secrets.token_hex(3)
    old = cli.settings.state_dir
    cli.settings.state_dir = state
    t0 = time.monotonic()
    try:
        report = run_deploy(bundle, [], prefix, quiet=True)
        yield {"report": report, "seconds": time.monotonic() - t0, "d": Deployment.open(prefix, state)}
    finally:
        cli.settings.state_dir = old
        teardown(prefix, state)


def token_issue(d) -> tuple[bool, str]:
    """``openstack token issue`` from the client host with the deployment's clouds.yaml."""
    res = d.client.run(["env", "OS_CLIENT_CONFIG_FILE=/srv/stackha/clouds.yaml", "openstack", "--os-cloud",
                        f"stackha-{d.name}", "token", "issue", "-f", "value", "-c", "expires"], timeout=120)
    return res.ok, (res.stdout + res.stderr).strip()[-300:]


def test_bundle_with_keystone_and_hacluster_deploys_and_serves_tokens_on_the_pacemaker_vip(cloud):
    d = cloud["d"]
    assert not cloud["report"].failed, cloud["report"].failed
    print(f"\nkeystone + hacluster bundle deployed in {cloud['seconds']:.0f} s")
    statuses = {s.app: s for s in d.status()}
    for app, st in statuses.items():
        assert all(u.state.value == "active" for u in st.units), (app, [(u.unit, u.message) for u in st.units])
    ha = statuses["hacluster"].facts
    ctxs = d.contexts()
    vip = str(ctxs["keystone"].vip.ip)
    assert ha["vip"].startswith(vip) and ha["quorum"] and len(ha["vip_holders"]) == 1
    assert sorted(ha["resources"]["haproxy"]) == sorted(u.host.name for u in ctxs["keystone"].units)
    assert ha["resources"]["vip"] == ha["vip_holders"]
    clouds = (d.dir / "clouds.yaml").read_text()
    assert f"http://{vip}:5000/v3" in clouds  # keystone's endpoints are on the Pacemaker VIP
    ok, out = token_issue(d)
    assert ok, out
    assert Deployment.open(d.name, d.state_dir).deploy().changes.get("hacluster") == []  # idempotent

    # a changed frontend (balance) reaches the HAProxy clone as a graceful reload (SIGUSR2), no restart
    op = operator_for("hacluster")
    ha_ctx = d.contexts()["hacluster"]
    pids = {u.name: op.daemon_pid(ha_ctx, u, "haproxy") for u in ha_ctx.units}
    ha_ctx.related["keystone"].options["balance"] = "leastconn"
    changes = op.apply(ha_ctx)
    assert sorted(x for x in changes if "reloaded" in x) == [f"{u.name}: haproxy reloaded (SIGUSR2)" for u in ha_ctx.units], changes
    assert {u.name: op.daemon_pid(ha_ctx, u, "haproxy") for u in ha_ctx.units} == pids  # the masters stay
    assert all(b"balance leastconn" in u.host.read_file("/srv/haproxy/haproxy.cfg") for u in ha_ctx.units)
    ok, out = token_issue(d)
    assert ok, out
    assert any("reloaded" in x for x in op.apply(d.contexts()["hacluster"]))  # back to the bundle's roundrobin


def test_token_issue_survives_vip_node_poweroff_and_fence_history_shows_it(cloud):
    d = cloud["d"]
    ctxs = d.contexts()
    ha, ks, lb = ctxs["hacluster"], ctxs["keystone"], ctxs["haproxy"]
    pw = operator_for("keystone").admin_password(ks)
    client = d.client
    probe = ps.keystone_token_probe(client, f"http://{ks.vip.ip}:5000/v3", pw, name="pcmk")
    r = ps.vip_node_poweroff(ha, client, probe, restore=False)
    for t, e in r.timeline:
        print(f"  {t:7.2f} s  {e}")
    assert r.ok, r.problems
    assert r.facts["fence"]["target"] == r.facts["victim"] and r.facts["fence"]["status"] == "success"
    assert not r.gap_open and r.max_vip_holders == 1
    ok, out = token_issue(d)
    assert ok, out  # through the VIP, now on another node
    view = operator_for("hacluster").observe(ha)
    assert any(e["target"] == r.facts["victim"] for e in view.facts["fence_history"])
    d.host(r.facts["victim"]).power_on()
    d.recover()
    assert all(u.state.value == "active" for s in d.status() for u in s.units)

    # the same fault for keepalived's VIP (the haproxy pair), same cloud, same probe
    k = ps.vip_poweroff_gap([u.host for u in lb.units], lb.vip.ip, client,
                            ps.keystone_token_probe(client, f"http://{lb.vip.ip}:5000/v3", pw, name="ka"))
    assert k.ok, k.problems
    d.host(k.facts["victim"]).power_on()
    d.recover()
    print(f"token issue through the VIP, VIP-holder power-off (load {os.getloadavg()[0]:.1f}): "
          f"pacemaker gap {r.gap_ms:.0f} ms ({r.failed}/{r.ops} failed; VIP moved {r.facts['vip_moved_s']} s, "
          f"fenced ≈{r.facts['fenced_after_s']:.0f} s), keepalived gap {k.gap_ms:.0f} ms ({k.failed}/{k.ops} failed; "
          f"VIP moved {k.facts['vip_moved_s']} s)")
    assert all(u.state.value == "active" for s in d.status() for u in s.units)

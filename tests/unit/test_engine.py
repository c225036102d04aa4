"""Engine pieces that need no root: plan order, host naming, VIP propagation, secrets, state."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest

from stackha.engine.deploy import Deployment, parse_vip
from stackha.hosts.labprovider import check_lab_fit, host_suffix, wanted_subnet
from stackha.engine.state import FileSecrets, StateStore
from stackha.errors import InvalidInput
from stackha.model import load_bundle, load_bundle_text
from stackha.plan import build_plan

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lab-control-plane.yaml"


def test_plan_orders_tiers_database_before_balancer_before_identity():
    plan = build_plan(load_bundle(EXAMPLE))
    order = plan.order
    assert order.index("galera") < order.index("haproxy") < order.index("keepalived")
    assert order.index("haproxy") < order.index("keystone")
    assert order.index("galera") < order.index("keystone")
    assert "keystone" in plan.dependants("galera")
    assert "rabbitmq-server" not in plan.dependants("galera")


def test_plan_puts_subordinate_after_principal_whatever_the_listing_order():
    b = load_bundle_text("""
applications:
  keepalived: {charm: ch:keepalived}
  haproxy: {charm: ch:haproxy, num_units: 2, options: {vip: 198.18.7.250}}
relations:
  - [keepalived, haproxy]
""")
    order = build_plan(b).order
    assert order.index("haproxy") < order.index("keepalived")


CLOUD = EXAMPLE.with_name("lab-cloud.yaml")


def test_plan_ready_runs_independent_applications_of_one_tier_together():
    plan = build_plan(load_bundle(CLOUD))
    data = {"galera", "rabbitmq-server"}
    # Galera and RabbitMQ (tier 1) start together; Swift storage (tier 2) waits for both.
    assert plan.ready("galera", set()) and plan.ready("rabbitmq-server", set())
    assert not plan.ready("swift-storage-z1", {"galera"})
    assert plan.ready("swift-storage-z1", data)
    # Same tier, no relation: placement, neutron and the Nova controller together; Glance stores
    # its images in Swift (KindInfo.depends_on) so it waits for swift-proxy.
    apis = data | {"swift-storage-z1", "swift-storage-z2", "swift-storage-z3", "haproxy",
                   "keepalived", "keystone"}
    for app in ("placement", "neutron-api", "nova-cloud-controller", "swift-proxy"):
        assert plan.ready(app, apis), app
    assert not plan.ready("glance", apis)
    assert plan.ready("glance", apis | {"swift-proxy"})
    # Compute hosts (tier 8) wait for every API service.
    assert not plan.ready("nova-compute", apis | {"swift-proxy", "glance", "placement", "neutron-api"})


def test_plan_subordinate_is_not_a_barrier_for_its_principal():
    plan = build_plan(load_bundle(CLOUD))
    assert plan.tiers["keepalived"] >= plan.tiers["haproxy"]
    assert plan.ready("haproxy", {"galera", "rabbitmq-server", "swift-storage-z1", "swift-storage-z2",
                                  "swift-storage-z3"})
    assert not plan.ready("keepalived", {"galera", "rabbitmq-server"})


@pytest.mark.parametrize("key,expected", [("0", "m0"), ("12", "m12"), ("1/lxd/0", "m1lxd0"),
                                          ("new:keystone/0", "nkeystone0")])
def test_host_suffix(key, expected):
    assert host_suffix(key) == expected


def test_vips_propagate_from_balancer_to_provider_and_served_apps():
    d = Deployment.for_bundle("x", load_bundle(EXAMPLE), Path("/nonexistent"))
    vips = d.vips()
    vip = ipaddress.IPv4Interface("198.18.100.250/24")
    assert vips == {"haproxy": vip, "keepalived": vip, "galera": vip, "keystone": vip}
    assert "rabbitmq-server" not in vips  # brokers are given to clients as a list, not a VIP
    assert wanted_subnet(d.vips()) == "198.18.100.0/24"


def test_vip_outside_lab_range_is_refused_with_its_path():
    text = EXAMPLE.read_text().replace("vip: 198.18.100.250", "vip: 203.0.113.250")
    d = Deployment.for_bundle("x", load_bundle_text(text), Path("/nonexistent"))
    with pytest.raises(InvalidInput, match=r"applications\.haproxy\.options\.vip"):
        wanted_subnet(d.vips())
    with pytest.raises(InvalidInput, match=r"applications\.haproxy\.options\.vip"):
        d.check()  # the lab provider's check, before anything exists
    with pytest.raises(InvalidInput, match="outside lab"):
        check_lab_fit("x", d.vips(), ipaddress.IPv4Network("198.18.5.0/24"))


def test_parse_vip_rejects_garbage_naming_the_field():
    with pytest.raises(InvalidInput, match=r"applications\.ks\.options\.vip"):
        parse_vip({"vip": "not-an-ip"}, "applications.ks")
    assert parse_vip({"vip": "198.18.1.250", "vip_cidr": 24}, "a") == ipaddress.IPv4Interface("198.18.1.250/24")


def test_file_secrets_are_generated_once_and_stored_0600(tmp_path):
    s = FileSecrets(tmp_path / "secrets" / "galera")
    first = s.get("root-password")
    assert len(first) == 32 and first.isalnum()
    assert s.get("root-password") == first
    assert FileSecrets(tmp_path / "secrets" / "galera").get("root-password") == first
    path = tmp_path / "secrets" / "galera" / "root-password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert s.get("other") != first
    s.put("fernet-keys", '{"0": "abc"}')
    assert s.read("fernet-keys") == '{"0": "abc"}'
    assert stat.S_IMODE((path.parent / "fernet-keys").stat().st_mode) == 0o600
    assert s.read("missing") is None
    with pytest.raises(ValueError):
        s.get("../escape")


def test_state_store_records_units_and_meta(tmp_path):
    st = StateStore(tmp_path / "d")
    st.set("tuning", "stock")
    st.set_unit("galera/0", "galera", "demo-m0", "active", "Synced")
    st.set_unit("galera/0", "galera", "demo-m0", "error", "boom")
    again = StateStore(tmp_path / "d")
    assert again.get("tuning") == "stock"
    rec = again.unit("galera/0")
    assert (rec.state, rec.message, rec.host) == ("error", "boom", "demo-m0")
    assert [u.unit for u in again.units()] == ["galera/0"]

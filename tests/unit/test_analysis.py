"""Analysis: single points of failure per failure domain, quorum, VIPs, conflicts, relations."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from stackha.model import load_bundle, load_bundle_text
from stackha.model.analysis import AnalysisReport, analyze

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LAB: dict[str, Any] = yaml.safe_load((EXAMPLES / "lab-control-plane.yaml").read_text())


def lab(**changes: Any) -> dict[str, Any]:
    """A copy of the lab bundle with ``applications.<app>`` keys changed (app__key=value)."""
    d = copy.deepcopy(LAB)
    for k, v in changes.items():
        app, key = k.split("__")
        app = app.replace("_", "-")
        if v is None:
            d["applications"][app].pop(key, None)
        else:
            d["applications"][app][key] = v
    return d


def report(d: dict[str, Any] | str) -> AnalysisReport:
    text = d if isinstance(d, str) else yaml.safe_dump(d)
    return analyze(load_bundle_text(text))


def codes(r: AnalysisReport, severity: str | None = None) -> set[tuple[str, str]]:
    return {(f.code, f.path) for f in r.findings if severity is None or f.severity == severity}


def test_lab_has_no_error_or_warning_and_four_nines() -> None:
    r = analyze(load_bundle(EXAMPLES / "lab-control-plane.yaml"))
    assert not r.has_errors and not r.has_warnings, r.findings
    assert r.availability.cloud is not None
    assert r.availability.cloud.figure.availability >= 0.9999
    assert r.classification["galera"].state == "stateful"
    assert r.classification["keystone"].state == "stateless"
    assert r.classification["keystone"].mode == "active/active"
    assert r.classification["haproxy"].mode == "active/passive"  # a VIP fronts it


def test_removing_one_galera_unit_gives_a_quorum_warning() -> None:
    r = report(lab(galera__num_units=2, galera__to=["0", "1"]))
    assert ("quorum", "applications.galera.num_units") in codes(r, "warning")
    assert not any(f.code == "spof" and "galera" in f.path for f in r.findings)
    f = next(f for f in r.findings if f.code == "quorum")
    assert "2" in f.message and f.fix


def test_all_keystone_units_on_one_machine_is_a_spof_error() -> None:
    r = report(lab(keystone__to=["0", "0", "0"]))
    assert ("spof", "applications.keystone.to") in codes(r, "error")
    assert r.has_errors


def test_keystone_units_in_containers_of_one_machine_is_a_spof() -> None:
    r = report(lab(keystone__to=["lxd:1", "lxd:1", "lxd:1"]))
    assert ("spof", "applications.keystone.to") in codes(r, "error")


def test_rabbitmq_with_one_unit_is_a_spof() -> None:
    r = report(lab(rabbitmq_server__num_units=1, rabbitmq_server__to=["0"]))
    assert ("spof", "applications.rabbitmq-server.num_units") in codes(r, "error")


def test_quorum_majority_on_one_machine_is_a_spof() -> None:
    r = report(lab(galera__to=["0", "0", "1"]))
    f = [f for f in r.findings if f.code == "spof" and f.path == "applications.galera.to"]
    assert f and "quorum" in f[0].message
    # a stateless app with 2 of 3 units on one machine survives the loss of any one machine
    r = report(lab(keystone__to=["0", "0", "1"]))
    assert not any(f.code == "spof" and "keystone" in f.path for f in r.findings)


def test_even_quorum_cluster_warns() -> None:
    d = lab(rabbitmq_server__num_units=4, rabbitmq_server__to=["0", "1", "2", "3"])
    r = report(d)
    assert ("quorum", "applications.rabbitmq-server.num_units") in codes(r, "warning")


def test_zone_failure_domain() -> None:
    d = copy.deepcopy(LAB)
    d["machines"]["0"]["zone"] = "az1"
    d["machines"]["1"]["zone"] = "az1"
    d["machines"]["2"]["zone"] = "az2"
    d["machines"]["3"]["zone"] = "az1"
    d["machines"]["4"]["zone"] = "az2"
    r = report(d)
    # az1 holds 2 of 3 galera units: losing it loses the majority
    assert ("spof-zone", "applications.galera.to") in codes(r, "warning")
    assert ("spof-zone", "applications.keystone.to") not in codes(r)
    assert ("spof-zone", "applications.haproxy.to") not in codes(r)


def test_vip_without_provider_is_a_spof() -> None:
    d = copy.deepcopy(LAB)
    d["relations"] = [r for r in d["relations"] if "keepalived:juju-info" not in r]
    r = report(d)
    assert ("vip-provider", "applications.haproxy.options.vip_provider") in codes(r, "error")
    d["applications"]["haproxy"]["options"].pop("vip_provider")
    r = report(d)
    assert ("spof", "applications.haproxy.options.vip") in codes(r, "error")


def test_both_providers_without_choice_warns() -> None:
    d = copy.deepcopy(LAB)
    d["applications"]["haproxy"]["options"].pop("vip_provider")
    d["applications"]["hacluster"] = {"charm": "ch:hacluster"}
    d["relations"].append(["haproxy:ha", "hacluster:ha"])
    r = report(d)
    assert ("vip-providers", "applications.haproxy.options") in codes(r, "warning")
    # and a 2-unit principal makes a 2-member Corosync cluster, with cluster_count 3 by default
    assert ("quorum", "applications.hacluster") in codes(r, "warning")
    assert ("cluster-count", "applications.hacluster.options.cluster_count") in codes(r, "error")


def test_vrrp_router_id_conflict() -> None:
    d = copy.deepcopy(LAB)
    d["machines"]["5"] = {}
    d["machines"]["6"] = {}
    d["applications"]["haproxy-internal"] = {
        "charm": "ch:haproxy", "num_units": 2, "to": ["5", "6"],
        "options": {"vip": "198.18.100.251", "vip_provider": "keepalived"}}
    d["applications"]["keepalived-internal"] = {"charm": "ch:keepalived", "options": {"router_id": 51}}
    d["relations"] += [["keepalived-internal:juju-info", "haproxy-internal:juju-info"],
                       ["haproxy-internal", "rabbitmq-server"]]
    r = report(d)
    assert ("vrrp-router-id", "applications.keepalived-internal.options.router_id") in codes(r, "error")
    d["applications"]["keepalived-internal"]["options"]["router_id"] = 52
    assert not report(d).has_errors


def test_corosync_mcast_conflict() -> None:
    text = """
applications:
  keystone: {charm: cs:keystone, num_units: 3, options: {vip: 198.19.128.2}}
  glance: {charm: cs:glance, num_units: 3, options: {vip: 198.19.128.5}}
  hacluster2: {charm: cs:hacluster, options: {corosync_transport: multicast, corosync_mcastaddr: 226.94.1.2}}
  hacluster5: {charm: cs:hacluster, options: {corosync_mcastaddr: 226.94.1.2}}
relations:
  - [keystone, hacluster2]
  - [glance, hacluster5]
"""
    r = report(text)
    assert ("corosync-mcast", "applications.hacluster5.options.corosync_mcastaddr") in codes(r, "error")
    r = report(text.replace("corosync_mcastaddr: 226.94.1.2}}\nrel", "corosync_mcastaddr: 226.94.1.5}}\nrel"))
    assert not any(f.code == "corosync-mcast" for f in r.findings)


def test_missing_relations() -> None:
    text = """
applications:
  keystone: {charm: ch:keystone, num_units: 3}
  ncc: {charm: ch:nova-cloud-controller, num_units: 3}
  galera: {charm: ch:percona-cluster, num_units: 3}
relations:
  - [ncc, galera]
"""
    r = report(text)
    msgs = {f.message for f in r.findings if f.code == "missing-relation"}
    assert any("keystone" in m and "database" in m for m in msgs)
    assert any(m.startswith("ncc") and "amqp" in m for m in msgs)
    assert any(m.startswith("ncc") and "identity" in m for m in msgs)
    assert not any(m.startswith("ncc") and "database" in m for m in msgs)


def test_unknown_keys_and_options_are_reported_with_path() -> None:
    d = copy.deepcopy(LAB)
    d["applications"]["keystone"]["num_unit"] = 3
    d["applications"]["keystone"]["channel"] = "stable"
    d["applications"]["keystone"]["options"]["vip_cdir"] = 24
    d["applications"]["keystone"]["options"]["admin-role"] = "Admin"
    d["machines"]["0"]["colour"] = "blue"
    d["descriptoin"] = "typo"
    r = report(d)
    c = codes(r)
    assert ("unknown-key", "applications.keystone.num_unit") in c
    assert ("ignored-key", "applications.keystone.channel") in c
    assert ("unknown-option", "applications.keystone.options.vip_cdir") in c
    assert ("ignored-options", "applications.keystone.options") in c
    assert ("unknown-key", "machines.0.colour") in c
    assert ("unknown-key", "descriptoin") in c
    fix = next(f.fix for f in r.findings if f.path == "applications.keystone.num_unit")
    assert "num_units" in fix


def test_seed_000_reports_the_ncc_vip_without_hacluster() -> None:
    r = analyze(load_bundle(EXAMPLES / "seed-000-itri.yaml"))
    assert ("spof", "applications.nova-cloud-controller.options.vip") in codes(r, "error")
    assert not any(f.code in ("corosync-mcast", "quorum") for f in r.findings)
    assert r.classification["percona"].state == "stateful"
    assert r.classification["neutron-gateway"].mode == "active/passive"


def test_seed_004_reports_what_its_author_fixed_by_hand() -> None:
    r = analyze(load_bundle(EXAMPLES / "seed-004-openstack-base.yaml",
                            [EXAMPLES / "seed-004-masakari-overlay.yaml"]))
    c = codes(r)
    assert ("missing-relation", "applications.masakari-mysql-router") in c
    assert ("missing-certificates", "applications.masakari") in c
    assert ("unknown-charm", "applications.ovn-central.charm") in c
    assert ("spof", "applications.keystone.num_units") in c  # openstack-base is not HA
    assert not any("masakari.num_units" in p for _, p in c)


def test_analyze_rejects_bad_unit_availability() -> None:
    b = load_bundle(EXAMPLES / "lab-control-plane.yaml")
    with pytest.raises(ValueError):
        analyze(b, unit_availability=1.0)


def test_keepalived_without_router_id_gets_the_operators_id_so_distinct_vips_do_not_conflict():
    from stackha.model import load_bundle_text
    from stackha.model.analysis import analyze
    from stackha.services.keepalived import allocate_router_id

    def bundle(vip_a, vip_b):
        return load_bundle_text(f"""
machines: {{"0": {{}}, "1": {{}}}}
applications:
  lb-a: {{charm: ch:haproxy, num_units: 2, to: ["0", "1"], options: {{vip: {vip_a}}}}}
  lb-b: {{charm: ch:haproxy, num_units: 2, to: ["0", "1"], options: {{vip: {vip_b}}}}}
  ka-a: {{charm: ch:keepalived}}
  ka-b: {{charm: ch:keepalived}}
relations:
  - [ka-a, lb-a]
  - [ka-b, lb-b]
""")

    codes = lambda b: [f.code for f in analyze(b).findings]  # noqa: E731
    assert "vrrp-router-id" not in codes(bundle("198.18.7.250", "198.18.7.251"))
    assert allocate_router_id("198.18.7.250") == 250
    # Same last octet in two /24s: the operator would allocate the same id; the analysis says so.
    assert "vrrp-router-id" in codes(bundle("198.18.7.250", "198.18.8.250"))


# --------------------------------------------------------------------------- Swift zones
def swift_bundle(zones: list[int], replicas: int = 3, assignment: str = "manual") -> dict[str, Any]:
    d = copy.deepcopy(LAB)
    d["machines"].update({str(10 + i): {} for i in range(len(zones))})
    d["applications"]["swift-proxy"] = {"charm": "ch:swift-proxy", "num_units": 3, "to": ["0", "1", "2"],
                                        "options": {"replicas": replicas, "zone-assignment": assignment}}
    d["relations"] += [["swift-proxy", "keystone"], ["haproxy", "swift-proxy"]]
    for i, z in enumerate(zones):
        name = f"swift-storage-z{i}"
        d["applications"][name] = {"charm": "ch:swift-storage", "num_units": 1, "to": [str(10 + i)],
                                   "options": {"zone": z}}
        d["relations"].append(["swift-proxy", name])
    return d


def test_swift_replicas_in_fewer_zones_is_a_warning():
    r = report(swift_bundle([1, 2, 2]))
    assert ("swift-zones", "applications.swift-proxy.options.replicas") in codes(r, "warning")
    assert "3 replicas in 2 zone(s)" in next(f.message for f in r.findings if f.code == "swift-zones")


def test_swift_one_zone_per_replica_is_clean():
    r = report(swift_bundle([1, 2, 3]))
    assert not {c for c, _ in codes(r)} & {"swift-zones", "swift-devices"}


def test_swift_auto_assignment_makes_the_zones():
    r = report(swift_bundle([1, 1, 1], assignment="auto"))
    assert "swift-zones" not in {c for c, _ in codes(r)}


def test_swift_fewer_devices_than_replicas_is_an_error():
    r = report(swift_bundle([1, 2]))
    assert ("swift-devices", "applications.swift-proxy.options.replicas") in codes(r, "error")

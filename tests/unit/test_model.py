"""Bundle loading: Juju format, overlays and their merge rules, placements, dump stability."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackha.errors import InvalidInput
from stackha.model import (
    BundleError,
    kind_for_charm,
    load_bundle,
    load_bundle_text,
    parse_charm,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


# ----------------------------------------------------------------------------- examples


def test_lab_bundle_shape() -> None:
    b = load_bundle(EXAMPLES / "lab-control-plane.yaml")
    assert set(b.machines) == {"0", "1", "2", "3", "4"}
    kinds = {n: a.kind for n, a in b.applications.items()}
    assert kinds == {"galera": "galera", "rabbitmq-server": "rabbitmq", "keystone": "keystone",
                     "haproxy": "haproxy", "keepalived": "keepalived"}
    assert all(a.deployable for a in b.applications.values())
    for app in ("galera", "rabbitmq-server", "keystone"):
        assert [u.machine for u in b.units(app)] == ["0", "1", "2"]
    assert [u.machine for u in b.units("haproxy")] == ["3", "4"]
    assert b.applications["keepalived"].subordinate
    assert [(u.unit, u.host_key, u.principal) for u in b.units("keepalived")] == [
        ("keepalived/0", "3", "haproxy/0"), ("keepalived/1", "4", "haproxy/1")]
    assert b.related("haproxy") == {"keystone", "galera", "keepalived"}
    assert "rabbitmq-server" not in b.related("haproxy")
    assert b.applications["haproxy"].options["vip"] == "198.18.100.250"
    assert b.settings.unit_availability == 0.999


def test_seed_000_loads_with_lxc_placements_and_colocation() -> None:
    b = load_bundle(EXAMPLES / "seed-000-itri.yaml")
    assert b.applications["percona"].kind == "galera"
    assert b.applications["neutron-gateway"].kind == "neutron-gateway"  # quantum-gateway charm
    assert b.applications["ceph"].kind == "ceph-mon"
    assert b.applications["hacluster2"].subordinate
    rabbit = b.units("rabbit")
    ncc = b.units("nova-cloud-controller")
    assert [u.container for u in rabbit] == ["lxc", "lxc", "lxc"]
    # nova-cloud-controller shares rabbit's containers (seed: --to 0/lxc/19, 6/lxc/0, 7/lxc/0)
    assert [u.host_key for u in ncc] == [u.host_key for u in rabbit]
    assert [u.machine for u in ncc] == ["0", "6", "7"]
    # each lxc:N entry is a new container: percona, keystone, rabbit each get their own on 0
    on_0 = {u.host_key for app in ("percona", "keystone", "rabbit") for u in b.units(app)
            if u.machine == "0"}
    assert on_0 == {"0/lxc/0", "0/lxc/1", "0/lxc/2"}
    mcast = {n: a.options.get("corosync_mcastaddr") for n, a in b.applications.items()
             if a.kind == "hacluster"}
    assert len({v for v in mcast.values() if v}) == 6


def test_seed_004_overlay_merges_onto_base() -> None:
    base = EXAMPLES / "seed-004-openstack-base.yaml"
    b0 = load_bundle(base)
    b = load_bundle(base, [EXAMPLES / "seed-004-masakari-overlay.yaml"])
    assert "masakari" not in b0.applications
    assert b.applications["masakari"].kind == "masakari"
    assert b.applications["masakari"].charm == "/root/openstack-base-72/masakari"
    assert b.applications["masakari-mysql-router"].kind == "mysql-router"  # mysql-router-6
    assert b.machines["1"].series == "focal"
    assert [u.host_key for u in b.units("masakari")][0].startswith("1/lxd/")
    # anchors resolved from variables:
    assert b.applications["keystone"].options["openstack-origin"] == "cloud:focal-victoria"
    assert len(b.relations) == len(b0.relations) + 8
    assert {u.principal.split("/")[0] for u in b.units("masakari-monitors")} == {"nova-compute"}
    assert {u.principal.split("/")[0] for u in b.units("masakari-mysql-router")} == {"masakari"}


# ----------------------------------------------------------------------------- charms


@pytest.mark.parametrize(("url", "source", "name", "series", "rev"), [
    ("ch:keystone", "ch", "keystone", None, None),
    ("cs:trusty/percona-cluster-24", "cs", "percona-cluster", "trusty", 24),
    ("cs:~openstack-charmers/rabbitmq-server", "cs", "rabbitmq-server", None, None),
    ("ch:amd64/focal/ceph-mon-3", "ch", "ceph-mon", "focal", 3),
    ("keepalived", "bare", "keepalived", None, None),
    ("./charms/galera", "local", "galera", None, None),
    ("/root/openstack-base-72/mysql-router-6", "local", "mysql-router", None, 6),
    ("local:trusty/haproxy", "local", "haproxy", None, None),
])
def test_parse_charm(url: str, source: str, name: str, series: str | None, rev: int | None) -> None:
    ref = parse_charm(url)
    assert ref is not None
    assert (ref.source, ref.name, ref.series, ref.revision) == (source, name, series, rev)


def test_charm_kinds() -> None:
    assert kind_for_charm("ch:mysql-innodb-cluster") == "galera"
    assert kind_for_charm("./galera") == "galera"
    assert kind_for_charm("cs:trusty/quantum-gateway-5") == "neutron-gateway"
    assert kind_for_charm("ch:ovn-central") is None
    assert parse_charm("") is None
    assert parse_charm("cs:Not A Charm") is None


def test_unknown_charm_is_not_a_crash() -> None:
    b = load_bundle_text("applications:\n  ovn: {charm: ch:ovn-central, num_units: 3}\n"
                         "  chassis: {charm: ch:ovn-chassis}\n")
    assert b.applications["ovn"].kind is None and not b.applications["ovn"].deployable
    assert b.applications["chassis"].subordinate  # neither num_units nor to


# ----------------------------------------------------------------------------- merge rules

BASE = """
series: focal
variables:
  origin: &origin cloud:focal-victoria
machines: {"0": {}, "1": {}, "2": {}}
applications:
  keystone:
    charm: ch:keystone
    num_units: 3
    to: ["lxd:0", "lxd:1", "lxd:2"]
    options: {openstack-origin: *origin, vip: 198.18.100.201, debug: true}
    annotations: {gui-x: "1"}
  hacluster: {charm: ch:hacluster}
  glance: {charm: ch:glance, num_units: 1}
relations:
  - [keystone:ha, hacluster:ha]
  - [glance:identity-service, keystone:identity-service]
"""


def test_overlay_merges_options_and_replaces_other_keys() -> None:
    overlay = """
applications:
  keystone:
    num_units: 2
    to: ["lxd:0", "lxd:1"]
    options: {vip: 198.18.100.202, debug: null, verbose: true}
"""
    b = load_bundle_text(BASE, [overlay])
    ks = b.applications["keystone"]
    assert ks.charm == "ch:keystone" and ks.num_units == 2
    assert ks.options == {"openstack-origin": "cloud:focal-victoria", "vip": "198.18.100.202",
                          "verbose": True}
    assert ks.annotations == {"gui-x": "1"}


def test_overlay_removes_application_and_its_relations() -> None:
    b = load_bundle_text(BASE, ["applications:\n  glance:\n"])
    assert "glance" not in b.applications
    assert all("glance" not in (r.a, r.b) for r in b.relations)
    assert len(b.relations) == 1


def test_overlay_relations_are_added_once() -> None:
    overlay = """
applications:
  galera: {charm: ch:percona-cluster, num_units: 3}
relations:
  - [hacluster:ha, keystone:ha]
  - [keystone:shared-db, galera:shared-db]
"""
    b = load_bundle_text(BASE, [overlay])
    assert len(b.relations) == 3
    assert b.related("keystone") == {"hacluster", "glance", "galera"}


def test_multi_document_bundle_is_base_plus_overlays() -> None:
    text = BASE + "---\napplications:\n  glance:\n---\nseries: jammy\n"
    b = load_bundle_text(text)
    assert "glance" not in b.applications and b.series == "jammy"


def test_legacy_services_key_and_merge_keys() -> None:
    text = """
defaults: &defaults {charm: cs:keystone, num_units: 3}
services:
  keystone:
    <<: *defaults
    options: {vip: 198.18.100.201}
"""
    b = load_bundle_text(text)
    assert b.applications["keystone"].num_units == 3
    assert "defaults" in b.extra  # unknown top-level key kept, reported by the analysis


def test_to_scalar_and_ints_are_accepted() -> None:
    b = load_bundle_text("machines: {0: {}, 1: {}}\napplications:\n"
                         "  a: {charm: ch:keystone, num_units: 2, to: [0, 1]}\n"
                         "  b: {charm: ch:glance, num_units: 1, to: 1}\n")
    assert b.applications["a"].to == ["0", "1"]
    assert b.units("b")[0].machine == "1"


def test_num_units_defaults_to_placements() -> None:
    b = load_bundle_text("machines: {0: {}, 1: {}}\napplications:\n"
                         "  a: {charm: ch:keystone, to: ['0', '1']}\n")
    assert b.applications["a"].num_units == 2


def test_zone_from_constraints_and_option() -> None:
    text = """
machines:
  "0": {constraints: "cores=2 zones=az1"}
  "1": {zone: az2}
  "2": {constraints: "zones=az1,az2"}
applications:
  a: {charm: ch:keystone, num_units: 4, to: ["0", "1", "2", "new"], options: {zone: az3}}
"""
    b = load_bundle_text(text)
    assert [u.zone for u in b.units("a")] == ["az1", "az2", "az3", "az3"]
    assert b.machines["0"].zone == "az1" and b.machines["2"].zone is None


def test_include_file_option(tmp_path: Path) -> None:
    (tmp_path / "banner.txt").write_text("hello\n")
    bundle = tmp_path / "b.yaml"
    bundle.write_text("applications:\n  a:\n    charm: ch:keystone\n    num_units: 3\n"
                      "    options: {banner: include-file://banner.txt, "
                      "key: include-base64://banner.txt}\n")
    b = load_bundle(bundle)
    assert b.applications["a"].options == {"banner": "hello\n", "key": "aGVsbG8K"}


# ----------------------------------------------------------------------------- placement rule


def test_placement_rule_containers_and_colocation() -> None:
    text = """
machines: {"0": {}, "1": {}}
applications:
  a: {charm: ch:keystone, num_units: 2, to: ["lxd:0", "lxd:0"]}
  b: {charm: ch:glance, num_units: 3, to: ["a/1", "lxd:a/0", "new"]}
  c: {charm: ch:placement, num_units: 2, to: ["b", "b"]}
  d: {charm: ch:cinder, num_units: 1, to: ["kvm:1"]}
"""
    b = load_bundle_text(text)
    assert [u.host_key for u in b.units("a")] == ["0/lxd/0", "0/lxd/1"]
    ub = b.units("b")
    assert ub[0].host_key == "0/lxd/1" and ub[0].container == "lxd"
    assert ub[1].host_key == "0/lxd/2" and ub[1].machine == "0"
    assert ub[2].machine == ub[2].host_key == "new:b/2" and ub[2].container is None
    assert [u.host_key for u in b.units("c")] == ["0/lxd/1", "0/lxd/2"]  # "b" = b/<same index>
    assert b.units("d")[0].host_key == "1/kvm/0"
    with pytest.raises(KeyError):
        b.units("nope")


def test_placement_cycle_is_a_problem() -> None:
    text = "applications:\n  a: {charm: ch:keystone, num_units: 1, to: [b/0]}\n" \
           "  b: {charm: ch:glance, num_units: 1, to: [a/0]}\n"
    with pytest.raises(BundleError) as exc:
        load_bundle_text(text)
    assert any("cycle" in p.message for p in exc.value.problems)


# ----------------------------------------------------------------------------- errors


def test_bundle_error_lists_every_problem_one_per_line() -> None:
    text = """
applications:
  keystone: {charm: ch:keystone, num_units: 1, to: ["9", "new"], options: {vip: nope}}
  hacluster: {charm: ch:hacluster, num_units: 2}
relations:
  - [keystone, galera]
"""
    with pytest.raises(BundleError) as exc:
        load_bundle_text(text)
    err = exc.value
    assert isinstance(err, InvalidInput) and err.exit_code == 2
    paths = {p.path for p in err.problems}
    assert {"applications.keystone.to", "applications.keystone.options.vip",
            "applications.hacluster.num_units", "relations[0][1]",
            "applications.keystone.to[0]"} <= paths
    lines = str(err).splitlines()
    assert len(lines) == len(err.problems)
    for p, line in zip(err.problems, lines, strict=True):
        assert p.path in line and p.fix in line


def test_overlay_problem_names_the_overlay() -> None:
    with pytest.raises(BundleError) as exc:
        load_bundle_text(BASE, ["applications:\n  keystone: {num_units: many}\n"])
    (p,) = exc.value.problems
    assert p.source == "<overlay 1>" and p.path == "applications.keystone.num_units"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError) as exc:
        load_bundle(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(exc.value)


# ----------------------------------------------------------------------------- dump


@pytest.mark.parametrize("files", [
    ["lab-control-plane.yaml"], ["seed-000-itri.yaml"],
    ["seed-004-openstack-base.yaml", "seed-004-masakari-overlay.yaml"],
])
def test_examples_load_dump_load_stable(files: list[str]) -> None:
    b = load_bundle(EXAMPLES / files[0], [EXAMPLES / f for f in files[1:]])
    d = b.dump()
    b2 = load_bundle_text(yaml.safe_dump(d))
    assert b2.dump() == d
    assert b2.model_dump() == b.model_dump()


_names = st.sampled_from(["keystone", "glance", "galera", "rabbit", "haproxy", "web", "api"])
_charms = st.sampled_from(["ch:keystone", "cs:glance", "ch:percona-cluster", "ch:rabbitmq-server",
                           "ch:haproxy", "./charms/web", "ch:unknown-thing"])
_subcharms = st.sampled_from(["ch:hacluster", "ch:keepalived", "ch:mysql-router"])
_scalars = st.one_of(st.integers(-5, 5), st.booleans(), st.text("abc xyz-", max_size=6))


@st.composite
def bundles(draw: st.DrawFn) -> dict:
    n_machines = draw(st.integers(0, 4))
    machines = {str(i): draw(st.fixed_dictionaries({}, optional={
        "series": st.sampled_from(["focal", "jammy"]),
        "constraints": st.sampled_from(["cores=2", "zones=az1", "mem=4G zones=az2"]),
        "zone": st.sampled_from(["az1", "az3"]),
    })) for i in range(n_machines)}
    names = draw(st.lists(_names, min_size=1, max_size=5, unique=True))
    apps: dict = {}
    for name in names:
        app: dict = {"charm": draw(_charms)}
        n = draw(st.integers(0, 4))
        targets = [str(i) for i in range(n_machines)]
        choices = ["new"] + targets + [f"lxd:{t}" for t in targets] + [f"lxc:{t}" for t in targets]
        app["num_units"] = n
        if n and draw(st.booleans()):
            app["to"] = [draw(st.sampled_from(choices)) for _ in range(n)]
        opts = draw(st.dictionaries(st.sampled_from(["debug", "origin", "worker-multiplier"]),
                                    _scalars, max_size=2))
        if draw(st.booleans()):
            opts["zone"] = draw(st.sampled_from(["az1", "az2"]))
        if opts:
            app["options"] = opts
        if draw(st.booleans()):
            app["channel"] = "stable"
        apps[name] = app
    sub = draw(st.one_of(st.none(), _subcharms))
    if sub:
        apps["sub"] = {"charm": sub}
    pairs = [(a, b) for a in apps for b in apps if a < b]
    rels = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=4)) if pairs else []
    out: dict = {"applications": apps, "relations": [list(p) for p in rels]}
    if machines:
        out["machines"] = machines
    if draw(st.booleans()):
        out["series"] = "focal"
    if draw(st.booleans()):
        out["stackha"] = {"unit_availability": draw(st.floats(0.5, 0.99999))}
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bundles())
def test_load_dump_load_is_stable(data: dict) -> None:
    b1 = load_bundle_text(yaml.safe_dump(data))
    d1 = b1.dump()
    b2 = load_bundle_text(yaml.safe_dump(d1))
    assert b2.dump() == d1
    assert b2.model_dump() == b1.model_dump()
    assert {a: [u.model_dump() for u in b1.units(a)] for a in b1.applications} == \
        {a: [u.model_dump() for u in b2.units(a)] for a in b2.applications}

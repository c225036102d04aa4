"""The OpenStack service operator and its descriptors, rendered without any I/O: every descriptor's
config parses, binds each unit's own address, reaches its relations on their VIPs and keeps
secrets out of world-readable files; the one registry agrees with the operators; Swift's rings are
pure and deterministic (also when built by the real swift-ring-builder)."""

from __future__ import annotations

import configparser
import gzip
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from stackha.errors import InvalidInput
from stackha.model.kinds import KINDS
from stackha.services import operator_for
from stackha.services.base import CAPABILITIES, AppContext, BaseOperator, MemorySecrets, Unit
from stackha.services.openstack import swift
from stackha.services.openstack.operator import OpenStackServiceOperator

NET = "198.18.42"


class NoIOHost:
    """A host that fails the test on any I/O: render must not touch hosts."""

    def __init__(self, name: str, address: str):
        self.name = name
        self.address = ipaddress.IPv4Address(address)

    def __getattr__(self, attr):
        raise AssertionError(f"render touched host.{attr}")


def _app(name: str, kind: str, hosts: list[int], options=None, vip: str | None = None) -> AppContext:
    units = [Unit(f"{name}/{i}", NoIOHost(f"t-m{h}", f"{NET}.{11 + h}")) for i, h in enumerate(hosts)]
    return AppContext(name, kind, dict(options or {}), units, MemorySecrets(),
                      vip=ipaddress.IPv4Interface(f"{vip}/24") if vip else None)


def cloud(zones: str = "split", replicas: int = 3) -> dict[str, AppContext]:
    """A small cloud as the engine would relate it: the control plane and Swift."""
    vip = f"{NET}.250"
    apps = [
        _app("galera", "galera", [0, 1, 2], vip=vip),
        _app("rabbitmq-server", "rabbitmq", [0, 1, 2]),
        _app("keystone", "keystone", [0, 1, 2], vip=vip),
        _app("swift-proxy", "swift-proxy", [0, 1, 2], {"replicas": replicas,
                                                        "zone-assignment": "manual" if zones == "split" else "auto"},
             vip=vip),
    ]
    if zones == "split":
        stores = [_app(f"swift-storage-z{z}", "swift-storage", [4 + z], {"zone": z}) for z in (1, 2, 3)]
    else:
        stores = [_app("swift-storage", "swift-storage", [5, 6, 7])]
    apps += stores
    apps += [
        _app("glance", "glance", [0, 1, 2], vip=vip),
        _app("placement", "placement", [0, 1, 2], vip=vip),
        _app("nova-cloud-controller", "nova-cloud-controller", [0, 1, 2], vip=vip),
        _app("neutron-api", "neutron-api", [0, 1, 2], vip=vip),
        _app("nova-compute", "nova-compute", [8, 9, 10]),
        _app("masakari", "masakari", [0, 1, 2], {"segments": [
            {"name": "seg1", "recovery_method": "reserved_host", "hosts": ["nova-compute"],
             "reserved_hosts": ["nova-compute/2"]}]}, vip=vip),
    ]
    ctx = {a.name: a for a in apps}
    rel = {("keystone", "galera"), ("swift-proxy", "keystone")} | {("swift-proxy", s.name) for s in stores}
    for svc in ("glance", "placement", "nova-cloud-controller", "neutron-api"):
        rel |= {(svc, "galera"), (svc, "keystone")}
    rel |= {("masakari", "galera"), ("masakari", "keystone"), ("masakari", "rabbitmq-server")}
    rel |= {("glance", "swift-proxy"), ("nova-cloud-controller", "rabbitmq-server"),
            ("neutron-api", "rabbitmq-server"), ("nova-compute", "nova-cloud-controller"),
            ("nova-compute", "rabbitmq-server")}
    for a, b in rel:
        ctx[a].related[b] = ctx[b]
        ctx[b].related[a] = ctx[a]
    return ctx


SERVICE_KINDS = sorted(k for k, info in KINDS.items()
                       if info.operator and isinstance(operator_for(k), OpenStackServiceOperator))


def test_every_deployable_kind_has_its_operator():
    for kind, info in KINDS.items():
        if info.operator is None:
            assert operator_for(kind) is None
            continue
        op = operator_for(kind)
        assert isinstance(op, BaseOperator) and op.kind == kind, kind
        for cap in info.provides:  # a declared capability is implemented
            for method in vars(CAPABILITIES[cap]):
                if not method.startswith("_"):
                    assert callable(getattr(op, method, None)), (kind, cap, method)


def test_service_kinds_include_keystone_and_swift():
    assert {"keystone", "swift-proxy", "swift-storage"} <= set(SERVICE_KINDS)


@pytest.mark.parametrize("kind", SERVICE_KINDS)
def test_descriptor_renders_every_unit(kind):
    ctx = cloud()
    app = next(a for a in ctx.values() if a.kind == kind)
    op = operator_for(kind)
    rendered = op.render(app)
    d = op.descriptor
    assert set(rendered) == {u.name for u in app.units}
    for unit in app.units:
        files = rendered[unit.name]
        for path in op.restart_paths():
            assert path in files, (kind, path)
            text = files[path].content
            assert isinstance(text, str) and text.strip(), path
            cp = configparser.ConfigParser(interpolation=None, strict=False, allow_no_value=True)
            try:  # a syntax error raises
                cp.read_string(text)
            except configparser.MissingSectionHeaderError:  # rsyncd.conf: global parameters first
                cp.read_string("[global]\n" + text)
            # a service file with secrets is not world-readable
            if "password" in text or "connection =" in text:
                assert files[path].mode & 0o007 == 0, (kind, path, oct(files[path].mode))
        binds = [f for p, f in files.items() if p in op.restart_paths() and str(unit.address) in str(f.content)]
        assert binds or not d.apis, f"{kind}: no config of {unit.name} names its own address"
        others = [str(u.address) for u in app.units if u is not unit]
        for p in op.restart_paths():
            for line in str(files[p].content).splitlines():
                if line.startswith(("bind_ip", "http-socket", "bind_host", "address =")):
                    assert not any(o in line for o in others), (kind, p, line)


@pytest.mark.parametrize("kind", SERVICE_KINDS)
def test_databases_and_identity_are_reached_on_their_vip(kind):
    ctx = cloud()
    app = next(a for a in ctx.values() if a.kind == kind)
    op = operator_for(kind)
    text = "\n".join(str(f.content) for p, f in op.render(app)[app.units[0].name].items() if p in op.restart_paths())
    for db in op.descriptor.databases:
        assert (f"@{NET}.250:3306/{db.name}\n" in text) == db.configured, db
    if op.descriptor.service_user:
        assert f"http://{NET}.250:5000/v3" in text
    if op.descriptor.messaging:
        assert "rabbit_quorum_queue = true" in text


def test_frontends_cover_every_api_on_the_vip():
    ctx = cloud()
    for kind in SERVICE_KINDS:
        app = next(a for a in ctx.values() if a.kind == kind)
        op = operator_for(kind)
        fes = op.frontends(app)
        assert [f.port for f in fes] == [a.port for a in op.descriptor.apis if a.frontend]
        for fe in fes:
            assert fe.mode == "http" and fe.check_path and len(fe.servers) == len(app.units)


def test_missing_relation_is_named():
    ctx = cloud()
    proxy = ctx["swift-proxy"]
    del proxy.related["keystone"]
    with pytest.raises(Exception, match="needs a relation to keystone"):
        operator_for("swift-proxy").render(proxy)


# --------------------------------------------------------------------------- Swift rings
def test_swift_conf_is_the_same_on_every_node():
    ctx = cloud()
    texts = set()
    for kind in ("swift-proxy", "swift-storage"):
        for app in (a for a in ctx.values() if a.kind == kind):
            for files in operator_for(kind).render(app).values():
                texts.add(files[swift.SWIFT_CONF].content)
    assert len(texts) == 1
    assert "changeme" not in texts.pop()


def test_ring_specs_put_each_split_zone_in_its_own_zone():
    specs = swift.ring_specs(cloud()["swift-proxy"])
    assert set(specs) == {"account", "container", "object"}
    obj = specs["object"]
    assert obj.replicas == 3 and obj.part_power == 8
    assert sorted(d.zone for d in obj.devices) == [1, 2, 3]
    assert {d.port for d in obj.devices} == {6200}
    assert {d.port for d in specs["account"].devices} == {6202}


def test_auto_zone_assignment_deals_units_round_robin():
    zones = swift.unit_zones(cloud("auto")["swift-proxy"])
    assert sorted(zones.values()) == [1, 2, 3]


def test_ring_spec_is_deterministic_and_changes_with_the_bundle():
    a = swift.ring_specs(cloud()["swift-proxy"])["object"]
    b = swift.ring_specs(cloud()["swift-proxy"])["object"]
    assert a == b and a.digest() == b.digest()
    c = swift.ring_specs(cloud(replicas=2)["swift-proxy"])["object"]
    assert c.digest() != a.digest()


def test_ring_commands_create_then_add_incrementally():
    spec = swift.ring_specs(cloud()["swift-proxy"])["object"]
    cmds = spec.commands("/b/object.builder")
    assert cmds[0][2:] == ["create", "8", "3", "0"]
    assert [c[2] for c in cmds[1:-1]] == ["add"] * 3
    assert cmds[-1][2:] == ["rebalance", "--seed", str(swift.RING_SEED)]
    fewer = swift.RingSpec(spec.name, spec.part_power, spec.replicas, spec.min_part_hours, spec.devices[:2])
    grow = spec.commands("/b/object.builder", previous=fewer)
    assert [c[2] for c in grow] == ["add", "rebalance"]
    shrink = fewer.commands("/b/object.builder", previous=spec)
    assert [c[2] for c in shrink] == ["remove", "rebalance"]


@pytest.mark.parametrize("opts,field", [({"zone": "two"}, "zone"), ({"zone": 0}, "zone")])
def test_bad_zone_is_refused(opts, field):
    ctx = cloud()
    ctx["swift-storage-z2"].options.update(opts)
    with pytest.raises(InvalidInput, match=f"swift-storage-z2.options.{field}"):
        swift.ring_specs(ctx["swift-proxy"])


def test_bad_replicas_is_refused():
    with pytest.raises(InvalidInput, match="replicas"):
        swift.ring_specs(cloud(replicas=0)["swift-proxy"])


@pytest.mark.skipif(shutil.which("swift-ring-builder") is None, reason="Debian's swift package is not installed")
def test_swift_ring_builder_gives_the_same_ring_twice(tmp_path: Path):
    """Swift's own builder, fed the same spec twice, writes the same ring (uncompressed bytes)."""
    spec = swift.ring_specs(cloud()["swift-proxy"])["object"]
    rings = []
    for run in ("a", "b"):
        d = tmp_path / run
        d.mkdir()
        builder = str(d / "object.builder")
        for argv in spec.commands(builder):
            res = subprocess.run(argv, capture_output=True, text=True)
            assert res.returncode in (0, 1), res.stdout + res.stderr
        rings.append(gzip.decompress((d / "object.ring.gz").read_bytes()))
    assert rings[0] == rings[1] and len(rings[0]) > 100

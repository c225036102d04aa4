"""Issues 12 and 13 acceptance on examples/lab-cloud.yaml, one deploy for the module.

From the client host, with the real clients through the VIP: Swift (``openstack container/object``,
python-swiftclient's ``swift stat``), a storage host powered off while objects are written (every
acknowledged object reads back with its md5; after power-on, Swift's replicators restore 3 replicas
— counted on the storage servers themselves), and the compute cloud (an image uploaded and
downloaded, a network and subnet, 5 servers ACTIVE, list/show/delete) — again after a controller
is powered off and after the VIP holder is powered off.

``STACKHA_TEST_REUSE=PREFIX:STATE_DIR`` runs the module against a cloud deployed by hand
(``stackha --state-dir STATE_DIR deploy examples/lab-cloud.yaml --lab PREFIX``) and leaves it up.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from pathlib import Path

import pytest

from tests.lab.cloud import EXAMPLES, admin_env, all_active, ctx, deployed, openstack, openstack_json, reused
from tests.lab.polling import poll, wait_for

LOAD = Path(__file__).with_name("swift_load.py")
LOAD_PATH = "/srv/stackha/test/swift_load.py"
PY = "/usr/bin/python3"  # Debian's interpreter: python3-swiftclient
NOVA_MICROVERSION = "2.37"  # --nic none (no Neutron agents to bind a port in the lab)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    if os.environ.get("STACKHA_TEST_REUSE"):
        yield reused(os.environ["STACKHA_TEST_REUSE"])
        return
    with deployed(EXAMPLES / "lab-cloud.yaml", tmp_path_factory, "c") as c:
        print(f"\nlab-cloud deployed in {c['seconds']:.1f} s")
        yield c


@pytest.fixture(scope="module")
def d(cloud):
    d = cloud["d"]
    d.client.run(["mkdir", "-p", "/srv/stackha/test"], check=True)
    d.client.write_file(LOAD_PATH, LOAD.read_text(), mode=0o644)
    return d


def test_every_unit_active(cloud, d):
    report = cloud.get("report")
    if report is not None:
        assert not report.failed, report.failed
    wait_for(lambda: not all_active(d), 120, "every unit active")


# ----------------------------------------------------------------------------------- Swift
def swift_cli(d, *args: str, timeout: float = 60):
    env = " ".join(f"{k}='{v}'" for k, v in admin_env(d).items())
    return d.client.sh(f"{env} swift {' '.join(args)}", timeout=timeout)


def test_swift_through_the_real_clients(d):
    name = "t" + secrets.token_hex(3)
    assert openstack_json(d, "container", "create", name)[0]["container"] == name
    body = os.urandom(10_000)
    d.client.write_file(f"/srv/stackha/test/{name}.bin", body)
    obj = openstack_json(d, "object", "create", name, f"/srv/stackha/test/{name}.bin")
    assert obj[0]["etag"] == hashlib.md5(body).hexdigest()
    res = openstack(d, "object", "save", "--file", f"/srv/stackha/test/{name}.out", name,
                    f"/srv/stackha/test/{name}.bin")
    assert res.ok, res.stderr[-800:]
    assert d.client.read_file(f"/srv/stackha/test/{name}.out") == body
    stat = swift_cli(d, "stat", name)
    assert stat.ok, stat.stderr[-800:]
    assert "Objects: 1" in stat.stdout


def run_load(d, cfg: dict, daemon: str | None = None):
    path = f"/srv/stackha/test/{cfg['mode']}-{secrets.token_hex(3)}.json"
    cfg = {**cfg, "auth": admin_env(d), "out": path.replace(".json", ".jsonl")}
    d.client.write_file(path, json.dumps(cfg), mode=0o600)
    if daemon:
        d.client.spawn(daemon, [PY, LOAD_PATH, path])
        return cfg["out"]
    res = d.client.run([PY, LOAD_PATH, path], timeout=300)
    assert res.ok, res.stderr[-800:]
    return cfg["out"]


def records(d, path: str) -> list[dict]:
    raw = d.client.read_file(path) or b""
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def test_storage_host_poweroff_loses_no_acknowledged_object_and_replicas_come_back(d):
    """A storage host off during 30 PUTs: every acknowledged object reads back with its md5, and
    after power-on the replicators restore 3 replicas of every object (counted on the servers)."""
    from stackha.services.openstack.swift import object_replicas

    container = "load" + secrets.token_hex(3)
    out = run_load(d, {"mode": "put", "container": container, "prefix": "before", "count": 30,
                       "interval_s": 0.0, "deadline_s": 120})
    before = [r for r in records(d, out) if r["ok"]]
    assert len(before) == 30, records(d, out)[-3:]
    storage = ctx(d, "swift-storage")
    victim = storage.units[0].host.machine()
    out = run_load(d, {"mode": "put", "container": container, "prefix": "during", "count": 30,
                       "interval_s": 0.5, "deadline_s": 120}, daemon="swift-load")
    wait_for(lambda: len(records(d, out)) >= 3 or None, 60, "the first PUTs of the load")
    t_off = time.monotonic()
    victim.power_off()
    wait_for(lambda: d.client.daemon("swift-load") is None or None, 150, "the Swift load to finish")
    recs = records(d, out)
    acked = {r["name"]: r["md5"] for r in before + recs if r["ok"]}
    failed = [r for r in recs if not r["ok"]]
    print(f"\nstorage host {victim.name} off: {sum(r['ok'] for r in recs)}/{len(recs)} PUTs acknowledged "
          f"in {time.monotonic() - t_off:.1f} s, {len(failed)} failed")
    assert len(recs) == 30
    assert not failed, failed[:3]
    out = run_load(d, {"mode": "check", "container": container, "objects": acked})
    back = {r["name"]: r for r in records(d, out)}
    bad = [(n, back.get(n)) for n, md5 in acked.items() if not back.get(n, {}).get("ok") or back[n]["md5"] != md5]
    assert not bad, bad[:3]
    print(f"all {len(acked)} acknowledged objects read back with their md5 while {victim.name} was off")
    t_on = time.monotonic()
    victim.power_on()
    d.recover({a.name for a in d.contexts().values() if a.kind == "swift-storage"})
    proxy = ctx(d, "swift-proxy")
    account = "AUTH_" + openstack_json(d, "project", "show", "admin")["id"]

    def restored():
        rep = object_replicas(proxy, account, container, list(acked))
        short = {o: n for o, n in rep["found"].items() if n < rep["replicas"]}
        return None if short else rep

    rep = wait_for(restored, 600, "3 replicas of every object after power-on", interval_s=5)
    print(f"replicas {rep['replicas']}/{rep['replicas']} for {len(acked)} objects "
          f"{time.monotonic() - t_on:.1f} s after power-on ({time.monotonic() - t_off:.1f} s after power-off)")
    assert all(len(set(e)) == 1 and e[0].strip('"') == acked[o] for o, e in rep["etags"].items())


# --------------------------------------------------------------------------------- compute
def os_json(d, *args: str, timeout: float = 180):
    return openstack_json(d, f"--os-compute-api-version={NOVA_MICROVERSION}", *args, timeout=timeout)


@pytest.fixture(scope="module")
def compute(d):
    """An image (uploaded, then downloaded with its checksum checked), a flat network with a
    subnet, and a flavor — created once for the module through the VIP."""
    tag = secrets.token_hex(3)
    body = os.urandom(1 << 20)
    d.client.write_file(f"/srv/stackha/test/img-{tag}.raw", body)
    img = openstack_json(d, "image", "create", "--disk-format", "raw", "--container-format", "bare",
                         "--file", f"/srv/stackha/test/img-{tag}.raw", f"img-{tag}", timeout=300)
    shown = wait_for(lambda: (lambda i: i if i["status"] == "active" else None)(
        openstack_json(d, "image", "show", img["id"])), 120, "the image to become active", interval_s=1)
    assert shown["checksum"] == hashlib.md5(body).hexdigest()
    res = openstack(d, "image", "save", "--file", f"/srv/stackha/test/img-{tag}.out", img["id"], timeout=300)
    assert res.ok, res.stderr[-800:]
    assert hashlib.md5(d.client.read_file(f"/srv/stackha/test/img-{tag}.out") or b"").hexdigest() == shown["checksum"]
    net = openstack_json(d, "network", "create", f"net-{tag}")  # a project network (VXLAN, no agents)
    sub = openstack_json(d, "subnet", "create", "--network", net["id"], "--subnet-range", "198.19.10.0/24",
                         "--no-dhcp", f"sub-{tag}")
    assert sub["cidr"] == "198.19.10.0/24"
    flavor = openstack_json(d, "flavor", "create", "--ram", "64", "--disk", "1", "--vcpus", "1", f"flv-{tag}")
    return {"image": img["id"], "flavor": flavor["id"], "network": net["id"], "tag": tag}


def boot_five(d, compute, label: str) -> float:
    """Boot 5 servers, wait until all are ACTIVE, list, show and delete them; the seconds from the
    create to all ACTIVE."""
    name = f"{label}-{compute['tag']}"
    t0 = time.monotonic()
    os_json(d, "server", "create", "--image", compute["image"], "--flavor", compute["flavor"], "--nic", "none",
            "--min", "5", "--max", "5", name)

    def servers():
        return [s for s in os_json(d, "server", "list", "--name", f"^{name}") if s["Name"].startswith(name)]

    def all_active():
        ss = servers()
        errored = [s for s in ss if s["Status"] == "ERROR"]
        faults = [os_json(d, "server", "show", s["ID"]).get("fault") for s in errored[:2]]
        assert not errored, f"{len(errored)} of {len(ss)} servers in ERROR; faults: {faults}"
        return ss if len(ss) == 5 and all(s["Status"] == "ACTIVE" for s in ss) else None

    ss = wait_for(all_active, 300, f"5 servers {name} ACTIVE", interval_s=2)
    active_s = time.monotonic() - t0
    for s in ss:
        shown = os_json(d, "server", "show", s["ID"])
        assert shown["status"] == "ACTIVE" and shown["OS-EXT-SRV-ATTR:host"], shown
    res = openstack(d, "server", "delete", "--wait", *[s["ID"] for s in ss], timeout=300)
    assert res.ok, res.stderr[-800:]
    assert wait_for(lambda: not servers() or None, 120, f"servers {name} deleted", interval_s=2)
    print(f"\n{label}: 5 servers ACTIVE {active_s:.1f} s after the create; listed, shown, deleted")
    return active_s


def test_compute_boot_list_show_delete(d, compute):
    boot_five(d, compute, "base")


def wait_marked_down(d, victim) -> float:
    """Seconds until every load balancer that is on has marked every server on ``victim`` (its
    address) not UP — the point from which HAProxy sends nothing to it (the gap before it is what
    ``stackha verify --scenario controller-poweroff`` measures)."""
    from stackha.services.haproxy import _is_up, _stats

    t0 = time.monotonic()
    addr = str(victim.address)

    def marked() -> bool:
        for u in ctx(d, "haproxy").units:
            if not u.host.is_on():
                continue
            rows = _stats(u.host)
            if rows is None:
                return False
            ours = [r for r in rows if (r.get("addr") or "").split(":")[0] == addr]
            if not ours or any(_is_up(r.get("status", "")) for r in ours):
                return False
        return True

    wait_for(marked, 60, f"HAProxy marking {victim.name}'s servers down", interval_s=0.2)
    return time.monotonic() - t0


def test_compute_after_a_controller_power_off(d, compute):
    victim = ctx(d, "nova-cloud-controller").units[0].host.machine()
    victim.power_off()
    try:
        print(f"\n{victim.name} off: HAProxy marked its servers down in {wait_marked_down(d, victim):.1f} s")
        boot_five(d, compute, "ctl-off")
    finally:
        victim.power_on()
        d.recover()


def test_compute_after_the_vip_holder_power_off(d, compute):
    from stackha.verify.scenarios import vip_holder

    holder = vip_holder(d, None).machine()
    t0 = time.monotonic()
    holder.power_off()
    try:
        def moved():
            try:
                return vip_holder(d, None).machine().name != holder.name
            except Exception:  # no holder yet
                return False
        wait_for(moved, 30, "the VIP on the other load balancer", interval_s=0.1)
        print(f"\n{holder.name} off: VIP held by the other load balancer after {time.monotonic() - t0:.1f} s")
        boot_five(d, compute, "vip-off")
    finally:
        holder.power_on()
        d.recover()

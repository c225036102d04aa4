"""The lab provider with real namespaces, cgroups and processes (root only)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from stackha.hosts import lab as labmod
from stackha.hosts.base import HostDown
from stackha.hosts.lab import Lab, MAX_HOSTS, cgroup2_root, teardown
import polling


def poll(predicate, deadline_s: float, interval_s: float = 0.01):
    return polling.poll(predicate, deadline_s, interval_s)




def traces(prefix: str, state_dir: Path) -> list[str]:
    """Everything of lab ``prefix`` still present: netns, cgroups, processes, mounts, state, lease."""
    found = []
    found += [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith(f"stackha-{prefix}-")] if os.path.isdir("/run/netns") else []
    cg = cgroup2_root() / "stackha" / prefix
    if cg.exists():
        found.append(f"cgroup {cg}")
    labdir = str(state_dir / "labs" / prefix)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cgline = Path(f"/proc/{pid}/cgroup").read_text()
            mounts = Path(f"/proc/{pid}/mountinfo").read_text()
        except OSError:
            continue
        if f"/stackha/{prefix}/" in cgline:
            found.append(f"process {pid} in the lab's cgroup")
        if labdir in mounts:
            found.append(f"mount of {labdir} seen by pid {pid}")
        if f"stackha-{prefix}-" in mounts:
            found.append(f"nsfs mount of the lab seen by pid {pid}")
    if Path(labdir).exists():
        found.append(f"state {labdir}")
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    found += [f"loop device {ln.split(':')[0]}" for ln in loops.splitlines() if labdir in ln]
    leases = labmod.LEASE_DIR
    if leases.is_dir():
        found += [f"lease {p}" for p in leases.iterdir() if p.read_text().strip() == prefix]
    return found




def test_three_hosts_reach_each_other_and_nothing_outside(lab_factory):
    lab = lab_factory(3)
    hosts = list(lab.hosts.values())
    assert len({h.run("hostname", check=True).stdout.strip() for h in hosts}) == 3
    for h in hosts:
        assert [str(a) for a in h.addresses()] == [f"{h.address}/24"]
        assert ipaddress.ip_address(h.address) in ipaddress.ip_network("198.18.0.0/15")
        for peer in hosts:
            if peer is not h:
                r = h.run(["ping", "-c", "1", "-W", "2", str(peer.address)])
                assert r.ok, r.stderr
        routes = h.run(["ip", "-4", "route", "show", "table", "all", "type", "unicast"], check=True).stdout
        assert "default" not in routes
        # A route lookup sends no packet: there must be no route off the lab's /24.
        for outside in ("198.19.255.1", "203.0.113.1"):
            r = h.run(["ip", "route", "get", outside])
            assert not r.ok and "unreachable" in r.stderr.lower(), r.stdout
        assert h.run("ip -6 addr show | grep -c inet6 || true").stdout.strip() == "0"
    # A daemon in h1 is invisible in h2.
    d = hosts[0].spawn("sleeper", ["sleep", "300"])
    assert any(p.pid == d.pid and p.comm == "sleep" for p in hosts[0].processes())
    assert not any(p.comm == "sleep" for p in hosts[1].processes())
    assert "sleep" not in hosts[1].run(["ps", "-e"], check=True).stdout
    # The root network namespace has no lab address and no lab veth.
    root_addrs = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    assert str(lab.subnet.network_address)[:-1] not in root_addrs


def test_power_off_kills_everything_fast_and_power_on_boots_fresh(lab_factory):
    lab = lab_factory(3)
    h1, h2, h3 = lab.hosts.values()
    for h in (h1, h2, h3):
        h.spawn("sleeper", ["sleep", "300"])
        h.run("echo ram > /run/marker; echo disk > /srv/marker", check=True)
    cg = h2.cgroup
    assert labmod._cgroup_pids(cg)
    h2.power_off()
    gone = poll(lambda: not labmod._cgroup_pids(cg), 1.0)
    assert gone, f"processes survived power-off: {labmod._cgroup_pids(cg)}"
    assert not h2.is_on()
    assert h2.addresses() == []
    assert not h2.link_up()
    with pytest.raises(HostDown):
        h2.run("true")
    assert h1.daemon("sleeper") is not None and h3.daemon("sleeper") is not None
    assert not h1.run(["ping", "-c", "1", "-W", "1", str(h2.address)]).ok
    h2.power_on()
    assert [str(a) for a in h2.addresses()] == [f"{h2.address}/24"]
    assert h2.run(["ping", "-c", "1", "-W", "2", str(h1.address)]).ok
    assert h2.daemon("sleeper") is None
    assert h2.read_file("/run/marker") is None, "/run must not survive a power cycle"
    assert h2.read_file("/srv/marker") == b"disk\n", "/srv is the host's disk"


def test_volume_fills_up_alone_survives_power_cycles_and_goes_with_the_lab(lab_factory, state_dir):
    """LabHost.ensure_volume + DiskFull: ENOSPC on the volume only, data kept across power cycles,
    the loop device released at teardown; DiskFull refuses a path that is not a volume."""
    from stackha.hosts.base import HostError
    from stackha.verify.faults import DiskFull

    lab = lab_factory(1)
    (h,) = lab.hosts.values()
    with pytest.raises(HostError, match="not a volume"):
        DiskFull(h, "/srv", "mysql").inject()
    assert h.ensure_volume("/srv/vol", 1 << 30)
    assert h.ensure_volume("/srv/vol", 1 << 30)  # idempotent
    h.run("echo kept > /srv/vol/data; echo root > /srv/other", check=True)
    full = DiskFull(h, "/srv/vol", "mysql")
    full.inject()
    assert "No space left" in h.run("head -c 65536 /dev/zero > /srv/vol/more").stderr
    assert h.run("head -c 65536 /dev/zero > /srv/elsewhere").ok, "only the volume may be full"
    full.restore()
    assert h.run("head -c 65536 /dev/zero > /srv/vol/more").ok
    for _ in range(2):
        h.power_off()
        h.power_on()
        assert h.own_filesystem("/srv/vol") and not h.own_filesystem("/srv")
        assert h.read_file("/srv/vol/data") == b"kept\n"
    h.run("mkdir -p /srv/plain", check=True)
    assert not h.ensure_volume("/srv/plain", 1 << 30), "an existing directory keeps its data where it is"
    teardown(lab.prefix, state_dir)
    assert traces(lab.prefix, state_dir) == []


def test_firewall_rules_do_not_survive_a_power_cycle(lab_factory):
    """nftables rules are RAM state: a table set before a power-off is gone after power-on."""
    lab = lab_factory(1)
    (h,) = lab.hosts.values()
    h.run(["nft", "add", "table", "inet", "stackha_test"], check=True)
    assert "stackha_test" in h.run(["nft", "list", "tables"], check=True).stdout
    h.power_off()
    h.power_on()
    assert "stackha_test" not in h.run(["nft", "list", "tables"], check=True).stdout


def test_vip_is_flushed_by_power_off(lab_factory):
    lab = lab_factory(2)
    h1, _ = lab.hosts.values()
    vip = lab.vip_addresses()[-1]
    h1.run(["ip", "addr", "add", f"{vip}/24", "dev", "eth0"], check=True)
    assert f"{vip}/24" in [str(a) for a in h1.addresses()]
    h1.power_off()
    h1.power_on()
    assert [str(a) for a in h1.addresses()] == [f"{h1.address}/24"]


def test_partition_and_heal(lab_factory):
    lab = lab_factory(2)
    h1, h2 = lab.hosts.values()
    h2.partition()
    assert not h1.run(["ping", "-c", "1", "-W", "1", str(h2.address)]).ok
    assert h2.is_on()
    h2.heal()
    ok = poll(lambda: h1.run(["ping", "-c", "1", "-W", "1", str(h2.address)]).ok, 5, 0.1)
    assert ok


def test_container_host_goes_down_with_its_machine(lab_factory):
    lab = lab_factory(1)
    machine = next(iter(lab.hosts.values()))
    ctr = lab.add_host("c1", parent=machine.name)
    assert ctr.failure_domain == machine.failure_domain
    ctr.spawn("sleeper", ["sleep", "300"])
    machine.power_off()
    assert not ctr.is_on()
    with pytest.raises(HostDown):
        ctr.power_on()
    machine.power_on()
    ctr.power_on()
    assert ctr.is_on()


def test_two_labs_coexist_and_tear_down_independently(lab_factory, state_dir):
    a = lab_factory(2)
    b = lab_factory(2)
    assert a.subnet != b.subnet
    a1 = next(iter(a.hosts.values()))
    b1, b2 = b.hosts.values()
    # Separate bridges: a host of lab a cannot reach lab b.
    assert not a1.run(["ping", "-c", "1", "-W", "1", str(b1.address)]).ok
    teardown(a.prefix, state_dir)
    assert traces(a.prefix, state_dir) == []
    assert b1.run(["ping", "-c", "1", "-W", "2", str(b2.address)]).ok
    teardown(b.prefix, state_dir)
    assert traces(b.prefix, state_dir) == []


def test_down_leaves_nothing_and_is_idempotent(lab_factory, state_dir):
    lab = lab_factory(3)
    for h in lab.hosts.values():
        h.spawn("sleeper", ["sleep", "300"])
    assert traces(lab.prefix, state_dir)
    teardown(lab.prefix, state_dir)
    assert traces(lab.prefix, state_dir) == []
    teardown(lab.prefix, state_dir)  # idempotent
    assert traces(lab.prefix, state_dir) == []


def test_teardown_after_crash_without_state_file(lab_factory, state_dir):
    lab = lab_factory(2)
    next(iter(lab.hosts.values())).spawn("sleeper", ["sleep", "300"])
    (lab.dir / "lab.json").unlink()  # as if the process recording it died
    teardown(lab.prefix, state_dir)
    assert traces(lab.prefix, state_dir) == []


def test_failed_creation_leaves_nothing(monkeypatch, state_dir):
    calls = {"n": 0}
    real = labmod.LabHost.create

    def flaky(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected failure while creating the third host")
        real(self)

    monkeypatch.setattr(labmod.LabHost, "create", flaky)
    with pytest.raises(RuntimeError, match="injected"):
        Lab.create("tfail", 3, state_dir=state_dir)
    assert traces("tfail", state_dir) == []


def test_fixture_tears_down_after_a_test_that_raised():
    """Run a failing test in a subprocess with the real fixture; afterwards nothing remains."""
    here = Path(__file__).resolve().parents[1]
    code = (
        "def test_boom(lab_factory):\n"
        "    lab_factory(2, prefix='tboom')\n"
        "    raise AssertionError('boom mid-way')\n"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "conftest.py").write_text((here / "conftest.py").read_text())
        (Path(d) / "test_boom.py").write_text(code)
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", d],
                           capture_output=True, text=True, timeout=300)
        assert "1 failed" in r.stdout, r.stdout + r.stderr
        assert "boom mid-way" in r.stdout
        # The fixture used a state dir under pytest's tmp_path; check the kernel side + leases.
        assert [t for t in traces("tboom", Path(d)) if not t.startswith("state")] == []


def run_cli(*args: str, state_dir: Path, user: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "stackha", "--state-dir", str(state_dir), *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_cli_bad_input_gives_one_line_errors_and_no_partial_lab(lab_factory, state_dir):
    lab = lab_factory(1)
    cases = [
        (("lab", "exec", f"{lab.prefix}-h9", "--", "true"), "has no host"),
        (("lab", "up", "--prefix", lab.prefix, "--hosts", "1"), "in use"),
        (("lab", "up", "--prefix", "tbig", "--hosts", str(MAX_HOSTS + 1)), "hosts"),
        (("lab", "up", "--prefix", "Bad-Name", "--hosts", "1"), "prefix"),
        (("lab", "up", "--prefix", "tsub", "--hosts", "1", "--subnet", "203.0.113.0/24"), "198.18.0.0/15"),
        (("lab", "power-off", "nohyphen"), "full name"),
    ]
    for args, needle in cases:
        r = run_cli(*args, state_dir=state_dir)
        assert r.returncode != 0, args
        assert needle in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for prefix in ("tbig", "tsub"):
        assert traces(prefix, state_dir) == []
    assert lab.host("h1").is_on()  # the existing lab is untouched


def test_cli_without_root_is_refused(state_dir):
    os.chmod(state_dir, 0o777)
    r = run_cli("lab", "up", "--prefix", "troot", "--hosts", "1", state_dir=state_dir, user="nobody")
    assert r.returncode != 0
    assert "root" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert traces("troot", state_dir) == []


def test_cli_lifecycle(state_dir):
    try:
        r = run_cli("lab", "up", "--prefix", "tcli", "--hosts", "2", state_dir=state_dir)
        assert r.returncode == 0, r.stderr
        r = run_cli("lab", "exec", "tcli-h1", "--", "hostname", state_dir=state_dir)
        assert r.stdout.strip() == "tcli-h1"
        r = run_cli("lab", "exec", "tcli-h1", "--", "sh", "-c", "exit 7", state_dir=state_dir)
        assert r.returncode == 7
        r = run_cli("lab", "list", "--format", "json", state_dir=state_dir)
        assert '"tcli"' in r.stdout
        assert run_cli("lab", "power-off", "tcli-h2", state_dir=state_dir).returncode == 0
        assert Lab.load("tcli", state_dir).host("h2").is_on() is False
        assert run_cli("lab", "power-on", "tcli-h2", state_dir=state_dir).returncode == 0
        r = run_cli("lab", "exec", "tcli-h2", "--", "ping", "-c1", "-W2", str(Lab.load("tcli", state_dir).host("h1").address), state_dir=state_dir)
        assert r.returncode == 0
        assert run_cli("lab", "down", "tcli", state_dir=state_dir).returncode == 0
        assert traces("tcli", state_dir) == []
    finally:
        teardown("tcli", state_dir)


def test_stackhas_own_python_runs_inside_hosts_wherever_the_checkout_is(lab_factory):
    """Probes and clients run the venv's python in lab hosts: it must be visible there even when
    the checkout lives below /tmp, which hosts mount privately (as in a CI clone)."""
    lab = lab_factory(1)
    h = next(iter(lab.hosts.values()))
    res = h.run([sys.executable, "-c", "import stackha, pymysql, pika; print(stackha.__file__)"], timeout=60)
    assert res.ok, res.stderr
    # /tmp is the host's own (a fresh tmpfs): a file in the root namespace's /tmp is not seen
    # there, nor one made there outside, and it holds nothing but the mount points of the
    # checkout/venv passed through (CI clones under /tmp).
    allowed = {Path(p).relative_to("/tmp").parts[0] for p in labmod.passthrough_paths()
               if Path(p).is_relative_to("/tmp")}
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="stackha-root-marker-") as marker:
        listed = h.run(["ls", "-A", "/tmp"], check=True).stdout.split()
        assert os.path.basename(marker.name) not in listed, "the host sees the root namespace's /tmp"
        assert set(listed) <= allowed, f"host /tmp is not fresh: {sorted(set(listed) - allowed)}"
        h.run(["touch", "/tmp/stackha-host-marker"], check=True)
        assert not Path("/tmp/stackha-host-marker").exists(), "a file made in the host's /tmp appeared outside"
        fs = h.run(["stat", "-f", "-c", "%T", "/tmp"], check=True).stdout.strip()
        assert fs == "tmpfs", f"host /tmp is {fs}, not a tmpfs of its own"

"""The inventory (hosts/inventory.py), the SSH command line, the BMC agent options and the
fence device rendered from an inventory BMC: pure parts, no root, no network."""

from __future__ import annotations

import ipaddress
import os
import shlex
from pathlib import Path

import pytest

from stackha.hosts import bmc as bmcs
from stackha.hosts.inventory import InventoryError, load_inventory, parse_inventory
from stackha.hosts.provider import MachineSpec


@pytest.fixture
def files(tmp_path: Path):
    key = tmp_path / "id"
    key.write_text("not really a key\n")
    known = tmp_path / "known_hosts"
    known.write_text("")
    pw = tmp_path / "bmc.pass"
    pw.write_text("s3cret\n")
    pw.chmod(0o600)
    return {"key": str(key), "known": str(known), "pw": str(pw), "dir": tmp_path}


def text(files, machines: str, extra: str = "") -> str:
    return f"""
name: prod
defaults:
  user: op
  key: {files['key']}
  known_hosts: {files['known']}
  bmc: {{type: redfish, address: 198.51.100.1, username: admin, password_file: {files['pw']}, ssl_insecure: true}}
machines:
{machines}
client: {{name: ws, address: 192.0.2.5}}
{extra}"""


GOOD = """  "0": {name: ctl1, address: 192.0.2.11, bmc: {address: 198.51.100.11, systems_uri: /redfish/v1/Systems/1}}
  1: {name: ctl2, address: 192.0.2.12, interface: bond0, bmc: {type: ipmi, address: 198.51.100.12}}"""


def test_valid_inventory_merges_defaults_and_resolves_everything(files):
    inv = parse_inventory(text(files, GOOD), source="inv.yaml")
    assert inv.name == "prod" and set(inv.machines) == {"0", "1"}
    m0, m1 = inv.machines["0"], inv.machines["1"]
    assert (m0.name, m0.address, m0.user, m0.port, m0.interface) == ("ctl1", ipaddress.IPv4Address("192.0.2.11"), "op",
                                                                     22, "eth0")
    assert m1.interface == "bond0"
    assert (m0.bmc.type, m0.bmc.port, m0.bmc.username, m0.bmc.ssl_insecure) == ("redfish", 443, "admin", True)
    assert (m1.bmc.type, m1.bmc.port) == ("ipmi", 623)
    assert m0.bmc.password() == "s3cret"
    assert inv.client.name == "ws" and inv.client.bmc is None  # defaults.bmc is the machines' only


@pytest.mark.parametrize("machines,extra,where,needle", [
    ('  "0": {name: a, address: 192.0.2.300}', "", "machines.0.address", "not an IPv4 address"),
    ('  "0": {address: 192.0.2.1}', "", "machines.0.name", "missing name"),
    ('  "0": {name: a, address: 192.0.2.1, colour: red}', "", "machines.0.colour", "unknown key 'colour'"),
    ('  "0": {name: a, address: 192.0.2.1, bmc: {type: amt, address: x}}', "", "machines.0.bmc.type", "redfish"),
    ('  "0": {name: a, address: 192.0.2.1, port: 99999}', "", "machines.0.port", "65535"),
    ('  "0": {name: a, address: 192.0.2.1}\n  "1": {name: a, address: 192.0.2.2}', "", "machines.1.name", "also"),
    ('  "zero": {name: a, address: 192.0.2.1}', "", "machines.zero", "not a bundle machine key"),
    ('  "0": {name: a, address: 192.0.2.1, key: /nonexistent/key}', "", "machines.0.key", "cannot be read"),
    ('  "0": {name: a, address: 192.0.2.1, interface: "eth 0"}', "", "machines.0.interface", "not an interface"),
])
def test_bad_inventory_fields_are_one_line_each_with_path_and_fix(files, machines, extra, where, needle):
    with pytest.raises(InventoryError) as exc:
        parse_inventory(text(files, machines, extra), source="inv.yaml")
    lines = str(exc.value).splitlines()
    hit = [ln for ln in lines if f"inv.yaml: {where}:" in ln]
    assert hit and needle in hit[0] and "(fix: " in hit[0], lines


def test_world_readable_bmc_password_file_is_refused(files):
    os.chmod(files["pw"], 0o644)
    with pytest.raises(InventoryError, match=r"password_file: .* readable by others .*chmod 600"):
        parse_inventory(text(files, GOOD))


def test_password_from_environment_and_missing_variable(files, monkeypatch):
    t = text(files, '  "0": {name: a, address: 192.0.2.1, bmc: {address: 198.51.100.1, password_file: null, '
                    'password_env: STACKHA_T_PW}}').replace(f"password_file: {files['pw']}, ", "")
    with pytest.raises(InventoryError, match="password_env: environment variable STACKHA_T_PW is not set"):
        parse_inventory(t)
    monkeypatch.setenv("STACKHA_T_PW", "from-env")
    assert parse_inventory(t).machines["0"].bmc.password() == "from-env"


def test_missing_client_and_unreadable_file(files, tmp_path):
    with pytest.raises(InventoryError, match="client: no client host"):
        parse_inventory(text(files, GOOD).replace("client: {name: ws, address: 192.0.2.5}", ""))
    with pytest.raises(InventoryError, match="cannot read the inventory"):
        load_inventory(tmp_path / "nope.yaml")


def test_provider_refuses_machines_the_bundle_and_inventory_disagree_on(files):
    from stackha.hosts.ssh import SshProvider

    inv = parse_inventory(text(files, GOOD), source="inv.yaml")
    p = SshProvider("prod", files["dir"], inv, "", str(files["dir"]))
    with pytest.raises(InventoryError) as exc:
        p.check([MachineSpec("0", "0"), MachineSpec("2", "2")], {})
    lines = str(exc.value).splitlines()
    assert any("machines.2: bundle machine 2 is not in the inventory" in ln for ln in lines), lines
    assert any("machines.1: the bundle has no machine 1" in ln for ln in lines), lines
    assert p.host_name("0") == "ctl1" and p.client().name == "ws"
    assert p.record()["kind"] == "ssh" and "s3cret" not in str(p.record())


def test_ssh_command_line_uses_sudo_timeout_clean_env_and_setpriv(files):
    from stackha.hosts.ssh import SshHost

    inv = parse_inventory(text(files, GOOD))
    h = SshHost(inv.machines["0"])
    argv = shlex.split(h._command(["id", "-u"], {"X": "1 2"}, "mysql", 30))
    assert argv[:3] == ["sudo", "-n", "--"]
    assert argv[3:7] == ["timeout", "-s", "KILL", "30.0"]
    assert argv[7:9] == ["env", "-i"] and "X=1 2" in argv and "HOME=/root" in argv
    assert "setpriv" in argv[argv.index("/bin/sh") + 2] and argv[-3:] == ["mysql", "id", "-u"]
    root = SshHost(parse_inventory(text(files, GOOD).replace("user: op", "user: root")).machines["0"])
    assert shlex.split(root._command("true", None, None, 5))[0] == "timeout"
    assert h.vip_interface == "eth0" and SshHost(inv.machines["1"]).vip_interface == "bond0"


def test_bmc_agent_options_and_fence_device(files):
    inv = parse_inventory(text(files, GOOD))
    red, ipmi = inv.machines["0"].bmc, inv.machines["1"].bmc
    assert bmcs.agent_params(red, "pw") == {"ip": "198.51.100.11", "ipport": "443", "username": "admin", "password": "pw",
                                            "systems_uri": "/redfish/v1/Systems/1", "ssl_insecure": "1"}
    assert bmcs.agent_params(ipmi, "pw")["lanplus"] == "1"
    dev = bmcs.fence_device(red, "ctl1")
    assert dev.agent == "fence_redfish" and dev.params["pcmk_host_list"] == "ctl1" and dev.params["password"] == "s3cret"
    assert bmcs.fence_device(ipmi, "ctl2").agent == "fence_ipmilan" and not dev.files


def test_pacemaker_fences_ssh_hosts_through_their_bmc(files):
    """Pacemaker's devices for SSH hosts come from the inventory's BMCs (host.fence_device)."""
    from stackha.hosts.ssh import SshHost
    from stackha.services.base import AppContext, MemorySecrets, Unit
    from stackha.services.pacemaker import fence_devices

    inv = parse_inventory(text(files, GOOD.replace("type: ipmi, ", "")), source="inv.yaml")
    units = [Unit(f"hacluster/{i}", SshHost(inv.machines[k])) for i, k in enumerate(("0", "1"))]
    app = AppContext(name="hacluster", kind="hacluster", options={}, units=units, secrets=MemorySecrets())
    specs = fence_devices(app)
    params = [dict(s.params) for s in specs]
    assert [s.agent for s in specs] == ["fence_redfish", "fence_redfish"]
    assert params[0]["ip"] == "198.51.100.11" and params[0]["systems_uri"] == "/redfish/v1/Systems/1"
    assert params[1]["pcmk_host_list"] == "ctl2" and params[1]["password"] == "s3cret"


def test_importing_the_ssh_provider_prints_no_warning():
    """asyncssh imports cryptography's DSA module, which warns on stderr with cryptography ≥ 46:
    stackha's one-line errors (exit 2) must stay one line."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-W", "default", "-c", "import stackha.hosts.ssh"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stderr == "", res.stderr[-500:]

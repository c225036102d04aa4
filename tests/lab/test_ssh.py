"""The SSH provider end to end: lab hosts made into machines (sshd, a sudo user, a Redfish BMC),
the example control plane deployed on them over SSH from an inventory — without the lab
provider — and then used, observed and verified with the power-off done by fence_redfish.

stackha runs on the lab's client host (the operator's workstation, the only place lab addresses
are reachable from), as root, with its own state directory on that host's disk; it logs into the
machines as the non-root ``stackha-op`` and uses sudo.  The wrong-inventory checks run first, on
machines where nothing is deployed, and must leave nothing deployed.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path

import pytest
import yaml

from stackha.engine.clouds import openstack_argv

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lab-control-plane.yaml"
STATE = "/srv/stackha/state"


def stackha(ws, *args: str, timeout: float = 900):
    """The stackha CLI on the workstation (the lab's client host)."""
    from stackha.hosts.labssh import run_stackha

    return run_stackha(ws, *args, timeout=timeout)


@pytest.fixture(scope="module")
def machines(tmp_path_factory):
    from stackha.hosts import labssh
    from stackha.hosts.lab import LEASE_DIR, teardown

    if os.geteuid() != 0:
        pytest.fail("lab tests need root")
    state = tmp_path_factory.mktemp("state")
    taken = {p.name for p in LEASE_DIR.iterdir()} if LEASE_DIR.is_dir() else set()
    third = next((t for t in range(120, 256) if str(t) not in taken), None)
    if third is None:
        pytest.fail("no free /24 for a test lab")
    prefix = "r" + secrets.token_hex(3)
    lab, ws = labssh.build(prefix, [str(i) for i in range(5)], state_dir=state, subnet=f"198.18.{third}.0/24")
    try:
        overlay = "/srv/stackha/ssh/vip.yaml"
        ws.host.write_file(overlay, yaml.safe_dump({"applications": {"haproxy": {"options": {
            "vip": f"198.18.{third}.250"}}}}))
        hosts = {str(i): lab.host(f"m{i}") for i in range(5)}
        yield {"lab": lab, "ws": ws, "name": prefix, "overlay": overlay, "hosts": hosts, "third": third}
    finally:
        teardown(prefix, state)


def bad_inventory(m, change) -> str:
    """Write a copy of the workstation's inventory changed by ``change(doc)``; returns its path."""
    ws = m["ws"]
    doc = yaml.safe_load(ws.host.read_file(ws.inventory))
    change(doc)
    path = f"/srv/stackha/ssh/bad-{secrets.token_hex(2)}.yaml"
    ws.host.write_file(path, yaml.safe_dump(doc), mode=0o600)
    return path


def test_wrong_inventory_is_refused_in_one_line_naming_the_machine(machines):
    m = machines
    ws = m["ws"]
    other = "/srv/stackha/ssh/other_key"
    ws.host.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    wrong_known = "/srv/stackha/ssh/known_hosts_wrong"
    lines = (ws.host.read_file(ws.known_hosts) or b"").decode().splitlines()
    forged = (ws.host.read_file(other + ".pub") or b"").decode().split()
    lines[1] = f"{lines[1].split()[0]} {forged[0]} {forged[1]}"  # machine 1's key replaced
    ws.host.write_file(wrong_known, "\n".join(lines) + "\n")
    unused = f"198.18.{m['third']}.99"

    def unknown(doc):
        doc["machines"]["9"] = {"name": "extra", "address": f"198.18.{m['third']}.98"}

    def unreachable(doc):
        doc["machines"]["3"]["address"] = unused

    def bad_key(doc):
        doc["machines"]["2"]["key"] = other

    def mismatch(doc):
        doc["machines"]["1"]["known_hosts"] = wrong_known

    cases = [(unknown, "machines.9", "the bundle has no machine 9"),
             (unreachable, "machines.3", "unreachable"),
             (bad_key, "machines.2", "was refused with key"),
             (mismatch, "machines.1", "host key not trusted")]
    for change, where, needle in cases:
        path = bad_inventory(m, change)
        name = f"{m['name']}-bad"
        t0 = time.monotonic()
        res = stackha(ws, "deploy", str(EXAMPLE), "--overlay", m["overlay"], "--inventory", path, "--lab", name,
                      timeout=120)
        took = time.monotonic() - t0
        err = res.stderr.strip()
        print(f"{where}: rc {res.rc} in {took:.1f} s: {err}")
        assert res.rc == 2, (res.rc, res.stdout[-2000:], err)
        assert len(err.splitlines()) == 1, err
        assert where in err and needle in err, err
        assert "Traceback" not in res.stderr
        assert not ws.host.exists(f"{STATE}/deployments/{name}"), "a refused deploy recorded a deployment"
    # Nothing was started on any machine: no component's process, no component's files.
    for h in m["hosts"].values():
        running = {p.comm for p in h.processes()}
        assert not running & {"mariadbd", "beam.smp", "epmd", "haproxy", "keepalived", "uwsgi"}, running
        assert not h.exists("/srv/galera") and not h.exists("/srv/haproxy")


@pytest.fixture(scope="module")
def deployed(machines):
    m = machines
    t0 = time.monotonic()
    res = stackha(m["ws"], "deploy", str(EXAMPLE), "--overlay", m["overlay"], "--inventory", m["ws"].inventory,
                  timeout=1500)
    seconds = time.monotonic() - t0
    print(res.stdout[-3000:])
    assert res.ok, (res.rc, res.stdout[-3000:], res.stderr[-3000:])
    print(f"deploy over SSH: {seconds:.1f} s")
    return {**m, "deploy_s": seconds}


def test_token_issue_through_the_vip_from_the_client(deployed):
    res = deployed["ws"].host.run(openstack_argv(deployed["name"], "token", "issue", "-f", "json"), timeout=120)
    assert res.ok, res.stderr[-2000:]
    token = json.loads(res.stdout)
    assert token["id"] and token["project_id"]


def test_status_over_ssh_shows_every_unit_active_on_the_inventory_hosts(deployed):
    res = stackha(deployed["ws"], "status", "--lab", deployed["name"], "--format", "json", timeout=300)
    assert res.ok, res.stderr[-2000:]
    rows = json.loads(res.stdout)
    units = [u for r in rows for u in r["units"]]
    assert units and all(u["workload"] == "active" for u in units), [(u["unit"], u["message"]) for u in units]
    assert {u["host"] for u in units} == {h.name for h in deployed["hosts"].values()}
    rows = {r["application"]: r for r in rows}
    assert rows["galera"]["facts"].get("wsrep_cluster_size") == 3, rows["galera"]["facts"]


def test_verify_loses_nothing_and_powers_off_through_fence_redfish(deployed):
    from stackha.hosts import labbmc, labfence

    ws, lab = deployed["ws"], deployed["lab"]
    res = stackha(ws, "verify", "--lab", deployed["name"], "--scenario", "lb-master-poweroff",
                  "--scenario", "galera-writer-kill", "--format", "json", timeout=1800)
    summary = json.loads(res.stdout) if res.stdout.strip().startswith("{") else {}
    assert summary, (res.rc, res.stdout[-3000:], res.stderr[-3000:])
    print(json.dumps(summary["summary"], indent=1))
    assert summary["lost"] == 0, summary["summary"]
    assert res.ok and not summary["failing_runs"], (summary["failing_runs"], res.stderr[-2000:])
    # The power-off: stackha ran fence_redfish against the BMC (its power history), the BMC got a
    # Redfish ForceOff for that system, and the lab's fence gateway powered it off for the BMC host.
    power = [json.loads(x) for x in (ws.host.read_file(f"{STATE}/ssh/{deployed['name']}/power-history.jsonl")
                                     or b"").decode().splitlines() if x.strip()]
    offs = [p for p in power if p["action"] == "off" and p["result"] == "ok"]
    assert offs and all(p["agent"] == "fence_redfish" for p in offs), power
    victim = offs[-1]["host"]
    bmc = [h for h in labbmc.history(lab) if h["system"] == victim and h["reset"] == "ForceOff"]
    assert bmc and bmc[-1]["client"] == str(ws.host.address), labbmc.history(lab)
    gw = [h for h in labfence.history(lab) if h["target"] == victim and h["action"] == "off"]
    assert gw and gw[-1]["by"] == f"{lab.prefix}-bmc", labfence.history(lab)
    print("power history:", json.dumps(offs[-1]), "\nBMC:", json.dumps(bmc[-1]), "\ngateway:", json.dumps(gw[-1]))


def test_pacemaker_fences_an_ssh_machine_with_fence_redfish_through_its_bmc(deployed):
    """Last (it fences a controller): a cluster on machines 0-2 with STONITH from the inventory's
    BMCs; corosync kill -9 on the VIP holder → the survivors fence it with fence_redfish."""
    from stackha.hosts import labbmc, labfence

    ws, lab = deployed["ws"], deployed["lab"]
    script = str(Path(__file__).with_name("ssh_pacemaker.py"))
    from stackha.hosts.labssh import WORKSTATION_STATE

    res = ws.host.run(["env", f"PYTHONPATH={Path(__file__).resolve().parents[2]}", sys.executable, script,
                       ws.inventory, WORKSTATION_STATE, f"198.18.{deployed['third']}.251/24"], timeout=600)
    assert res.ok, (res.stdout[-2000:], res.stderr[-3000:])
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(out, indent=1))
    assert out["fence_agents"] == ["fence_redfish"], out
    assert out["went_off"], out
    victim = out["victim"]
    addresses = {str(h.address) for h in deployed["hosts"].values() if h.name != victim}
    bmc = [h for h in labbmc.history(lab) if h["system"] == victim and h["reset"] == "ForceOff"]
    assert bmc and bmc[-1]["client"] in addresses, labbmc.history(lab)  # a surviving node's fencer
    gw = [h for h in labfence.history(lab) if h["target"] == victim and h["action"] == "off"]
    assert gw and gw[-1]["by"] == f"{lab.prefix}-bmc", labfence.history(lab)
    assert "successful" in out["stonith_history"] or "success" in out["stonith_history"], out["stonith_history"]

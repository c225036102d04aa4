"""Issue 14, phase 1: the real Masakari on the lab cloud, one deploy for the module.

examples/lab-cloud.yaml with the overlay examples/lab-instance-ha.yaml: masakari-api (uwsgi) and
masakari-engine on the three controllers behind the VIP, one failover segment of the three
compute hosts with nova-compute/2 reserved.  From the client host, the real client
(python3-masakariclient's ``openstack segment …`` / ``openstack notification …``) through the
VIP; then a compute host running HA_Enabled servers is fenced (powered off), stackha forces its
compute service down and posts the COMPUTE_HOST notification, and Masakari's engine evacuates:
every server ACTIVE on another host (seed 004's reserved_host outcome: the reserved host enabled
in Nova takes them, its reserved flag cleared, the failed host on maintenance), timed from the
fence.  Then the host is repaired and re-admitted with one stackha command, and the segment is
switched to ``auto`` with the real client and another host fails; then ``rh_priority`` with no
free reserved host (falls back to auto), ``auto_priority`` with no host for auto (falls back to
the reserved host), and an instance restart on a VM notification (seed 004's outcomes).

``STACKHA_TEST_REUSE=PREFIX:STATE_DIR`` runs the module against a cloud deployed by hand
(``stackha --state-dir STATE_DIR deploy examples/lab-cloud.yaml --overlay
examples/lab-instance-ha.yaml --lab PREFIX``) and leaves it up (the tests change it: power cycles,
servers).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time

import pytest

from tests.lab.cloud import EXAMPLES, all_active, ctx, deployed, openstack, reused
from tests.lab.polling import wait_for

# Not part of `make test`: the module deploys an 11-host cloud (212 s quiet) and took 9 min alone on
# the machine and 17 min beside another lab (8 passed both times on 2026-12-08; alone: reserved_host 4
# servers ACTIVE elsewhere 13.5 s after the fence, auto 9.7 s, rh_priority 27.2 s, auto_priority's
# notification finished at 40.4 s, instance restart 6.0 s), which would push the suite past its 45-min
# budget.  Run it on purpose with STACKHA_TEST_INSTANCE_HA=1.
pytestmark = pytest.mark.skipif(os.environ.get("STACKHA_TEST_INSTANCE_HA") != "1",
                                reason="9-17 min instance HA module, outside make test's budget; STACKHA_TEST_INSTANCE_HA=1 runs it")

NOVA = "--os-compute-api-version=2.74"  # --host (2.74) and --nic none (2.37)
SERVERS = 4
#: Answers that mean "the API behind the VIP is busy", not "wrong": on this 2-core machine with a
#: second lab beside this one, Keystone's two workers per unit sometimes miss HAProxy's checks.
TRANSIENT = ("HTTP 502", "HTTP 503", "HTTP 504", "Service Unavailable", "Bad Gateway", "Unable to establish connection", "timed out",
             "RemoteDisconnected", "Gateway Timeout", "Gateway Time-out")


def os_json(d, *args: str, timeout: float = 180, deadline_s: float = 180):
    """``openstack … -f json`` from the client host, retried while the answer is transient
    (:data:`TRANSIENT`) until ``deadline_s``; any other failure fails the test at once."""
    def attempt():
        res = openstack(d, *args, "-f", "json", timeout=timeout)
        if res.ok:
            return (json.loads(res.stdout),)
        if any(t in res.stderr for t in TRANSIENT):
            raise Transient(res.stderr.strip()[-300:])
        pytest.fail(f"openstack {' '.join(args)}: {res.stderr[-1500:]}")

    return wait_for(attempt, deadline_s, f"openstack {' '.join(args)}", interval_s=2, ignore=(Transient,))[0]


class Transient(Exception):
    """A busy API's answer (see :data:`TRANSIENT`)."""


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    if os.environ.get("STACKHA_TEST_REUSE"):
        yield reused(os.environ["STACKHA_TEST_REUSE"])
        return
    with deployed(EXAMPLES / "lab-cloud.yaml", tmp_path_factory, "mk",
                  overlays=(EXAMPLES / "lab-instance-ha.yaml",)) as c:
        print(f"\nlab-cloud + instance HA deployed in {c['seconds']:.1f} s; masakari applied in "
              f"{c['report'].app_seconds.get('masakari', 0):.1f} s")
        yield c


@pytest.fixture(scope="module")
def d(cloud):
    d = cloud["d"]
    d.client.run(["mkdir", "-p", "/srv/stackha/test"], check=True)
    return d


@pytest.fixture(scope="module")
def computes(d) -> list[str]:
    """The Nova host names of nova-compute/0, /1, /2."""
    return [u.host.name for u in ctx(d, "nova-compute").units]


@pytest.fixture(scope="module")
def boot(d):
    """An image and a flavor (once), and a function booting HA_Enabled servers pinned to a host."""
    tag = secrets.token_hex(3)
    d.client.write_file(f"/srv/stackha/test/img-{tag}.raw", os.urandom(64 << 10))
    img = os_json(d, "image", "create", "--disk-format", "raw", "--container-format", "bare",
                         "--file", f"/srv/stackha/test/img-{tag}.raw", f"img-{tag}", timeout=300)
    wait_for(lambda: os_json(d, "image", "show", img["id"])["status"] == "active", 120,
             "the image to become active", interval_s=1)
    flavor = os_json(d, "flavor", "create", "--ram", "64", "--disk", "1", "--vcpus", "1", f"flv-{tag}")
    # the module boots 4 servers per recovery test and deletes none: Nova's default quota (10
    # instances) would refuse the third batch
    res = openstack(d, "quota", "set", "--instances", "100", "--cores", "100", "--ram", "51200", "admin")
    assert res.ok, res.stderr[-1500:]

    def create(label: str, host: str, count: int = SERVERS) -> list[str]:
        name = f"{label}-{tag}"

        def created() -> bool:  # a create is retried only while none of its servers exists
            if servers(d, name):
                return True
            res = openstack(d, NOVA, "server", "create", "--image", img["id"], "--flavor", flavor["id"], "--nic",
                            "none", "--host", host, "--property", "HA_Enabled=True", "--min", str(count),
                            "--max", str(count), name, "-f", "json", timeout=180)
            if res.ok:
                return True
            if any(t in res.stderr for t in TRANSIENT):
                raise Transient(res.stderr.strip()[-300:])
            pytest.fail(f"server create {name}: {res.stderr[-1500:]}")

        wait_for(created, 180, f"servers {name} created", interval_s=2, ignore=(Transient,))
        ids = wait_for(lambda: (lambda ss: [s["ID"] for s in ss] if len(ss) == count and all(
            s["Status"] == "ACTIVE" for s in ss) else None)(servers(d, name)), 300,
            f"{count} servers {name} ACTIVE on {host}", interval_s=2)
        assert {s["Host"] for s in servers(d, name)} == {host}
        return ids

    return create


def servers(d, name: str) -> list[dict]:
    """Servers whose name starts with ``name``: ID, Name, Status, Host (admin's view)."""
    rows = os_json(d, "server", "list", "--all-projects", "--long", "--name", f"^{name}")
    errored = [r for r in rows if r["Status"] == "ERROR"]
    assert not errored, [os_json(d, "server", "show", r["ID"]).get("fault") for r in errored[:1]] + errored
    return [r for r in rows if r["Name"].startswith(name)]


def compute_service(d, host: str) -> dict:
    rows = os_json(d, NOVA, "compute", "service", "list", "--service", "nova-compute", "--host", host, "--long")
    assert len(rows) == 1, rows
    return rows[0]


def segment(d, name: str = "lab-computes") -> tuple[dict, dict[str, dict]]:
    """The segment (real client) and its hosts by name."""
    seg = next(s for s in os_json(d, "segment", "list") if s["name"] == name)
    hosts = {h["name"]: h for h in os_json(d, "segment", "host", "list", seg["uuid"])}
    return seg, hosts


def test_every_unit_active(cloud, d):
    report = cloud.get("report")
    if report is not None:
        assert not report.failed, report.failed
    wait_for(lambda: not all_active(d), 120, "every unit active")


def test_masakari_through_the_vip_with_the_real_client(d, computes):
    """`openstack segment list`, `segment host list` and `notification list` from the client host."""
    vip = str(ctx(d, "masakari").vip.ip)
    eps = os_json(d, "endpoint", "list", "--service", "instance-ha")
    assert len(eps) == 3 and all(e["URL"].startswith(f"http://{vip}:15868/v1/") for e in eps), eps
    seg, hosts = segment(d)
    assert seg["recovery_method"] == "reserved_host" and seg["service_type"] == "COMPUTE"
    assert set(hosts) == set(computes)
    assert [h for h in hosts if hosts[h]["reserved"]] == [computes[2]]
    assert not any(h["on_maintenance"] for h in hosts.values())
    assert compute_service(d, computes[2])["Status"] == "disabled"  # nothing scheduled on the reserved host
    os_json(d, "notification", "list")
    print(f"\nsegment {seg['name']} ({seg['recovery_method']}): " + ", ".join(
        h + (" (reserved)" if v["reserved"] else "") for h, v in hosts.items()))


def recover_host(d, label: str, victim: str, ids: list[str], deadline_s: float = 300) -> tuple[dict, float, str]:
    """Fence ``victim``, force it down, notify Masakari; wait until every server in ``ids`` is
    ACTIVE on another host.  Returns (server ID → host, seconds from the fence, the notification's
    UUID)."""
    from stackha.instanceha import recovery

    r = recovery.host_failed(d, victim)
    print(f"\n{label}: {victim} fenced in {r.fenced_s * 1000:.0f} ms, forced down at {r.forced_down_s:.1f} s, "
          f"notification {r.notification} accepted at {r.notified_s:.1f} s")

    def moved() -> dict[str, str] | None:
        rows = {s["ID"]: s for s in os_json(d, "server", "list", "--all-projects", "--long")}
        missing = [i for i in ids if i not in rows]
        assert not missing, missing
        assert not [rows[i] for i in ids if rows[i]["Status"] == "ERROR"], [rows[i] for i in ids]
        done = all(rows[i]["Status"] == "ACTIVE" and rows[i]["Host"] not in (victim, None, "") for i in ids)
        return {i: rows[i]["Host"] for i in ids} if done else None

    where = wait_for(moved, deadline_s, f"every HA server of {victim} ACTIVE on another host", interval_s=1)
    took = time.time() - r.started_at
    n = recovery.wait_notification(d, r.notification, 120)
    print(f"{label}: {len(ids)} HA servers ACTIVE elsewhere {took:.1f} s after the fence; "
          f"notification {n['status']} {time.time() - r.started_at:.1f} s after it")
    assert n["status"] == "finished", n
    shown = os_json(d, "notification", "show", r.notification)
    assert shown["status"] == "finished" and shown["source_host_uuid"], shown
    return where, took, r.notification


def test_reserved_host_takes_the_instances_of_a_fenced_host(d, computes, boot):
    """Seed 004's reserved_host outcome: the reserved host is enabled in Nova and takes every
    instance, its reserved flag is cleared, the failed host is on maintenance."""
    victim, reserved = computes[0], computes[2]
    ids = boot("rh", victim)
    where, took, _ = recover_host(d, "reserved_host", victim, ids)
    assert set(where.values()) == {reserved}, where
    svc = compute_service(d, reserved)
    assert svc["Status"] == "enabled" and svc["State"] == "up", svc
    failed = compute_service(d, victim)
    assert failed["Status"] == "disabled" and failed["Forced Down"] is True, failed
    _, hosts = segment(d)
    assert hosts[reserved]["reserved"] is False and hosts[victim]["on_maintenance"] is True, hosts


def readmit(cloud, d, host: str) -> dict:
    """Power ``host`` on ("repaired"), then `stackha instance-ha readmit HOST`; waits until its
    nova-compute reports up.  Returns its compute service row."""
    d.host(host).power_on()
    res = subprocess.run([sys.executable, "-m", "stackha", "--state-dir", str(cloud["state"]), "instance-ha",
                          "readmit", host, "--lab", d.name], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-1500:]
    print(f"\nreadmit {host}: " + "; ".join(res.stdout.strip().splitlines()))
    return wait_for(lambda: (lambda s: s if s["State"] == "up" else None)(compute_service(d, host)), 120,
                    f"nova-compute on {host} up again", interval_s=2)


def test_a_repaired_host_is_readmitted_with_one_command(cloud, d, computes):
    """Power the failed host on ("repaired"), then `stackha instance-ha readmit HOST`: its
    nova-compute runs again, its service is enabled and not forced down, and Masakari no longer
    keeps it on maintenance."""
    victim = computes[0]
    svc = readmit(cloud, d, victim)
    assert svc["Status"] == "enabled" and svc["Forced Down"] is False, svc
    _, hosts = segment(d)
    assert hosts[victim]["on_maintenance"] is False, hosts


def test_auto_recovery_after_switching_the_segment_with_the_real_client(d, computes, boot):
    """`openstack segment update --recovery_method auto`; a fenced host's servers are evacuated
    to any enabled host (Nova's scheduler chooses)."""
    seg, _ = segment(d)
    os_json(d, "segment", "update", "--recovery_method", "auto", seg["uuid"])
    assert segment(d)[0]["recovery_method"] == "auto"
    victim = computes[1]
    ids = boot("auto", victim)
    where, took, _ = recover_host(d, "auto", victim, ids)
    assert victim not in where.values()


def workflow(d, uuid: str) -> str:
    """The notification's recovery workflow details (API 1.1) as the real client prints them."""
    shown = os_json(d, "--os-ha-api-version", "1.1", "notification", "show", uuid)
    return json.dumps(shown.get("recovery_workflow_details"))


def engine_logged(d, text: str) -> bool:
    """Whether a masakari-engine (on any controller) logged ``text`` (Masakari's driver logs
    its fall-back from one flow to the other: masakari/engine/drivers/taskflow/driver.py)."""
    for u in ctx(d, "masakari").units:
        r = u.host.run(["grep", "-rqF", text, "/var/log/masakari", "/srv/stackha/log"])
        if r.ok:
            return True
    return False


def test_rh_priority_falls_back_to_auto_without_a_free_reserved_host(cloud, d, computes, boot):
    """Seed 004's rh_priority: the reserved_host flow first, and when it cannot run (here: the
    segment's only reserved host was taken by the reserved_host test, so none is free), Masakari
    falls back to auto: the servers go wherever Nova's scheduler sends them."""
    readmit(cloud, d, computes[1])  # fenced by the auto test
    seg, hosts = segment(d)
    assert not [h for h, v in hosts.items() if v["reserved"]], hosts
    os_json(d, "segment", "update", "--recovery_method", "rh_priority", seg["uuid"])
    assert segment(d)[0]["recovery_method"] == "rh_priority"
    victim = computes[0]
    ids = boot("rhp", victim)
    where, took, uuid = recover_host(d, "rh_priority", victim, ids)
    assert victim not in where.values(), where
    print(f"rh_priority workflow: {workflow(d, uuid)[:1500]}")
    assert engine_logged(d, f"failed_host '{victim}' using 'reserved_host' workflow, retrying using 'auto'"), \
        "no engine logged the fall-back from reserved_host to auto"


def test_auto_priority_falls_back_to_the_reserved_host_when_auto_finds_no_host(cloud, d, computes, boot):
    """Seed 004's auto_priority: auto first, and when it fails, the reserved_host flow.  Here auto
    can find no host — the only other enabled compute is disabled in Nova (as for maintenance)
    and the reserved host is disabled as reserved hosts are — so Nova's scheduler answers "No
    valid host" to auto's evacuations and the reserved host takes the servers: enabled in Nova,
    its reserved flag cleared, the failed host on maintenance.

    A failed evacuation leaves its server in ERROR (Nova's conductor), and Masakari's
    reserved_host flow evacuates an ERROR server, stops it and sets it back to ERROR ("If the
    instance was in 'error' state before failure it should be set to 'error' after recovery",
    masakari/engine/drivers/taskflow/host_failure.py): so every server must end on the reserved
    host, ACTIVE or — only with auto's "No valid host" fault — ERROR."""
    from stackha.instanceha import recovery

    readmit(cloud, d, computes[0])  # fenced by the rh_priority test
    victim, busy, reserved = computes[1], computes[0], computes[2]
    seg, hosts = segment(d)
    os_json(d, "segment", "host", "update", "--reserved", "True", seg["uuid"], hosts[reserved]["uuid"])
    os_json(d, "segment", "update", "--recovery_method", "auto_priority", seg["uuid"])
    ids = boot("ap", victim)
    for h, why in ((reserved, "reserved for Masakari"), (busy, "maintenance (test)")):
        res = openstack(d, NOVA, "compute", "service", "set", "--disable", "--disable-reason", why, h, "nova-compute")
        assert res.ok, res.stderr[-1500:]
    try:
        r = recovery.host_failed(d, victim)
        print(f"\nauto_priority: {victim} fenced in {r.fenced_s * 1000:.0f} ms, notification {r.notification} "
              f"accepted at {r.notified_s:.1f} s")
        n = recovery.wait_notification(d, r.notification, 600)
        took = time.time() - r.started_at
    finally:
        res = openstack(d, NOVA, "compute", "service", "set", "--enable", busy, "nova-compute")
    assert res.ok, res.stderr[-1500:]
    assert n["status"] == "finished", n
    rows = {s["ID"]: s for s in os_json(d, "server", "list", "--all-projects", "--long")}
    where = {i: (rows[i]["Host"], rows[i]["Status"]) for i in ids}
    print(f"auto_priority: notification finished {took:.1f} s after the fence; servers {sorted(where.values())}")
    assert {h for h, _ in where.values()} == {reserved}, where
    errored = [i for i, (_, st) in where.items() if st == "ERROR"]
    assert {st for _, st in where.values()} <= {"ACTIVE", "ERROR"}, where
    for i in errored:
        fault = os_json(d, "server", "show", i).get("fault") or {}
        assert "No valid host" in str(fault.get("message")), fault
    svc = compute_service(d, reserved)
    assert svc["Status"] == "enabled", svc
    _, hosts = segment(d)
    assert hosts[reserved]["reserved"] is False and hosts[victim]["on_maintenance"] is True, hosts
    print(f"auto_priority workflow: {workflow(d, r.notification)[:1500]}")
    assert engine_logged(d, f"failed_host: '{victim}' using 'auto' workflow, retrying using 'reserved_host'"), \
        "no engine logged the fall-back from auto to reserved_host"


def test_instance_restart_on_a_vm_notification(d, computes, boot):
    """Seed 004's instance restart: a VM notification for an ``HA_Enabled=True`` server (the
    instance monitor's schema: event LIFECYCLE, vir_domain_event STOPPED_FAILED) makes the engine
    stop and start it; it is ACTIVE again on the same host.  The notification is posted with the
    real client: the lab's computes run Nova's fake driver, which has no libvirt to raise the event
    that masakari-instancemonitor would turn into this notification."""
    from stackha.instanceha import recovery

    host = computes[2]
    sid = boot("vm", host, count=1)[0]
    payload = json.dumps({"event": "LIFECYCLE", "instance_uuid": sid, "vir_domain_event": "STOPPED_FAILED"})
    t0 = time.time()
    n = os_json(d, "notification", "create", "VM", host, time.strftime("%Y-%m-%dT%H:%M:%S.000", time.gmtime()), payload)
    done = recovery.wait_notification(d, n["notification_uuid"], 300)
    took = time.time() - t0
    assert done["status"] == "finished", done
    row = next(s for s in servers(d, "vm-") if s["ID"] == sid)
    assert row["Status"] == "ACTIVE" and row["Host"] == host, row
    actions = [e["Action"] for e in os_json(d, "server", "event", "list", sid)]
    print(f"\ninstance restart: notification finished {took:.1f} s after it was posted; server actions {actions}")
    assert "stop" in actions and "start" in actions, actions

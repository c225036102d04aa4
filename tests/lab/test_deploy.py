"""Issues 4 and 5 acceptance: examples/lab-control-plane.yaml deployed on a real lab — the data
tier (Galera, RabbitMQ, HAProxy pair + keepalived VIP) and Keystone behind the VIP.

One lab is deployed once for the module (a minute or two) and the tests run against it in order;
the module's finalizer destroys it, also when a test failed.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stackha import cli
from stackha.cli.deploy import run_deploy
from stackha.engine.deploy import Deployment
from stackha.errors import InvalidInput
from stackha.hosts.lab import teardown
from stackha.services import operator_for

import polling


def poll(predicate, deadline_s: float, interval_s: float = 0.2):
    return polling.poll(predicate, deadline_s, interval_s)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lab-control-plane.yaml"
DATA_TIER = {"galera", "rabbitmq-server", "haproxy", "keepalived"}




@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    import os

    if os.geteuid() != 0:
        pytest.fail("lab tests need root")
    state = tmp_path_factory.mktemp("state")
    overlay_dir = tmp_path_factory.mktemp("overlay")
    from stackha.hosts.lab import LEASE_DIR
    import yaml

    taken = {p.name for p in LEASE_DIR.iterdir()} if LEASE_DIR.is_dir() else set()
    third = next((t for t in range(101, 256) if str(t) not in taken), None)
    if third is None:
        pytest.fail("no free /24 for a test lab")
    overlay = overlay_dir / "vip.yaml"
    overlay.write_text(yaml.safe_dump({"applications": {"haproxy": {"options": {"vip": f"198.18.{third}.250"}}}}))
    prefix = "td" + secrets.token_hex(3)
    old = cli.settings.state_dir
    cli.settings.state_dir = state
    t0 = time.monotonic()
    try:
        report = run_deploy(EXAMPLE, [overlay], prefix, quiet=True)
        elapsed = time.monotonic() - t0
        yield {"prefix": prefix, "state": state, "overlay": overlay, "report": report, "seconds": elapsed,
               "d": Deployment.open(prefix, state)}
    finally:
        cli.settings.state_dir = old
        teardown(prefix, state)


def ctx(d, kind):
    return next(c for c in d.contexts().values() if c.kind == kind)


def test_every_unit_active(cloud):
    d = cloud["d"]
    assert not cloud["report"].failed, cloud["report"].failed
    assert not cloud["report"].waiting, cloud["report"].waiting
    print(f"cloud deployed in {cloud['seconds']:.1f} s")
    seen = set()
    for st in d.status():
        seen.add(st.app)
        assert all(u.state.value == "active" for u in st.units), (st.app, [(u.unit, u.state, u.message) for u in st.units])
    assert seen >= DATA_TIER | {"keystone"}


def test_mariadb_client_through_the_vip_sees_a_three_node_cluster(cloud):
    d = cloud["d"]
    galera = ctx(d, "galera")
    user, password = operator_for("galera").client_credentials(galera)
    res = d.client.run(["mariadb", "-h", str(galera.vip.ip), "-u", user, f"-p{password}", "-N", "-B",
                        "-e", "SHOW STATUS LIKE 'wsrep_cluster_size'"], timeout=20)
    assert res.ok, res.stderr
    assert res.stdout.split() == ["wsrep_cluster_size", "3"]


PIKA_SCRIPT = r"""
import json, sys, uuid, pika
urls = sys.argv[1].split(",")
params = [pika.URLParameters(u) for u in urls]
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.confirm_delivery()
q = "stackha-test-" + uuid.uuid4().hex[:8]
ok = ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum"})
sent = []
for i in range(50):
    body = uuid.uuid4().hex
    ch.basic_publish("", q, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
    sent.append(body)
got = []
for _ in range(200):
    m, props, body = ch.basic_get(q, auto_ack=False)
    if m is None:
        break
    got.append(body.decode())
    ch.basic_ack(m.delivery_tag)
args = ch.queue_declare(q, passive=True)
print(json.dumps({"sent": sent, "got": got}))
ch.queue_delete(q)
conn.close()
"""


def test_pika_publisher_with_confirms_and_consumer_on_a_quorum_queue(cloud):
    d = cloud["d"]
    rmq = ctx(d, "rabbitmq")
    op = operator_for("rabbitmq")
    user, password = op.client_credentials(rmq)
    url = op.transport_url(rmq, user, password)
    assert url.count("@") == 3  # every broker listed, no VIP
    # pika wants one amqp:// URL per broker
    hosts = url.split("://", 1)[1].rsplit("/", 1)[0].split(",")
    urls = ",".join(f"amqp://{h}/%2F?connection_attempts=3&retry_delay=1" for h in hosts)
    res = d.client.run([sys.executable, "-c", PIKA_SCRIPT, urls], timeout=120)
    assert res.ok, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["got"] == out["sent"] and len(out["sent"]) == 50


def test_deploying_again_changes_nothing(cloud):
    report = run_deploy(EXAMPLE, [cloud["overlay"]], cloud["prefix"], quiet=True)
    assert not report.failed
    assert {a: c for a, c in report.changes.items() if c} == {}


def openstack(d, *args, config="/srv/stackha/clouds.yaml", timeout=60):
    from stackha.engine.clouds import cloud_name

    return d.client.run(["env", f"OS_CLIENT_CONFIG_FILE={config}", "openstack", "--os-cloud",
                         cloud_name(d.name), *args], timeout=timeout)


def until_ok(fn, deadline_s):
    """Poll ``fn`` (→ CommandResult) until ok or the deadline; returns (last result, seconds)."""
    t0 = time.monotonic()
    last = []

    def ok():
        last[:] = [fn()]
        return last[0].ok

    poll(ok, deadline_s, 0.5)
    return last[0], time.monotonic() - t0


def test_openstack_client_through_the_vip(cloud):
    d = cloud["d"]
    res = openstack(d, "token", "issue", "-f", "json")
    assert res.ok, res.stderr
    token = json.loads(res.stdout)
    assert token["id"] and token["project_id"]
    res = openstack(d, "catalog", "list", "-f", "json")
    assert res.ok, res.stderr
    catalog = json.loads(res.stdout)
    identity = next(c for c in catalog if c["Type"] == "identity")
    vip = str(ctx(d, "keystone").vip.ip)
    assert all(vip in e["url"] for e in identity["Endpoints"]), identity
    assert {e["interface"] for e in identity["Endpoints"]} == {"public", "internal", "admin"}


def test_a_token_issued_by_one_unit_validates_on_the_others(cloud):
    d = cloud["d"]
    ks = ctx(d, "keystone")
    password = operator_for("keystone").admin_password(ks)
    body = json.dumps({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
    first, *others = ks.units
    res = d.client.run(["curl", "-s", "-D", "-", "-o", "/dev/null", "-X", "POST", "-H", "Content-Type: application/json",
                        "--data-binary", "@-", f"http://{first.address}:5000/v3/auth/tokens"], input=body, timeout=30)
    headers = dict(line.split(": ", 1) for line in res.stdout.splitlines() if ": " in line)
    token = {k.lower(): v for k, v in headers.items()}.get("x-subject-token", "").strip()
    assert token, res.stdout
    for unit in others:
        r = d.client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"X-Auth-Token: {token}",
                          "-H", f"X-Subject-Token: {token}", f"http://{unit.address}:5000/v3/auth/tokens"], timeout=30)
        assert r.stdout == "200", f"{unit.name} answered {r.stdout} validating a token issued by {first.name}"


def test_wrong_password_gives_the_clients_401(cloud):
    d = cloud["d"]
    good = d.client.read_file("/srv/stackha/clouds.yaml").decode()
    password = operator_for("keystone").admin_password(ctx(d, "keystone"))
    assert password in good
    d.client.write_file("/srv/test/bad-clouds.yaml", good.replace(password, "not-the-password"), mode=0o600)
    res = openstack(d, "token", "issue", config="/srv/test/bad-clouds.yaml")
    assert not res.ok
    assert "401" in res.stderr and "authentication" in res.stderr.lower(), res.stderr


def test_token_issue_survives_a_controller_and_each_load_balancer_powered_off(cloud):
    d = cloud["d"]
    controller = ctx(d, "keystone").units[0].host
    lbs = [u.host for u in ctx(d, "haproxy").units]
    for victim in [controller, *lbs]:
        victim.power_off()
        res, waited = until_ok(lambda: openstack(d, "token", "issue", "-f", "value", "-c", "id", timeout=30), 60)
        print(f"{victim.name} off: token issue ok after {waited:.1f} s")
        assert res.ok, f"token issue failing {waited:.0f} s after powering off {victim.name}: {res.stderr}"
        victim.power_on()
        d.recover()

    def not_active():
        return [(u.unit, u.state.value, u.message) for a in d.status() for u in a.units if u.state.value != "active"]

    # HAProxy marks restarted backends UP after its rise checks: poll, do not sample once.
    assert poll(lambda: not not_active(), 60.0, 1.0), not_active()


def test_killed_mariadbd_shows_within_5s_and_rejoins_by_ist(cloud):
    d = cloud["d"]
    galera = ctx(d, "galera")
    victim = galera.units[1]
    assert victim.host.signal("mariadbd", "KILL")
    t0 = time.monotonic()

    def unit_down():
        st = d.observe_app(galera)
        unit = next((u for u in st.units if u.unit == victim.name), None)  # missing: no evidence yet
        return unit is not None and unit.state.value != "active"

    assert poll(unit_down, 5.0), "status still shows the killed unit active after 5 s"
    print(f"kill -9 seen by status after {time.monotonic() - t0:.2f} s")
    log_before = len(victim.host.read_file("/srv/stackha/log/mariadbd.log") or b"")
    done = d.recover({"galera"})
    print("recover:", done)
    st = d.observe_app(galera)
    assert all(u.state.value == "active" for u in st.units), [(u.unit, u.message) for u in st.units]
    def log() -> str:
        return (victim.host.read_file("/srv/stackha/log/mariadbd.log") or b"")[log_before:].decode(errors="replace")

    # The node restarted at its --wsrep-recover position: it catches up by IST (or needs no
    # transfer at all when it missed nothing), never by a full SST.  A joiner is Synced only after
    # an SST completed, so once "synced with group" is logged an SST would show.
    assert poll(lambda: "synced with group" in log(), 15.0), log()[-3000:]
    assert "SST completed on joiner" not in log() and "SST received" not in log(), "the node rejoined by SST"
    assert not any(" SST " in f" {line} " for line in done.get("galera", [])), done


def test_cold_start_recovers_primary_with_every_acknowledged_row(cloud):
    d = cloud["d"]
    galera = ctx(d, "galera")
    user, password = operator_for("galera").client_credentials(galera)
    vip = str(galera.vip.ip)
    writer = r"""
import json, sys, time, uuid, pymysql
vip, user, pw, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
acked, end = [], time.monotonic() + seconds
conn = None
while time.monotonic() < end and len(acked) < 100000:
    try:
        if conn is None:
            conn = pymysql.connect(host=vip, user=user, password=pw, connect_timeout=1, read_timeout=2,
                                   write_timeout=2, autocommit=True)
            with conn.cursor() as c:
                c.execute("CREATE TABLE IF NOT EXISTS stackha.coldstart (id CHAR(32) PRIMARY KEY)")
        i = uuid.uuid4().hex
        with conn.cursor() as c:
            c.execute("INSERT INTO stackha.coldstart (id) VALUES (%s)", (i,))
        acked.append(i)
    except Exception:
        conn = None
        time.sleep(0.05)
print(json.dumps(acked))
"""
    d.client.write_file("/srv/test/writer.py", writer)
    proc = subprocess.Popen(
        d.client._wrap([sys.executable, "/srv/test/writer.py", vip, user, password, "6"], None),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def rows_committed() -> bool:
        r = galera.units[0].host.run(["mariadb", "-h", str(galera.units[0].address), "-u", user, f"-p{password}",
                                      "-N", "-B", "-e", "SELECT COUNT(*) FROM stackha.coldstart"], timeout=10)
        return r.ok and int(r.stdout.strip() or 0) >= 20

    # Cut the power while the writer runs (it runs 6 s in all), once it has committed rows.
    assert poll(rows_committed, 5.0, 0.1), "the writer committed nothing through the VIP"
    for u in galera.units:
        u.host.power_off()
    out, err = proc.communicate(timeout=60)
    acked = json.loads(out.decode().strip().splitlines()[-1])
    assert len(acked) > 10, err.decode()[-2000:]
    t0 = time.monotonic()
    for u in galera.units:
        u.host.power_on()
    done = d.recover()  # every application: the controllers also ran RabbitMQ and Keystone
    print(f"cold start recovered in {time.monotonic() - t0:.1f} s: {done}")
    st = d.observe_app(galera)
    assert all(u.state.value == "active" for u in st.units), [(u.unit, u.message) for u in st.units]
    assert all(u.facts.get("wsrep_cluster_status") == "Primary" for u in st.units)
    res = galera.units[0].host.run(
        ["mariadb", "-h", str(galera.units[0].address), "-u", user, f"-p{password}", "-N", "-B",
         "-e", "SELECT id FROM stackha.coldstart"], timeout=30)
    assert res.ok, res.stderr
    present = set(res.stdout.split())
    lost = [i for i in acked if i not in present]
    assert lost == [], f"{len(lost)} acknowledged rows lost of {len(acked)}"


def lab_traces(prefix: str, state) -> list[str]:
    """What a deploy under ``prefix`` left behind: a recorded deployment, a lab record, netns."""
    import os

    found = [f"deployment {prefix}"] if Deployment.exists(prefix, state) else []
    found += [f"{sub}/{prefix}" for sub in ("deployments", "labs") if (state / sub / prefix).exists()]
    if os.path.isdir("/run/netns"):
        found += [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith(f"stackha-{prefix}-")]
    return found


def test_two_galera_units_or_a_vip_outside_the_lab_are_refused_before_anything_starts(cloud, tmp_path):
    text = EXAMPLE.read_text()
    two = tmp_path / "two.yaml"
    two.write_text(text.replace('num_units: 3\n    to: ["0", "1", "2"]\n  rabbitmq',
                                'num_units: 2\n    to: ["0", "1"]\n  rabbitmq', 1))
    assert "num_units: 2" in two.read_text()
    refused = "tref" + secrets.token_hex(2)  # a prefix no lab holds: the refusal must leave it unused
    assert lab_traces(refused, cloud["state"]) == []
    with pytest.raises(InvalidInput, match="(?i)quorum"):
        run_deploy(two, [], refused, quiet=True)
    assert lab_traces(refused, cloud["state"]) == [], "the refused deploy recorded or created something"
    outside = tmp_path / "outside.yaml"
    outside.write_text(text.replace("vip: 198.18.100.250", "vip: 198.18.99.250"))
    before_d = Deployment.open(cloud["prefix"], cloud["state"])
    before = sorted(before_d.provider.hosts())
    before_bundle = before_d.store.get("bundle")
    assert before and before_bundle
    with pytest.raises(InvalidInput, match="outside"):
        run_deploy(outside, [], cloud["prefix"], quiet=True)
    after = Deployment.open(cloud["prefix"], cloud["state"])
    assert sorted(after.provider.hosts()) == before
    assert after.store.get("bundle") == before_bundle, "the refused deploy re-recorded the bundle"

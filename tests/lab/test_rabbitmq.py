"""RabbitMQ operator against real rabbitmq-server 3.10 nodes in the lab (root only).

Three broker hosts and one client host.  The AMQP client (pika) runs *inside* the client host
(the test process lives in the root network namespace, which cannot reach lab addresses): a
small script is written to the client host and run with this venv's interpreter.

Measurements are printed (run with ``-s`` to see them), never asserted as timings — except the
spec's "a kill -9'd node shows not active within 5 s".
"""

from __future__ import annotations

import json
import sys
import threading
import time

import pytest

from stackha.errors import InvalidInput
from stackha.polling import WaitTimeout, wait_until
from stackha.services.base import AppContext, AppStatus, MemorySecrets, Unit, WorkloadState
from stackha.services.rabbitmq import RabbitMQOperator, node_name, parse_transport_url

CLIENT_SCRIPT = "/srv/amqpclient/client.py"

# Runs inside the client host.  publish: persistent messages 0..count-1 with publisher confirms,
# reconnecting through the broker list after any failure and re-sending the unconfirmed message
# (at-least-once); consume: manual acks until `expected` messages or `idle` s of silence.
CLIENT = r'''
import json, sys, time
import pika

QS = "?connection_attempts=1&socket_timeout=2&heartbeat=10&blocked_connection_timeout=10&stack_timeout=5"

def connect(urls, start):
    order = urls[start:] + urls[:start]
    conn = pika.BlockingConnection([pika.URLParameters(u + QS) for u in order])
    return conn, conn.channel()

def publish(urls, queue, count, duration, marker, marker_after, rate):
    end = time.monotonic() + duration
    conn = ch = None
    i, start, failures, reconnects = 0, 0, 0, 0
    times, errors = [], []
    while i < count and time.monotonic() < end:
        try:
            if ch is None:
                conn, ch = connect(urls, start)
                ch.confirm_delivery()
                ch.queue_declare(queue, durable=True)
            ch.basic_publish("", queue, str(i).encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)
            times.append(time.monotonic())
            i += 1
            if marker and i == marker_after:
                open(marker, "w").write("started")
            if rate:
                time.sleep(1.0 / rate)
        except Exception as exc:  # any failure: reconnect, re-send message i
            failures += 1
            errors.append(type(exc).__name__)
            try:
                conn.close()
            except Exception:
                pass
            conn = ch = None
            start = (start + 1) % len(urls)
            reconnects += 1
            time.sleep(0.05)
    if conn is not None:
        conn.close()
    gaps = [b - a for a, b in zip(times, times[1:])]
    print(json.dumps({"confirmed": i, "failures": failures, "reconnects": reconnects,
                      "errors": sorted(set(errors)), "max_gap_s": max(gaps) if gaps else None}))

def consume(urls, queue, expected, idle):
    conn, ch = connect(urls, 0)
    ch.basic_qos(prefetch_count=500)
    got = []
    for method, props, body in ch.consume(queue, inactivity_timeout=idle):
        if method is None:
            break
        got.append(int(body))
        ch.basic_ack(method.delivery_tag)
        if len(got) >= expected:
            break
    ch.cancel()
    conn.close()
    print(json.dumps({"received": got}))

def declare(urls, queue):
    conn, ch = connect(urls, 0)
    ch.queue_declare(queue, durable=True)
    conn.close()
    print(json.dumps({"declared": queue}))

args = json.loads(sys.argv[1])
{"publish": publish, "consume": consume, "declare": declare}[args.pop("mode")](**args)
'''


def make_app(lab, tuning: str = "stackha") -> AppContext:
    units = [Unit(f"rabbitmq-server/{i}", lab.host(f"h{i + 1}")) for i in range(3)]
    return AppContext("rabbitmq-server", "rabbitmq", {}, units, MemorySecrets(), tuning=tuning)


def client(host, **args) -> dict:
    """Run the AMQP client script in ``host`` with ``args`` (see CLIENT); its JSON output."""
    host.write_file(CLIENT_SCRIPT, CLIENT)
    r = host.run([sys.executable, CLIENT_SCRIPT, json.dumps(args)], timeout=120)
    assert r.ok, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def ctl_json(unit: Unit, *args: str):
    """The unit's rabbitmqctl (stackha's wrapper) with --formatter json."""
    r = unit.host.run(["/srv/rabbitmq/rabbitmqctl", *args, "--formatter", "json"], timeout=60)
    assert r.ok, r.stderr
    return json.loads(r.stdout)


def wait_for(cond, deadline_s: float, what: str, step: float = 0.1, app=None, op=None):
    """Poll ``cond()`` until it returns a truthy value (returned) or ``deadline_s`` passes; the
    failure names the last observed status when ``app`` and ``op`` are given."""
    try:
        return wait_until(cond, deadline_s, step, what=what)
    except WaitTimeout as exc:
        last = f"; last status: {describe(op.observe(app))}" if app is not None else ""
        raise AssertionError(f"{exc}{last}") from None


def all_active(status: AppStatus) -> bool:
    return all(u.state is WorkloadState.ACTIVE for u in status.units)


def describe(status: AppStatus) -> str:
    return "; ".join(f"{u.unit} {u.state.value}: {u.message}" for u in status.units)


def rss_mib(unit: Unit) -> float:
    d = unit.host.daemon("rabbitmq")
    r = unit.host.run(["ps", "-o", "rss=", "-p", str(d.pid)], check=True)
    return int(r.stdout.strip()) / 1024


def test_cluster_deploy_clients_kill_and_recover(lab_factory):
    lab = lab_factory(4)
    app = make_app(lab)
    op = RabbitMQOperator()
    expected = sorted(node_name(u) for u in app.units)
    figures: dict[str, object] = {}

    # Deploy: three nodes, clustered.
    t0 = time.monotonic()
    changes = op.apply(app)
    figures["bring-up 3 nodes (s)"] = round(time.monotonic() - t0, 1)
    assert sum("joined the cluster" in c for c in changes) == 2, changes
    status = op.observe(app)
    assert all_active(status), describe(status)
    assert sorted(status.facts["running_nodes"]) == expected
    assert status.facts["partitions"] == {} and status.facts["alarms"] == []
    for u in status.units:
        assert sorted(u.facts["members"]) == expected
    t0 = time.monotonic()
    status = op.observe(app)
    figures["observe, 3 units (s)"] = round(time.monotonic() - t0, 2)

    # Idempotent.
    assert op.apply(app) == []

    # A user on its own vhost (created with default queue type quorum); the broker list.
    password = op.ensure_user(app, "nova", vhost="openstack")
    assert op.ensure_user(app, "nova", vhost="openstack") == password
    url = op.transport_url(app, "nova", password, vhost="openstack")
    brokers = parse_transport_url(url)
    assert sorted(f"rabbit@{b.host}" for b in brokers) == expected
    urls = [b.amqp_url() for b in brokers]
    client_host = lab.host("h4")
    pub = client(client_host, mode="publish", urls=urls, queue="stackha.smoke", count=300, duration=60,
                 marker=None, marker_after=0, rate=0)
    assert pub["confirmed"] == 300 and pub["failures"] == 0, pub
    queues = {q["name"]: q for q in ctl_json(app.units[0], "list_queues", "-p", "openstack", "name", "type",
                                              "durable", "messages")}
    assert queues["stackha.smoke"]["type"] == "quorum", queues  # declared without x-queue-type
    got = client(client_host, mode="consume", urls=urls, queue="stackha.smoke", expected=300, idle=5)
    assert sorted(got["received"]) == list(range(300))

    # A resource alarm on one node blocks that unit (and only it) until cleared.
    alarmed = app.units[2]
    alarmed.host.run(["/srv/rabbitmq/rabbitmqctl", "set_disk_free_limit", "100000GB"], check=True)
    try:
        status = wait_for(lambda: (s := op.observe(app)) and s.units[2].state is WorkloadState.BLOCKED and s,
                          60.0, "disk alarm in observe", step=1.0)
        assert "disk alarm" in status.units[2].message
        assert status.units[0].state is WorkloadState.ACTIVE and status.units[1].state is WorkloadState.ACTIVE
    finally:
        alarmed.host.run(["/srv/rabbitmq/rabbitmqctl", "set_disk_free_limit", "50MB"], check=True)
    wait_for(lambda: all_active(op.observe(app)), 60.0, "alarm cleared", step=1.0)

    # kill -9 one node: observe shows it within 5 s, the others stay active.
    victim = app.units[1]
    t0 = time.monotonic()
    assert victim.host.signal("rabbitmq", "KILL")
    status = wait_for(lambda: (s := op.observe(app)) and s.units[1].state is not WorkloadState.ACTIVE and s,
                      5.0, "killed node not active in observe")
    figures["kill -9 seen by observe (s)"] = round(time.monotonic() - t0, 2)
    assert "not running" in status.units[1].message
    assert status.units[0].state is WorkloadState.ACTIVE and status.units[2].state is WorkloadState.ACTIVE

    # recover: restarted and rejoined.
    t0 = time.monotonic()
    changes = op.recover(app)
    figures["recover killed node (s)"] = round(time.monotonic() - t0, 1)
    assert any(victim.name in c and "restarted" in c for c in changes), changes
    status = op.observe(app)
    assert all_active(status), describe(status)
    assert sorted(status.facts["running_nodes"]) == expected

    # Quorum-queue leader kill -9 during confirmed publishing (the generic client user, vhost /).
    user, cpass = op.client_credentials(app)
    urls = [b.amqp_url() for b in parse_transport_url(op.transport_url(app, user, cpass))]
    queue = "stackha.failover"
    first = client(client_host, mode="publish", urls=urls, queue=queue, count=1, duration=30,
                   marker=None, marker_after=0, rate=0)
    assert first["confirmed"] == 1, first
    leaders = {q["name"]: q for q in ctl_json(app.units[0], "list_queues", "name", "type", "leader")}
    assert leaders[queue]["type"] == "quorum", leaders
    leader = next(u for u in app.units if node_name(u) == leaders[queue]["leader"])
    # The client tries the leader's broker last, so its connection survives the kill and the gap
    # is the quorum queue's own failover (leader election), not a client reconnect.
    urls.sort(key=lambda url: f"@{leader.address}:" in url)
    figures["leader kill: leader / client's broker"] = (leader.name, urls[0].split("@")[1])
    marker = "/srv/amqpclient/started"
    client_host.run(["rm", "-f", marker])
    result: dict = {}

    def run_publisher():
        result.update(client(client_host, mode="publish", urls=urls, queue=queue, count=5000, duration=12,
                             marker=marker, marker_after=200, rate=250))

    th = threading.Thread(target=run_publisher)
    th.start()
    try:
        wait_for(lambda: client_host.read_file(marker) is not None, 30, "publisher started")
        assert leader.host.signal("rabbitmq", "KILL")
    finally:
        th.join(timeout=120)
    assert result, "publisher produced no result"
    figures["leader kill: confirm gap (s)"] = round(result["max_gap_s"], 2)
    figures["leader kill: publisher failures/reconnects"] = (result["failures"], result["reconnects"])
    op.recover(app)
    status = op.observe(app)
    assert all_active(status), describe(status)
    got = client(client_host, mode="consume", urls=urls, queue=queue, expected=10**6, idle=5)
    confirmed = set(range(result["confirmed"])) | {0}
    lost = confirmed - set(got["received"])
    figures["leader kill: confirmed / lost / duplicates"] = (
        len(confirmed), len(lost), len(got["received"]) - len(set(got["received"])))
    assert not lost, f"{len(lost)} confirmed messages lost"

    figures["RSS per node (MiB)"] = [round(rss_mib(u)) for u in app.units]
    print("\nRabbitMQ figures:", json.dumps(figures, indent=1))


def test_partitioned_node_pauses_and_resumes(lab_factory):
    lab = lab_factory(3)
    app = make_app(lab)
    op = RabbitMQOperator()
    op.apply(app)
    cut = app.units[0]
    t0 = time.monotonic()
    cut.host.partition()
    try:
        # Until the peers' net ticks time out, the cut node's CLI hangs (maintenance); then it pauses.
        status = wait_for(lambda: (s := op.observe(app)) and "pause_minority" in s.units[0].message and s,
                          60.0, "partitioned node paused by pause_minority", step=0.5, app=app, op=op)
        paused_after = time.monotonic() - t0
        assert status.units[0].state is WorkloadState.BLOCKED, describe(status)
        status = wait_for(lambda: (s := op.observe(app)) and s.units[1].state is WorkloadState.ACTIVE
                          and len(s.facts["running_nodes"]) == 2 and s, 60.0, "majority sees 2 running",
                          app=app, op=op)
        assert status.units[2].state is WorkloadState.ACTIVE, describe(status)
    finally:
        cut.host.heal()
    t0 = time.monotonic()

    def whole():
        s = op.observe(app)
        return all_active(s) and len(s.facts["running_nodes"]) == 3 and s

    # pause_minority resumes the node by itself (3-8 s here); in about 1 run of 8 the resumed
    # node hangs in boot (RabbitMQ 3.10 / Erlang 25 "global" hang) and only a restart helps:
    # that is recover's job, so give the node 30 s alone, then recover.
    try:
        status = wait_for(whole, 30.0, "cluster whole again after heal", step=0.5)
        how = "by itself"
    except AssertionError:
        changes = op.recover(app)
        assert any("stuck after a partition" in c for c in changes), changes
        status = wait_for(whole, 30.0, "cluster whole after recover", step=0.5, app=app, op=op)
        how = "after recover restarted the stuck node"
    print(f"\nRabbitMQ partition (tuning stackha): minority paused after {paused_after:.1f} s; "
          f"whole again {time.monotonic() - t0:.1f} s after heal, {how}")
    assert status.facts["partitions"] == {}


def test_cold_start_all_hosts_power_cycled(lab_factory):
    lab = lab_factory(4)
    app = make_app(lab)
    op = RabbitMQOperator()
    op.apply(app)
    user, password = op.client_credentials(app)
    urls = [b.amqp_url() for b in parse_transport_url(op.transport_url(app, user, password))]
    client_host = lab.host("h4")
    # The application's queue exists before its writer runs (declared, then the cluster is
    # observed), as OpenStack's queues do.
    client(client_host, mode="declare", urls=urls, queue="stackha.cold")
    assert all_active(op.observe(app))
    pub = client(client_host, mode="publish", urls=urls, queue="stackha.cold", count=500, duration=60,
                 marker=None, marker_after=0, rate=0)
    assert pub["confirmed"] == 500, pub
    # A queue declared and filled in the very second before every node dies: RabbitMQ 3.10.8 /
    # ra 2.2.0 may not have its Ra registration on disk yet (see RabbitMQOperator._leaderless).
    fresh = client(client_host, mode="publish", urls=urls, queue="stackha.cold-new", count=200, duration=60,
                   marker=None, marker_after=0, rate=0)
    assert fresh["confirmed"] == 200, fresh

    for u in app.units:
        u.host.power_off()
    status = op.observe(app)
    assert all("powered off" in u.message for u in status.units), describe(status)
    for u in app.units:
        u.host.power_on()
    status = op.observe(app)
    assert not any(u.state is WorkloadState.ACTIVE for u in status.units), describe(status)

    t0 = time.monotonic()
    changes = op.recover(app)
    cold = time.monotonic() - t0
    assert sum("restarted" in c for c in changes) == 3, changes
    status = op.observe(app)
    assert all_active(status), describe(status)
    assert len(status.facts["running_nodes"]) == 3
    assert op.recover(app) == []

    def consume(queue: str, expected: int) -> list[int]:
        try:
            return client(client_host, mode="consume", urls=urls, queue=queue, expected=expected, idle=5)["received"]
        except AssertionError as exc:
            queues = [u.host.run(["/srv/rabbitmq/rabbitmqctl", "-q", "list_queues", "name", "type", "leader",
                                  "online", "state", "messages"], timeout=60).stdout for u in app.units]
            raise AssertionError(f"{exc}\nqueues per node: {queues}\nstatus: {describe(op.observe(app))}") from None

    assert sorted(set(consume("stackha.cold", 500))) == list(range(500))
    got_fresh = sorted(set(consume("stackha.cold-new", 200)))
    lost_reported = any("DATA LOST" in c for c in changes)
    elections = [c for c in changes if "leader election" in c]
    print(f"\nRabbitMQ cold start: recover {cold:.1f} s; settled queue 500/500 confirmed messages back; "
          f"queue declared <1 s before the power-off: {len(got_fresh)}/200 back"
          f"{' (loss reported by recover)' if lost_reported else ''}; elections triggered: {len(elections)}")
    if got_fresh != list(range(200)):
        # A known limit of RabbitMQ 3.10.8 (stackha analyze prints it; README "Known limits"):
        # confirmed messages were lost.  That is never a pass: recover must at least have said so,
        # and the test is reported as an expected failure, not as passed.
        assert got_fresh == [] and lost_reported, (len(got_fresh), changes)
        pytest.xfail(f"RabbitMQ 3.10.8 lost {200 - len(got_fresh)} of 200 confirmed messages of a quorum "
                     f"queue declared <1 s before every node lost power (recover reported DATA LOST)")


def test_fewer_than_three_units_refused_before_anything_starts(lab_factory):
    lab = lab_factory(2)
    units = [Unit(f"rabbitmq-server/{i}", lab.host(f"h{i + 1}")) for i in range(2)]
    app = AppContext("rabbitmq-server", "rabbitmq", {}, units, MemorySecrets())
    with pytest.raises(InvalidInput, match="at least 3 units"):
        RabbitMQOperator().apply(app)
    for u in units:
        assert u.host.daemon("rabbitmq") is None and u.host.daemon("rabbitmq-epmd") is None
        assert not u.host.exists("/srv/rabbitmq")

"""GaleraOperator on real mariadbd daemons in a lab of 3 database hosts + 1 client host.

Every test builds its own lab (``lab_factory``) and deploys the cluster with ``apply``; figures
(bring-up time, write gaps, rejoin and cold-start times, RSS) are printed, never asserted.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time

import pytest

import polling

from stackha.services import galera as g
from stackha.services.base import AppContext, MemorySecrets, Unit, WorkloadState
from stackha.services.galera import GaleraBlocked, GaleraOperator

WRITER = r"""
import json, sys, time, pymysql
nodes, user, pw, db, tag = sys.argv[1].split(","), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
seconds, max_ops = float(sys.argv[6]), int(sys.argv[7])
acked, failed, oks = [], [], []
conn, node, t0 = None, 0, time.monotonic()
for i in range(max_ops):
    if time.monotonic() - t0 > seconds:
        break
    rid = f"{tag}-{i}"
    try:
        if conn is None:
            conn = pymysql.connect(host=nodes[node], user=user, password=pw, database=db, connect_timeout=1,
                                   read_timeout=5, write_timeout=5, autocommit=True)
        with conn.cursor() as c:
            c.execute("INSERT INTO probe (id) VALUES (%s)", (rid,))
        acked.append(rid)
        oks.append(time.monotonic() - t0)
    except Exception:
        failed.append(rid)
        try:
            conn.close()
        except Exception:
            pass
        conn, node = None, (node + 1) % len(nodes)
        time.sleep(0.05)
    time.sleep(0.005)
gap = max((b - a for a, b in zip(oks, oks[1:])), default=None)
print(json.dumps({"acked": acked, "failed": failed, "max_gap_s": gap}))
"""


def poll(fn, timeout: float, interval: float = 0.1):
    """fn() until truthy (returned) or ``timeout`` s passed (returns the last falsy value)."""
    return polling.poll(fn, timeout, interval)


def make_app(lab, tuning: str = "stackha") -> AppContext:
    units = [Unit(name=f"galera/{i}", host=lab.host(f"h{i + 1}")) for i in range(3)]
    return AppContext(name="galera", kind="galera", options={}, units=units, secrets=MemorySecrets(), tuning=tuning)


@pytest.fixture
def cluster(lab_factory):
    """A lab of 4 hosts with Galera applied on h1–h3 (h4 is the client): (lab, app, op, seconds)."""
    lab = lab_factory(4)
    app = make_app(lab)
    op = GaleraOperator()
    t0 = time.monotonic()
    changes = op.apply(app)
    took = time.monotonic() - t0
    print(f"\n3-node bring-up (apply): {took:.1f} s")
    print("  " + "\n  ".join(changes))
    return lab, app, op, took


def client_sql(lab, app, op, node: Unit, sql: str, db: str = g.CLIENT_DATABASE) -> str:
    """Run SQL from the client host over TCP as the generic application user."""
    user, pw = op.client_credentials(app)
    r = lab.host("h4").run(["mariadb", "-h", str(node.address), "-u", user, f"-p{pw}", "-N", "-B", db],
                           input=sql, timeout=30)
    assert r.ok, r.stderr
    return r.stdout


def health(lab, unit: Unit) -> str:
    """HTTP status code of the unit's clustercheck, fetched from the client host ("000": no answer)."""
    r = lab.host("h4").run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3",
                            f"http://{unit.address}:{g.CHECK_PORT}/"], timeout=10)
    return r.stdout.strip()


def start_writer(lab, app, op, nodes: list[Unit], tag: str, seconds: float, max_ops: int = 20000):
    """Run the writer on the client host in a thread; returns (thread, result dict filled at the end)."""
    client = lab.host("h4")
    client.write_file("/srv/test/writer.py", WRITER)
    user, pw = op.client_credentials(app)
    out: dict = {}

    def run():
        r = client.run([sys.executable, "/srv/test/writer.py", ",".join(str(n.address) for n in nodes), user, pw,
                        g.CLIENT_DATABASE, tag, str(seconds), str(max_ops)], timeout=seconds + 120)
        out["rc"], out["stderr"] = r.rc, r.stderr
        if r.ok:
            out.update(json.loads(r.stdout.strip().splitlines()[-1]))

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, out


def log_since_last_start(unit: Unit) -> str:
    text = (unit.host.read_file("/srv/stackha/log/mariadbd.log") or b"").decode(errors="replace")
    return text[text.rfind("Starting MariaDB"):]


def rss_mib(unit: Unit, daemon: str = g.DAEMON) -> float:
    d = unit.host.daemon(daemon)
    assert d is not None
    r = unit.host.run(["ps", "-o", "rss=", "-p", str(d.pid)], check=True)
    return int(r.stdout.strip()) / 1024


def states(status) -> dict[str, str]:
    return {u.unit: u.state.value for u in status.units}


# ----------------------------------------------------------------------------------------------
def test_deploy_three_nodes_idempotent_with_health_endpoint(cluster):
    lab, app, op, took = cluster
    st = op.observe(app)
    assert states(st) == {"galera/0": "active", "galera/1": "active", "galera/2": "active"}, \
        [(u.unit, u.message) for u in st.units]
    assert st.facts["wsrep_cluster_size"] == 3
    for u in st.units:
        assert u.facts["wsrep_cluster_size"] == 3
        assert u.facts["wsrep_cluster_status"] == "Primary"
        assert u.facts["wsrep_local_state_comment"] == "Synced"
        assert u.facts["wsrep_last_committed"] > 0
    print("RSS per node: " + ", ".join(f"{u.name} mariadbd {rss_mib(u):.0f} MiB + clustercheck "
                                       f"{rss_mib(u, g.CHECK_DAEMON):.1f} MiB" for u in app.units))

    t0 = time.monotonic()
    assert op.apply(app) == []
    print(f"second apply: no change, {time.monotonic() - t0:.2f} s")

    # Secrets on disk are 0600.
    for path in (g.CNF, g.ROOT_CNF, g.CHECK_CNF):
        r = app.units[0].host.run(["stat", "-c", "%a %U", path], check=True)
        assert r.stdout.split()[0] == "600", (path, r.stdout)

    # The application user works on every node, and writes replicate.
    client_sql(lab, app, op, app.units[0], "CREATE TABLE IF NOT EXISTS probe (id VARCHAR(64) PRIMARY KEY);"
                                           "INSERT INTO probe VALUES ('deploy-check');")
    for u in app.units:
        assert "deploy-check" in client_sql(lab, app, op, u, "SELECT id FROM probe")

    # ensure_database: idempotent, and the returned password works from the client host.
    pw = op.ensure_database(app, "keystone", "keystone")
    assert op.ensure_database(app, "keystone", "keystone") == pw
    r = lab.host("h4").run(["mariadb", "-h", str(app.units[2].address), "-u", "keystone", f"-p{pw}", "-N", "-B",
                            "keystone", "-e", "SELECT DATABASE()"], timeout=20)
    assert r.ok and r.stdout.strip() == "keystone", r.stderr

    # Health endpoint: 200 when Synced; 503 when desynced (Donor/Desynced) or stopped.
    assert [health(lab, u) for u in app.units] == ["200", "200", "200"]
    victim = app.units[1]
    op._sql(victim, "SET GLOBAL wsrep_desync=ON")
    try:
        assert poll(lambda: health(lab, victim) == "503", 5), health(lab, victim)
        unit = next(u for u in op.observe(app).units if u.unit == victim.name)
        assert unit.state == WorkloadState.MAINTENANCE and "Desynced" in unit.message, unit.message
    finally:
        op._sql(victim, "SET GLOBAL wsrep_desync=OFF")
    assert poll(lambda: health(lab, victim) == "200", 10)

    victim.host.stop(g.DAEMON, timeout=60)
    assert health(lab, victim) == "503"
    assert health(lab, app.units[0]) == "200"
    st = op.observe(app)
    assert states(st)[victim.name] == "error" and "not running" in st.units[1].message
    assert st.facts["wsrep_cluster_size"] == 2
    # apply brings the stopped node back (clean stop: grastate.dat has its seqno -> IST).
    changes = op.apply(app)
    assert any("galera/1: joined by IST" in c for c in changes), changes
    assert states(op.observe(app)) == {"galera/0": "active", "galera/1": "active", "galera/2": "active"}
    assert health(lab, victim) == "200"


def test_kill9_is_seen_within_5s_and_the_node_rejoins_by_ist(cluster):
    lab, app, op, _ = cluster
    client_sql(lab, app, op, app.units[0], "CREATE TABLE IF NOT EXISTS probe (id VARCHAR(64) PRIMARY KEY)")
    victim = app.units[2]
    th, out = start_writer(lab, app, op, [app.units[0]], "kill", seconds=8)
    time.sleep(2)
    assert victim.host.signal(g.DAEMON, "KILL")
    t0 = time.monotonic()

    def victim_not_active():
        st = op.observe(app)
        u = next(u for u in st.units if u.unit == victim.name)
        return u if u.state != WorkloadState.ACTIVE else None

    seen = poll(victim_not_active, 5.0, 0.05)
    assert seen, "observe still shows the killed unit active after 5 s"
    print(f"kill -9 seen by observe after {time.monotonic() - t0:.2f} s: {seen.state.value} {seen.message!r}")
    th.join(timeout=180)
    assert out.get("rc") == 0, out.get("stderr", "")[-2000:]
    print(f"write gap on galera/0 during kill -9 of galera/2 (stackha timers): {out['max_gap_s']:.2f} s, "
          f"{len(out['acked'])} acked, {len(out['failed'])} failed")
    assert len(out["acked"]) > 50

    # More writes while it is down: IST must carry them.
    client_sql(lab, app, op, app.units[0], "INSERT INTO probe VALUES ('while-down-1'), ('while-down-2')")
    t0 = time.monotonic()
    changes = op.recover(app)
    print(f"IST rejoin: {time.monotonic() - t0:.1f} s: {changes}")
    assert states(op.observe(app)) == {"galera/0": "active", "galera/1": "active", "galera/2": "active"}
    log = log_since_last_start(victim)
    assert "--wsrep-start-position=" in log, log[:2000]
    assert "rsync IST completed on joiner" in log and "IST received" in log, log[-3000:]
    assert "rsync SST completed on joiner" not in log, "the node was rebuilt by SST, not IST"
    assert any("joined by IST" in c for c in changes), changes
    rows = [client_sql(lab, app, op, u, "SELECT COUNT(*) FROM probe").strip() for u in app.units]
    assert len(set(rows)) == 1 and int(rows[0]) >= len(out["acked"]) + 2, rows
    assert op.recover(app) == []


def test_cold_start_after_power_loss_keeps_every_acknowledged_row(cluster):
    lab, app, op, _ = cluster
    client_sql(lab, app, op, app.units[0], "CREATE TABLE IF NOT EXISTS probe (id VARCHAR(64) PRIMARY KEY)")
    th, out = start_writer(lab, app, op, app.units, "cold", seconds=6)

    def committed():
        return int(client_sql(lab, app, op, app.units[1], "SELECT COUNT(*) FROM probe").strip()) >= 50
    assert poll(committed, 10, 0.1), "the writer committed nothing"
    for u in app.units:
        u.host.power_off()
    th.join(timeout=180)
    assert out.get("rc") == 0, out.get("stderr", "")[-2000:]
    acked = out["acked"]
    assert len(acked) >= 50
    st = op.observe(app)
    assert all(u.state != WorkloadState.ACTIVE for u in st.units)

    t0 = time.monotonic()
    for u in app.units:
        u.host.power_on()
    # Every grastate.dat now says seqno -1, safe_to_bootstrap 0 (LAB-NOTES).
    for u in app.units:
        gra = g.parse_grastate(u.host.read_file(g.GRASTATE).decode())
        assert gra.seqno == -1 and not gra.safe_to_bootstrap
    changes = op.recover(app)
    took = time.monotonic() - t0
    print(f"cold start (power on + recover): {took:.1f} s")
    print("  " + "\n  ".join(changes))
    st = op.observe(app)
    assert states(st) == {"galera/0": "active", "galera/1": "active", "galera/2": "active"}, \
        [(u.unit, u.message) for u in st.units]
    assert all(u.facts["wsrep_cluster_status"] == "Primary" for u in st.units)
    assert st.facts["wsrep_cluster_size"] == 3
    assert sum("bootstrapped the cluster" in c for c in changes) == 1, changes
    assert sum("joined by IST" in c for c in changes) == 2, changes
    present = set(client_sql(lab, app, op, app.units[2], "SELECT id FROM probe").split())
    lost = [i for i in acked if i not in present]
    assert lost == [], f"{len(lost)} of {len(acked)} acknowledged rows lost"
    failed_but_committed = [i for i in out["failed"] if i in present]
    print(f"writer: {len(acked)} acknowledged, 0 lost, {len(out['failed'])} failed "
          f"({len(failed_but_committed)} of them committed anyway)")
    assert [health(lab, u) for u in app.units] == ["200", "200", "200"]


def test_cold_start_is_blocked_when_positions_cannot_be_compared(cluster):
    lab, app, op, _ = cluster
    # (1) One host stays off: its position is unknown -> blocked, nothing started.
    for u in app.units:
        u.host.power_off()
    for u in app.units[:2]:
        u.host.power_on()
    with pytest.raises(GaleraBlocked) as exc:
        op.recover(app)
    assert "galera/2" in exc.value.reason and "powered off" in exc.value.reason
    assert all(u.host.daemon(g.DAEMON) is None for u in app.units[:2]), "a node was started although blocked"
    st = op.observe(app)
    assert states(st) == {"galera/0": "blocked", "galera/1": "blocked", "galera/2": "error"}
    assert "galera/2" in st.units[0].message and "powered off" in st.facts["blocked"]
    app.units[2].host.power_on()
    changes = op.recover(app)
    assert states(op.observe(app)) == {"galera/0": "active", "galera/1": "active", "galera/2": "active"}, changes

    # (2) Clean shutdown of all, then one grastate.dat claims another cluster: different UUIDs -> blocked.
    for u in app.units:
        u.host.stop(g.DAEMON, timeout=60)
    grastates = {u.name: u.host.read_file(g.GRASTATE).decode() for u in app.units}
    positions = {n: g.parse_grastate(t) for n, t in grastates.items()}
    assert all(p.readable for p in positions.values()), positions
    assert sum(p.safe_to_bootstrap for p in positions.values()) == 1  # the last one to leave
    forged = re.sub(r"uuid:\s*\S+", "uuid:    11111111-2222-3333-4444-555555555555", grastates["galera/1"])
    app.units[1].host.write_file(g.GRASTATE, forged, mode=0o660, owner="mysql")
    with pytest.raises(GaleraBlocked, match="different cluster UUIDs"):
        op.recover(app)
    assert all(u.host.daemon(g.DAEMON) is None for u in app.units)
    app.units[1].host.write_file(g.GRASTATE, grastates["galera/1"], mode=0o660, owner="mysql")
    changes = op.recover(app)
    last = next(n for n, p in positions.items() if p.safe_to_bootstrap)
    assert any(c.startswith(f"{last}: bootstrapped") for c in changes), (last, changes)
    st = op.observe(app)
    assert states(st) == {"galera/0": "active", "galera/1": "active", "galera/2": "active"}
    assert "blocked" not in st.facts


def test_two_of_three_killed_the_survivor_is_promoted_and_the_others_rejoin(cluster):
    lab, app, op, _ = cluster
    client_sql(lab, app, op, app.units[0], "CREATE TABLE IF NOT EXISTS probe (id VARCHAR(64) PRIMARY KEY);"
                                           "INSERT INTO probe VALUES ('before-1'), ('before-2');")
    for u in app.units[:2]:
        assert u.host.signal(g.DAEMON, "KILL")
    survivor = app.units[2]

    def survivor_lost_quorum():
        u = next(u for u in op.observe(app).units if u.unit == survivor.name)
        return u.facts.get("wsrep_cluster_status") not in (None, "Primary") and u.state == WorkloadState.WAITING
    assert poll(survivor_lost_quorum, 15), [(u.unit, u.message) for u in op.observe(app).units]
    t0 = time.monotonic()
    changes = op.recover(app)
    print(f"2-of-3 kill recovered in {time.monotonic() - t0:.1f} s: {changes}")
    # Equal positions: the running survivor is promoted in place (pc.bootstrap), not restarted.
    assert changes[0].startswith("galera/2: promoted"), changes
    assert sum("joined by IST" in c for c in changes) == 2, changes
    assert states(op.observe(app)) == {"galera/0": "active", "galera/1": "active", "galera/2": "active"}
    for u in app.units:
        assert client_sql(lab, app, op, u, "SELECT COUNT(*) FROM probe").strip() == "2"

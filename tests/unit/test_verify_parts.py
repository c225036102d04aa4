"""Pure parts of stackha.verify: the agent's loop bounds and deadlines, the VIP overlay, scenario
expectations and summaries, the PNG timeline (no lab needed)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from stackha.verify import agent, check
from stackha.verify import scenarios as sc
from stackha.verify.labs import vip_overlay

ROOT = Path(__file__).resolve().parents[2]


def test_loop_is_bounded_by_count(tmp_path):
    loop = agent.Loop({"max_ops": 5, "duration_s": 60, "interval_s": 0})
    n = 0
    while loop.next():
        n += 1
    assert n == 5 and loop.reason == "max_ops reached"


def test_loop_is_bounded_by_time_and_stop_file(tmp_path):
    loop = agent.Loop({"max_ops": 10 ** 6, "duration_s": 0.3, "interval_s": 0.01})
    t0 = time.monotonic()
    while loop.next():
        pass
    assert loop.reason == "duration reached" and time.monotonic() - t0 < 1.0
    stop = tmp_path / "stop"
    loop = agent.Loop({"max_ops": 10 ** 6, "duration_s": 60, "interval_s": 0, "stop_file": str(stop)})
    assert loop.next()
    stop.write_text("stop")
    assert not loop.next() and loop.reason == "stop file"


def test_timed_interrupts_a_blocked_operation():
    old = signal.signal(signal.SIGALRM, agent._on_alarm)
    try:
        t0 = time.monotonic()
        with pytest.raises(agent.OpTimeout):
            agent.timed(lambda: time.sleep(5), 0.2)
        assert time.monotonic() - t0 < 1.0
        assert agent.timed(lambda: 42, 1.0) == 42
        time.sleep(1.1)  # the alarm of the successful call was cancelled: nothing fires now
    finally:
        signal.signal(signal.SIGALRM, old)


def test_agent_main_writes_start_and_end_events(tmp_path):
    # keystone probe against a closed local port: every operation fails fast, the loop stops by count
    cfg = {"probe": "keystone", "run": "t1", "log": str(tmp_path / "k.jsonl"), "max_ops": 3, "duration_s": 10,
           "interval_s": 0, "op_timeout_s": 1,
           "keystone": {"url": "http://127.0.0.1:9/v3", "user": "admin", "password": "x"}}
    (tmp_path / "k.json").write_text(json.dumps(cfg))
    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGALRM)
    try:
        assert agent.main(["agent.py", str(tmp_path / "k.json")]) == 0
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGALRM, old[1])
    recs, bad = check.parse_jsonl((tmp_path / "k.jsonl").read_bytes())
    assert bad == 0
    assert recs[0]["event"] == "start" and recs[-1]["event"] == "end"
    ops = check.operations(recs, "token")
    assert len(ops) == 3 and not any(r["ok"] for r in ops)
    assert len({r["id"] for r in ops}) == 3
    assert check.check_keystone(recs).verdict == "no-success"


def test_vip_overlay_moves_the_vip(tmp_path):
    import ipaddress

    from stackha.model import load_bundle

    bundle = ROOT / "examples" / "lab-control-plane.yaml"
    ov = vip_overlay(bundle, ipaddress.IPv4Network("198.18.142.0/24"), tmp_path / "ov.yaml")
    b = load_bundle(bundle, [ov])
    assert str(b.applications["haproxy"].options["vip"]) == "198.18.142.250"
    assert b.applications["haproxy"].options["vip_cidr"] == 24  # merged key by key
    assert set(b.machines) == set(load_bundle(bundle).machines)


def test_required_scenarios_exist():
    for name in ("galera-writer-kill", "lb-master-poweroff", "controller-poweroff", "rabbit-node-kill",
                 "partition-controller", "cold-start"):
        assert name in sc.SCENARIOS
    with pytest.raises(Exception):
        sc.scenario("no-such-scenario")


def _report(name: str, run: int, gap: float, lost: int = 0, failed: int = 0) -> sc.RunReport:
    r = sc.RunReport(scenario=name, run=run, run_id=f"{name}-r{run}", lab="x", tuning="stackha", started=0.0)
    res = check.ProbeResult(probe="mysql", operations=100, acknowledged=100 - failed, failed=failed,
                            longest_gap_ms=gap, lost=lost, verdict="lost" if lost else "ok")
    r.probes = {"mysql": res.to_dict()}
    r.recovery_s = 10.0 + run
    if lost:
        r.verdict = "lost"
    return r


def test_expectation_and_summary():
    e = sc.Expectation("mysql", "longest_gap_ms", 2000, "gap ≤ 2 s")
    ok = e.evaluate({"mysql": check.ProbeResult("mysql", longest_gap_ms=1500.0)}, {})
    bad = e.evaluate({"mysql": check.ProbeResult("mysql", longest_gap_ms=2500.0)}, {})
    assert ok["met"] and not bad["met"]
    first = sc.Expectation("keystone", "first_success_s", 60, "token ≤ 60 s")
    assert not first.evaluate({}, {"first_success_s": {"keystone": None}})["met"]
    assert first.evaluate({}, {"first_success_s": {"keystone": 42.0}})["met"]
    rows = sc.summarize([_report("a", 1, 1000), _report("a", 2, 3000, lost=1), _report("a", 3, 2000)])
    assert len(rows) == 1
    row = rows[0]
    assert row["median_gap_ms"] == 2000 and row["max_gap_ms"] == 3000
    assert row["lost"] == 1 and row["failing_runs"] == 1 and row["median_recovery_s"] == 12.0


def test_timeline_png(tmp_path):
    from stackha.verify.timeline import plot_timeline

    logs = tmp_path / "run"
    logs.mkdir()
    ops = [{"probe": "mysql", "op": "insert", "id": f"i{i}", "start": 100.0 + i * 0.1, "end": 100.05 + i * 0.1,
            "ok": not 20 <= i < 30} for i in range(60)]
    (logs / "mysql.jsonl").write_text("\n".join(json.dumps(o) for o in ops))
    rep = _report("galera-writer-kill", 1, 1000)
    rep.probes = {"mysql": check.check_mysql(ops, [o["id"] for o in ops]).to_dict()}
    rep.extra["t_fault"] = 102.0
    rep.events = [{"t": 102.0, "what": "kill -9 mariadbd", "host": "h", "seconds": 0.0},
                  {"t": 104.0, "what": "all units active", "host": "", "seconds": 0.0}]
    png = tmp_path / "t.png"
    assert plot_timeline(rep, logs, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot_timeline(rep, tmp_path / "nothing", tmp_path / "n.png")


def test_cli_register_adds_verify_with_list():
    import typer
    from typer.testing import CliRunner

    from stackha.cli import verify as verify_cli

    app = typer.Typer()
    verify_cli.register(app)

    @app.command()
    def other() -> None:  # a second command so typer keeps the sub-command names
        pass

    res = CliRunner().invoke(app, ["verify", "--list"])
    assert res.exit_code == 0, res.output
    for name in sc.SCENARIOS:
        assert name in res.output
    res = CliRunner().invoke(app, ["verify"])
    assert res.exit_code != 0  # --lab is required without --list

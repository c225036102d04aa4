"""The checker (stackha.verify.check) on hand-made probe logs: it must be able to say "lost"."""

from __future__ import annotations

import json

import pytest

from stackha.verify import check
from stackha.verify import scenarios as sc


def op(i: int, start: float, ok: bool = True, dur: float = 0.01, kind: str = "insert", probe: str = "mysql",
       error: str | None = None) -> dict:
    rec = {"probe": probe, "op": kind, "id": f"r-{i}", "start": start, "end": start + dur, "ok": ok}
    if not ok:
        rec["error"] = error or "OperationalError: (2013, 'Lost connection')"
    return rec


def steady(n: int, every: float = 0.1, t0: float = 1000.0, **kw) -> list[dict]:
    return [op(i, t0 + i * every, **kw) for i in range(n)]


def test_every_acknowledged_write_present_is_ok():
    ops = steady(50)
    res = check.check_mysql(ops, [r["id"] for r in ops])
    assert res.verdict == "ok"
    assert res.lost == 0 and res.failed == 0 and res.acknowledged == 50
    assert res.longest_gap_ms == pytest.approx(100.0, abs=0.5)


def test_a_missing_acknowledged_write_is_lost():
    ops = steady(50)
    present = [r["id"] for r in ops if r["id"] != "r-17"]
    res = check.check_mysql(ops, present)
    assert res.verdict == "lost"
    assert res.lost == 1 and res.lost_ids == ["r-17"]
    assert check.failing([res]) == [res]


def test_failed_but_committed_is_counted_not_lost():
    ops = steady(20)
    ops[5] = op(5, ops[5]["start"], ok=False)
    ops[6] = op(6, ops[6]["start"], ok=False)
    present = [r["id"] for r in ops if r["id"] != "r-6"]  # r-5 failed for the client but committed
    res = check.check_mysql(ops, present)
    assert res.verdict == "ok"
    assert res.failed == 2 and res.failed_but_committed == 1 and res.lost == 0


def test_gap_spans_failures_between_successes():
    ops = steady(10, every=0.1, t0=1000.0)
    # 2.5 s of failures, then successes again
    fails = [op(100 + i, 1001.0 + i * 0.5, ok=False, dur=0.2) for i in range(5)]
    after = [op(200 + i, 1003.5 + i * 0.1) for i in range(5)]
    ops = ops + fails + after
    res = check.check_mysql(ops, [r["id"] for r in ops if r["ok"]])
    last_before = 1000.0 + 9 * 0.1 + 0.01
    first_after = 1003.5 + 0.01
    assert res.longest_gap_ms == pytest.approx((first_after - last_before) * 1000, abs=0.5)
    assert res.gap_start == pytest.approx(last_before) and res.gap_end == pytest.approx(first_after)
    assert not res.gap_open
    assert res.failed == 5
    assert res.errors and res.errors[0][1] == 5


def test_open_gap_when_probe_ends_failing():
    ops = steady(5, every=0.1) + [op(50 + i, 1001.0 + i, ok=False, dur=0.5) for i in range(3)]
    gap = check.longest_gap(ops)
    assert gap.open
    assert gap.ms == pytest.approx((1003.5 - (1000.4 + 0.01)) * 1000, abs=0.5)


def test_no_success_verdict():
    ops = [op(i, 1000.0 + i, ok=False) for i in range(4)]
    res = check.check_keystone([dict(r, op="token", probe="keystone") for r in ops])
    assert res.verdict == "no-success"
    assert res.gap_open


def test_unreadable_final_state_is_unverified():
    res = check.check_mysql(steady(5), None)
    assert res.verdict == "unverified"
    assert check.failing([res]) == [res]


def test_amqp_duplicates_and_lost():
    pubs = steady(10, kind="publish", probe="amqp")
    pubs[3] = op(3, pubs[3]["start"], ok=False, kind="publish", probe="amqp", error="OpTimeout: operation timed out")
    consumed = []
    for r in pubs:
        if r["id"] in ("r-7",):  # confirmed but never consumed
            continue
        consumed.append({"probe": "amqp", "op": "consume", "id": r["id"], "start": r["end"], "end": r["end"], "ok": True})
    # r-2 and r-4 redelivered after a consumer reconnect; r-4 twice
    for mid in ("r-2", "r-4", "r-4"):
        consumed.append({"probe": "amqp", "op": "consume", "id": mid, "start": 2000.0, "end": 2000.0, "ok": True,
                         "redelivered": True})
    res = check.check_amqp(pubs, consumed)
    assert res.verdict == "lost"
    assert res.lost == 1 and res.lost_ids == ["r-7"]
    assert res.duplicates == 3
    assert res.failed_but_committed == 1  # r-3: confirm timed out, message consumed anyway
    ok = check.check_amqp(pubs, consumed + [{"op": "consume", "id": "r-7", "start": 2001.0, "end": 2001.0, "ok": True}])
    assert ok.verdict == "ok" and ok.lost == 0


def test_missing_consumer_log_is_unverified():
    assert check.check_amqp(steady(3, kind="publish", probe="amqp"), None).verdict == "unverified"


def test_parse_jsonl_tolerates_torn_last_line_and_events():
    lines = [json.dumps(op(1, 1000.0)), json.dumps({"probe": "mysql", "event": "start", "t": 999.0}),
             json.dumps(op(2, 1000.1)), '{"probe": "mysql", "op": "ins']
    recs, bad = check.parse_jsonl("\n".join(lines).encode())
    assert bad == 1 and len(recs) == 3
    assert [r["id"] for r in check.operations(recs)] == ["r-1", "r-2"]
    assert check.parse_jsonl(None) == ([], 0)


def test_first_success_after():
    ops = [op(1, 1000.0), op(2, 1010.0, ok=False), op(3, 1012.0, dur=0.5), op(4, 1013.0)]
    assert check.first_success_after(ops, 1005.0) == pytest.approx(7.5)
    assert check.first_success_after(ops, 1020.0) is None


def test_window_excludes_warm_up_gap_but_keeps_the_gap_spanning_the_fault():
    warm = [op(1, 1000.0), op(2, 1010.0)]  # a 10 s gap while the probe warms up
    steady_part = [op(3 + i, 1020.0 + i * 0.1) for i in range(10)]
    fault = [op(20, 1021.5, ok=False, dur=1.0)]
    after = [op(30 + i, 1023.0 + i * 0.1) for i in range(5)]
    ops = warm + steady_part + fault + after
    assert check.longest_gap(ops).ms == pytest.approx(10000.0, abs=1)
    res = check.check_mysql(ops, [r["id"] for r in ops if r["ok"]], since=1021.0)
    # from the last success before 1021.0 (1020.9 + 0.01) to the first after the fault (1023.01)
    assert res.longest_gap_ms == pytest.approx((1023.01 - 1020.91) * 1000, abs=1)
    assert res.failed == 1 and res.failed_total == 1
    pre_fail = [op(0, 999.0, ok=False)] + ops
    res2 = check.check_mysql(pre_fail, [r["id"] for r in pre_fail if r["ok"]], since=1021.0)
    assert res2.failed == 1 and res2.failed_total == 2


# ----------------------------------------------------------------- the holes of issue 10 (item 1)
# A window: probes from 1000.0, fault at 1003.0, probes told to stop at 1030.0.
SINCE, FAULT, UNTIL = 1000.0, 1003.0, 1030.0


def through_window(every: float = 0.1) -> list[dict]:
    return [op(i, SINCE + i * every) for i in range(int((UNTIL - SINCE) / every))]


def test_a_log_that_stops_at_the_fault_scores_an_open_gap_to_the_windows_end_and_fails():
    ops = [r for r in through_window() if r["start"] < FAULT]  # the writer died with the fault
    res = check.check_mysql(ops, [r["id"] for r in ops], since=SINCE, until=UNTIL, fault_at=FAULT)
    last = max(r["end"] for r in ops)
    assert res.gap_open and res.gap_end == UNTIL
    assert res.longest_gap_ms == pytest.approx((UNTIL - last) * 1000, abs=1)
    assert res.ended_early and res.back_after_fault is False
    assert res.verdict == "truncated" and check.failing([res]) == [res]
    e = sc.Expectation("mysql", "longest_gap_ms", 30_000, "a limit the open gap is under")
    assert not e.evaluate({"mysql": res}, {})["met"]  # an incomplete log meets no expectation
    k = check.check_keystone([dict(r, op="token", probe="keystone") for r in ops], SINCE, UNTIL, FAULT)
    failed_target = sc.Expectation("keystone", "failed", 0, "0 failed requests")
    assert k.failed == 0 and not failed_target.evaluate({"keystone": k}, {})["met"]


def test_a_log_running_to_the_end_with_no_success_after_the_fault_is_not_back():
    ops = [r if r["start"] < FAULT else op(int(r["id"][2:]), r["start"], ok=False) for r in through_window()]
    res = check.check_mysql(ops, [r["id"] for r in ops if r["ok"]], since=SINCE, until=UNTIL, fault_at=FAULT)
    assert not res.ended_early and res.back_after_fault is False
    assert res.verdict == "not-back" and res.gap_open
    last_ok = max(r["end"] for r in ops if r["ok"])
    assert res.longest_gap_ms == pytest.approx((UNTIL - last_ok) * 1000, abs=1)


def test_a_probe_that_ends_early_after_recovering_is_truncated_with_the_tail_gap():
    ops = [r for r in through_window() if r["start"] < 1010.0]  # back after the fault, then silent
    res = check.check_mysql(ops, [r["id"] for r in ops], since=SINCE, until=UNTIL, fault_at=FAULT)
    assert res.back_after_fault and res.ended_early and res.verdict == "truncated"
    assert res.longest_gap_ms > 19_000 and res.gap_open


def test_a_complete_healthy_log_is_ok_and_its_tail_is_not_an_open_gap():
    ops = through_window()
    res = check.check_mysql(ops, [r["id"] for r in ops], since=SINCE, until=UNTIL, fault_at=FAULT)
    assert res.verdict == "ok" and not res.ended_early and res.back_after_fault
    assert res.longest_gap_ms == pytest.approx(100.0, abs=1) and not res.gap_open
    e = sc.Expectation("mysql", "longest_gap_ms", 1000, "gap ≤ 1 s")
    assert e.evaluate({"mysql": res}, {})["met"]


@pytest.mark.parametrize("records", [None, []], ids=["missing", "empty"])
def test_a_missing_or_empty_log_is_no_evidence_never_ok(records):
    for res in (check.check_mysql(records, [], SINCE, UNTIL, FAULT),
                check.check_mysql(records, []),
                check.check_amqp(records, [], SINCE, UNTIL, FAULT),
                check.check_keystone(records, SINCE, UNTIL, FAULT),
                check.check_keystone(records)):
        assert res.verdict == "no-evidence", res
        assert check.failing([res]) == [res]
    res = check.check_keystone(records, SINCE, UNTIL, FAULT)
    assert res.gap_open and res.longest_gap_ms == pytest.approx((UNTIL - SINCE) * 1000)
    e = sc.Expectation("keystone", "failed", 0, "0 failed requests")
    assert not e.evaluate({"keystone": res}, {})["met"]


def test_probe_data_results_turn_a_missing_log_into_no_evidence():
    from stackha.verify.probes import ProbeData

    ops = through_window()
    data = ProbeData(records={"mysql": ops, "keystone": None, "amqp-publish": [], "amqp-consume": []},
                     mysql_ids=[r["id"] for r in ops])
    res = data.results(SINCE, UNTIL, FAULT)
    assert res["mysql"].verdict == "ok"
    assert res["keystone"].verdict == "no-evidence" and res["amqp"].verdict == "no-evidence"

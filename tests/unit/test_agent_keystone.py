"""The Keystone probe of the agent: a request stuck on a silently dead path fails on its own
timeout and does not hold back the requests sent after it (``concurrency``)."""

from __future__ import annotations

import itertools
import json
import threading

from stackha.verify import agent


def run_probe(tmp_path, monkeypatch, concurrency: int) -> list[dict]:
    calls = itertools.count()
    lock = threading.Lock()
    validated = itertools.count(1)
    five_done = threading.Event()  # evidence: five later requests completed meanwhile

    def fake_http(method, url, timeout, headers, body=None):
        with lock:
            n = next(calls)
        if n == 0:  # the first token request: its load balancer lost power, no RST ever comes
            # Stuck until its own timeout — or, as soon as five later requests have completed,
            # released early (that is what the test checks; nothing is slept on hope).
            five_done.wait(timeout)
            raise TimeoutError("timed out")
        if method == "GET" and next(validated) >= 5:
            five_done.set()
        return (201, {"X-Subject-Token": "tok"}) if method == "POST" else (200, {})

    monkeypatch.setattr(agent, "_http", fake_http)
    log = agent.Log(str(tmp_path / "keystone.jsonl"))
    cfg = {"keystone": {"url": "http://keystone.invalid/v3", "user": "u", "password": "p"}, "run": "r",
           "interval_s": 0.05, "duration_s": 1.0, "op_timeout_s": 0.8, "max_ops": 100, "concurrency": concurrency}
    assert agent.probe_keystone(cfg, log) == "duration reached"
    log.close()
    return [json.loads(ln) for ln in (tmp_path / "keystone.jsonl").read_text().splitlines()]


def test_a_stuck_request_fails_alone_and_later_ones_succeed_meanwhile(tmp_path, monkeypatch):
    recs = run_probe(tmp_path, monkeypatch, concurrency=4)
    stuck = next(r for r in recs if not r["ok"])
    assert stuck["id"] == "r-k000001"
    during = [r for r in recs if r["ok"] and r["end"] <= stuck["end"]]
    assert len(during) >= 5, "requests sent after the stuck one must not wait for it"
    assert len({r["id"] for r in recs}) == len(recs) and sum(not r["ok"] for r in recs) == 1


def test_one_request_at_a_time_waits_for_the_stuck_one(tmp_path, monkeypatch):
    recs = run_probe(tmp_path, monkeypatch, concurrency=1)
    stuck = next(r for r in recs if not r["ok"])
    assert stuck["end"] - stuck["start"] >= 0.8, "nothing completed meanwhile: it waits its full timeout"
    assert not [r for r in recs if r["ok"] and r["end"] < stuck["end"]]


def test_a_slow_keystone_is_not_sent_more_than_fresh_requests(tmp_path, monkeypatch):
    """Every request takes 0.3 s (a loaded Keystone): with ``fresh`` 2 no more than 2 are ever in
    flight, although one could start every 0.01 s and 16 may be in flight; with ``fresh`` 16
    the open-loop probe piles them up (the control)."""
    def peak(fresh: int) -> tuple[int, int]:
        lock = threading.Lock()
        state = {"now": 0, "peak": 0}
        release = threading.Event()

        def fake_http(method, url, timeout, headers, body=None):
            if method == "POST":
                with lock:
                    state["now"] += 1
                    state["peak"] = max(state["peak"], state["now"])
                release.wait(0.3)  # the slow server's answer time (never set: a fixed service time)
                return 201, {"X-Subject-Token": "tok"}
            with lock:
                state["now"] -= 1
            return 200, {}

        monkeypatch.setattr(agent, "_http", fake_http)
        log = agent.Log(str(tmp_path / f"keystone-{fresh}.jsonl"))
        cfg = {"keystone": {"url": "http://keystone.invalid/v3", "user": "u", "password": "p"}, "run": "r",
               "interval_s": 0.01, "duration_s": 1.0, "op_timeout_s": 5.0, "max_ops": 1000, "concurrency": 16,
               "fresh": fresh, "stuck_after_s": 2.0}
        agent.probe_keystone(cfg, log)
        log.close()
        recs = [json.loads(ln) for ln in (tmp_path / f"keystone-{fresh}.jsonl").read_text().splitlines()]
        assert all(r["ok"] for r in recs)
        return state["peak"], len(recs)

    limited, n_limited = peak(2)
    open_loop, n_open = peak(16)
    assert limited == 2, limited
    assert open_loop >= 10 and n_open > n_limited, (open_loop, n_open, n_limited)

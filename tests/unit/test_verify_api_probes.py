"""The Swift, Nova, Glance and Neutron probes' verdicts (crafted logs) and which scenarios run them."""

from __future__ import annotations

from pathlib import Path

from stackha.model import load_bundle
from stackha.verify import check
from stackha.verify.probes import ProbeData

T0 = 1_000_000.0


def ops(probe: str, op: str, oks: list[bool], step: float = 0.5) -> list[dict]:
    return [{"probe": probe, "op": op, "id": f"r-{probe[0]}{i:06d}", "start": T0 + i * step,
             "end": T0 + i * step + 0.1, "ok": ok, **({} if ok else {"error": "HTTP 503"})}
            for i, ok in enumerate(oks)]


def test_swift_object_not_read_back_with_its_md5_is_lost():
    recs = ops("swift", "put", [True] * 10)
    data = ProbeData(records={"swift": recs}, stored_ids={"swift": [r["id"] for r in recs[:-1]]})
    res = data.results()["swift"]
    assert res.verdict == check.VERDICT_LOST and res.lost == 1 and res.lost_ids == [recs[-1]["id"]]


def test_swift_all_read_back_is_ok_and_failed_puts_are_counted():
    recs = ops("swift", "put", [True, True, False, True, True])
    data = ProbeData(records={"swift": recs}, stored_ids={"swift": [r["id"] for r in recs if r["ok"]]})
    res = data.results()["swift"]
    assert res.verdict == check.VERDICT_OK and res.failed == 1 and res.lost == 0


def test_swift_final_state_unread_is_unverified_never_ok():
    recs = ops("swift", "put", [True] * 5)
    res = ProbeData(records={"swift": recs}, stored_ids={"swift": None}).results()["swift"]
    assert res.verdict == check.VERDICT_UNVERIFIED


def test_nova_accepted_create_that_never_settled_is_lost():
    recs = ops("nova", "create", [True, True, True], step=2.0)
    settled = [recs[0]["id"], recs[2]["id"]]  # the second stayed in BUILD past the deadline
    res = ProbeData(records={"nova": recs}, stored_ids={"nova": settled}).results()["nova"]
    assert res.verdict == check.VERDICT_LOST and res.lost_ids == [recs[1]["id"]]


def test_glance_and_neutron_are_calls_missing_log_is_no_evidence():
    data = ProbeData(records={"glance": ops("glance", "download", [True] * 4), "neutron": None})
    out = data.results()
    assert out["glance"].verdict == check.VERDICT_OK
    assert out["neutron"].verdict == check.VERDICT_NO_EVIDENCE


def test_api_probe_silent_after_the_fault_is_not_ok():
    recs = ops("nova", "create", [True, True, True, True], step=2.0)
    res = ProbeData(records={"nova": recs}, stored_ids={"nova": [r["id"] for r in recs]}).results(
        since=T0, until=T0 + 60, fault_at=T0 + 5)
    assert res["nova"].verdict in (check.VERDICT_TRUNCATED, check.VERDICT_NOT_BACK)
    assert res["nova"].gap_open


class FakeDeployment:
    """Contexts only: available_probes and scenario_probes read kinds and VIPs."""

    def __init__(self, bundle):
        from types import SimpleNamespace

        self._ctxs = {n: SimpleNamespace(kind=a.kind, name=n, vip=object() if a.kind not in ("rabbitmq",) else None)
                      for n, a in bundle.applications.items()}

    def contexts(self):
        return self._ctxs


def test_scenarios_add_their_own_probes_to_the_data_path():
    from stackha.verify.scenarios import SCENARIOS, scenario_probes

    d = FakeDeployment(load_bundle(Path(__file__).resolve().parents[2] / "examples" / "lab-cloud.yaml"))
    assert scenario_probes(d, SCENARIOS["galera-writer-kill"]) == ["mysql", "amqp", "keystone"]
    assert "swift" in scenario_probes(d, SCENARIOS["swift-zone-poweroff"])
    assert {"nova", "glance", "neutron"} <= set(scenario_probes(d, SCENARIOS["controller-poweroff-compute"]))

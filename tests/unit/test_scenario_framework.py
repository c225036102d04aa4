"""One scenario framework (issue 10 item 4): the Pacemaker scenarios are Scenarios of
stackha.verify.scenarios, listed by ``stackha verify --list``, applicable where the cloud has an
hacluster application, and reported as a RunReport with the checker's figures (no lab needed:
the Pacemaker flow and the recovery are faked)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from stackha.verify import faults
from stackha.verify import scenarios as sc

PCMK = ("pacemaker-vip-node-poweroff", "pacemaker-service-kill", "pacemaker-minority")


class FakeDeployment:
    def __init__(self, kinds: tuple[str, ...]):
        self.name, self.tuning, self.client = "x", "stackha", SimpleNamespace(name="client")
        self._ctxs = {k: SimpleNamespace(kind=k, name=k) for k in kinds}

    def contexts(self):
        return self._ctxs


def test_pacemaker_scenarios_are_in_the_one_registry_and_applicable_only_with_hacluster():
    for name in PCMK:
        s = sc.scenario(name)
        assert s.needs == ("hacluster",) and s.runner is not None
        assert set(sc.PACEMAKER_FLOWS) == set(PCMK)
    with_ha = [s.name for s in sc.applicable(FakeDeployment(("galera", "keystone", "hacluster", "haproxy")))]
    without = [s.name for s in sc.applicable(FakeDeployment(("galera", "keystone", "haproxy", "rabbitmq")))]
    assert set(PCMK) <= set(with_ha)
    assert not set(PCMK) & set(without)
    with pytest.raises(Exception, match="hacluster"):
        sc.applicable(FakeDeployment(("galera",)), ["pacemaker-minority"])


def test_verify_list_shows_the_pacemaker_scenarios():
    import typer
    from typer.testing import CliRunner

    from stackha.cli import verify as verify_cli

    app = typer.Typer()
    verify_cli.register(app)

    @app.command()
    def other() -> None:
        pass

    res = CliRunner().invoke(app, ["verify", "--list"])
    assert res.exit_code == 0, res.output
    for name in PCMK:
        assert name in res.output


def _ops(t0: float, gap_from: float, gap_to: float, until: float) -> list[dict]:
    """HTTP GETs every 0.1 s from t0 - 5 to until, failing between gap_from and gap_to."""
    out, t, i = [], t0 - 5, 0
    while t < until:
        out.append({"probe": "http", "op": "get", "id": str(i), "start": t, "end": t + 0.01,
                    "ok": not gap_from <= t < gap_to, "error": "", "node": "h1"})
        t, i = t + 0.1, i + 1
    return out


@pytest.fixture
def fake_flow(monkeypatch):
    """Run ``pacemaker-vip-node-poweroff`` through run_scenario with the flow, the probe choice
    and stackha's recovery faked; ``run(problems=(), ops=...) -> RunReport``."""
    monkeypatch.setattr(sc, "_ctx", lambda d, kind: SimpleNamespace(name="hacluster", kind=kind))
    monkeypatch.setattr(sc, "_pacemaker_probe", lambda d, ha: "probe")
    monkeypatch.setattr(sc, "recover_until_active",
                        lambda d, deadline, progress=None: faults.Recovery(seconds=1.5, rounds=1))

    def run(tmp_path: Path, problems=(), ops=None):
        t0 = 1000.0

        def flow(app, client, probe, *args):
            assert probe == "probe"
            res = sc.ScenarioResult("pacemaker-vip-node-poweroff", problems=list(problems))
            res.records = _ops(t0, t0 + 0.5, t0 + 4.0, t0 + 10) if ops is None else ops
            res.t_fault, res.t_stop = t0, t0 + 10
            res.timeline = [(-2.0, "VIP on h1"), (0.0, "power off h1 (5 ms)")]
            res.facts = {"victim": "h1"}
            return res

        monkeypatch.setitem(sc.PACEMAKER_FLOWS, "pacemaker-vip-node-poweroff", flow)
        return sc.run_scenario(FakeDeployment(("hacluster",)), sc.scenario("pacemaker-vip-node-poweroff"), 1, tmp_path)

    return run


def test_a_pacemaker_run_is_a_runreport_with_the_checkers_figures(fake_flow, tmp_path):
    rep = fake_flow(tmp_path)
    assert isinstance(rep, sc.RunReport) and rep.verdict == "ok", rep.error
    assert rep.fault == "power off h1 (5 ms)" and rep.recovery_s == 1.5
    http = rep.probes["http"]
    assert http["verdict"] == "ok" and 3400 <= http["longest_gap_ms"] <= 3700 and http["failed"] > 30
    assert rep.extra["facts"] == {"victim": "h1"}
    assert Path(rep.files["report"]).exists()
    assert sc.summarize([rep])[0]["probe"] == "http"


def test_a_pacemaker_flow_problem_or_a_probe_that_never_came_back_fails_the_run(fake_flow, tmp_path):
    rep = fake_flow(tmp_path, problems=["the VIP was on 2 hosts at once"])
    assert rep.failed and rep.verdict == "problems" and "2 hosts at once" in rep.error
    t0 = 1000.0
    never_back = _ops(t0, t0, t0 + 100, t0 + 10)  # every request after the fault failed
    rep = fake_flow(tmp_path, ops=never_back)
    assert rep.failed and rep.verdict == "not-back", (rep.verdict, rep.error)
    stops_early = _ops(t0, t0 + 0.5, t0 + 1.0, t0 + 3)  # the log ends 7 s before the probe was stopped
    rep = fake_flow(tmp_path, ops=stops_early)
    assert rep.failed and rep.verdict == "truncated", (rep.verdict, rep.error)
    rep = fake_flow(tmp_path, ops=[])  # an empty probe log is no evidence, never ok
    assert rep.failed and rep.verdict == "no-evidence", (rep.verdict, rep.error)


class PowerHost:
    def __init__(self, name: str, on: bool):
        self.name, self.on, self.powered_on = name, on, 0

    def is_on(self) -> bool:
        return self.on

    def power_on(self) -> float:
        self.on, self.powered_on = True, self.powered_on + 1
        return 0.0


def test_hosts_fenced_during_the_fault_are_powered_on_and_only_those():
    """A node STONITH left off during the fault is powered on after it (the operator's part);
    a host that was on and still is, is left alone."""
    fenced, alive = PowerHost("m0", on=False), PowerHost("m1", on=True)
    events = sc.power_on_fenced([fenced, alive])
    assert fenced.on and fenced.powered_on == 1 and alive.powered_on == 0
    assert [(e.host, e.what) for e in events] == [("m0", "powered on after being fenced during the fault")]
    assert sc.power_on_fenced([fenced, alive]) == []

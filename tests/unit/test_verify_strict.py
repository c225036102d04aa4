"""``stackha verify`` exit codes (issue 10 item 7): 1 when a run lost an acknowledged operation or
could not prove it did not; a missed target exits 0 by default and 1 with ``--strict``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

from stackha.cli import verify as verify_cli
from stackha.verify import check
from stackha.verify import scenarios as sc


def _report(gap_ms: float, *, lost: int = 0, limit_ms: float = 1000) -> sc.RunReport:
    r = sc.RunReport(scenario="lb-master-poweroff", run=1, run_id="lb-master-poweroff-r1", lab="x",
                     tuning="stackha", started=0.0)
    res = check.ProbeResult(probe="mysql", operations=100, acknowledged=100, longest_gap_ms=gap_ms, lost=lost,
                            verdict="lost" if lost else "ok")
    r.probes = {"mysql": res.to_dict()}
    r.expectations = [sc.Expectation("mysql", "longest_gap_ms", limit_ms, "VIP failover: write gap ≤ 1.0 s")
                      .evaluate({"mysql": res}, {})]
    if lost:
        r.verdict = "lost"
    return r


def test_exit_code_default_only_on_loss_strict_also_on_a_missed_target():
    met, missed, lost = _report(800), _report(1500), _report(800, lost=1)
    assert verify_cli.exit_code([met]) == 0 and verify_cli.exit_code([met], strict=True) == 0
    assert verify_cli.exit_code([missed]) == 0
    assert verify_cli.exit_code([missed], strict=True) == 1
    assert verify_cli.exit_code([lost]) == 1 and verify_cli.exit_code([lost], strict=True) == 1
    assert verify_cli.missed_targets([met, missed]) == ["lb-master-poweroff#1: VIP failover: write gap ≤ 1.0 s "
                                                        "(1500 > 1000)"]


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """``invoke(reports, *flags) -> Result``: ``stackha verify --lab x`` with the deployment and
    the runs faked (they return ``reports``)."""
    from stackha.engine import deploy

    (tmp_path / "verify").mkdir()
    fake = SimpleNamespace(dir=str(tmp_path), tuning="stackha", name="x",
                           provider=SimpleNamespace(require_privileges=lambda: None))
    monkeypatch.setattr(deploy.Deployment, "open", classmethod(lambda cls, name, state=None: fake))
    monkeypatch.setattr(sc, "applicable", lambda d, names=None: [sc.SCENARIOS["lb-master-poweroff"]])
    app = typer.Typer()
    verify_cli.register(app)

    @app.command()
    def other() -> None:  # a second command so typer keeps the sub-command names
        pass

    def invoke(reports, *flags):
        monkeypatch.setattr(sc, "run_scenarios", lambda d, names, runs, out, say=None: reports)
        return CliRunner().invoke(app, ["verify", "--lab", "x", *flags])

    return invoke


def test_cli_missed_target_exits_0_by_default_and_1_with_strict(cli):
    res = cli([_report(1500)])
    assert res.exit_code == 0, res.output
    assert "1 target(s) missed" in res.output and "exit 0 without --strict" in res.output
    res = cli([_report(1500)], "--strict")
    assert res.exit_code == 1, res.output
    assert "--strict: exit 1" in res.output
    res = cli([_report(800)], "--strict")
    assert res.exit_code == 0, res.output


def test_cli_loss_exits_1_with_or_without_strict(cli):
    assert cli([_report(800, lost=1)]).exit_code == 1
    assert cli([_report(800, lost=1)], "--strict").exit_code == 1


def test_cli_json_summary_lists_the_missed_targets(cli, tmp_path):
    import json

    res = cli([_report(1500)], "--format", "json", "--strict")
    assert res.exit_code == 1
    out = json.loads(res.output)
    assert out["strict"] is True and len(out["missed_targets"]) == 1
    assert list(Path(tmp_path / "verify").glob("summary-*.json"))

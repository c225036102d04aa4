"""``stackha verify``: fault injection against the deployed cloud, with acknowledged-operation
accounting (see :mod:`stackha.verify.scenarios`).

Exit code 1 when any run lost an acknowledged operation (or could not prove it did not: final
state unreadable, a probe that never succeeded, a run that could not be carried out).  A missed
target (a gap over its limit) is reported but exits 0, unless ``--strict``: then any missed
target exits 1 as well (:func:`exit_code`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stackha.errors import InvalidInput

# Wide enough for the figures when the output is a log file rather than a terminal.
console = Console(width=None if sys.stdout.isatty() else 160)


def _state():
    from stackha.cli import state_dir

    return state_dir()


def verify_dir(d) -> Path:
    """Where reports go: ``<state>/deployments/<lab>/verify/``."""
    return Path(d.dir) / "verify"


def _ms(v) -> str:
    return "-" if v is None else f"{v:.0f}"


def _s(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def print_runs(reports, title: str) -> None:
    """One row per run and probe: the checker's figures and the time to full recovery."""
    t = Table("scenario", "run", "probe", "ops", "failed", "longest gap ms", "lost", "failed but committed",
              "dups", "recovery s", "verdict", title=title)
    for r in reports:
        if not r.probes:
            t.add_row(r.scenario, str(r.run), "-", "-", "-", "-", "-", "-", "-", _s(r.recovery_s),
                      f"[red]{r.verdict}[/]: {r.error}")
            continue
        for i, (name, p) in enumerate(r.probes.items()):
            style = "green" if p["verdict"] == "ok" else "bold red"
            t.add_row(r.scenario if i == 0 else "", str(r.run) if i == 0 else "", name, str(p["operations"]),
                      str(p["failed"]), _ms(p["longest_gap_ms"]) + (" (open)" if p["gap_open"] else ""),
                      str(p["lost"]), str(p["failed_but_committed"]), str(p["duplicates"]),
                      _s(r.recovery_s) if i == 0 else "", f"[{style}]{p['verdict']}[/]")
    console.print(t)


def print_summary(rows: list[dict], reports) -> None:
    t = Table("scenario", "probe", "runs", "median gap ms", "max gap ms", "failed", "lost", "failed but committed",
              "dups", "median recovery s", title="summary over runs")
    for row in rows:
        t.add_row(row["scenario"], row["probe"], str(row["runs"]), _ms(row["median_gap_ms"]), _ms(row["max_gap_ms"]),
                  str(row["failed"]), f"[{'red' if row['lost'] else 'green'}]{row['lost']}[/]",
                  str(row["failed_but_committed"]), str(row["duplicates"]), _s(row["median_recovery_s"]))
    console.print(t)
    targets = [(r.scenario, r.run, e) for r in reports for e in r.expectations]
    if targets:
        tt = Table("scenario", "run", "target", "value", "met", title=f"targets (tuning {reports[0].tuning})")
        for scn, run, e in targets:
            v = e["value"]
            tt.add_row(scn, str(run), e["target"], "-" if v is None else f"{v:g}",
                       "[green]yes[/]" if e["met"] else f"[red]no[/] ({escape(e.get('why', ''))})")
        console.print(tt)
    for r in reports:
        if r.error:
            console.print(f"[red]{r.scenario} run {r.run}:[/] {r.error}")


def missed_targets(reports) -> list[str]:
    """``"<scenario>#<run>: <target> (<why>)"`` for every expectation a run did not meet."""
    return [f"{r.scenario}#{r.run}: {e['target']} ({e.get('why', '')})"
            for r in reports for e in r.expectations if not e["met"]]


def exit_code(reports, strict: bool = False) -> int:
    """1 when a run failed (an acknowledged operation lost, or no proof that none was), or —
    with ``strict`` — when any target was missed; else 0."""
    if any(r.failed for r in reports):
        return 1
    if strict and missed_targets(reports):
        return 1
    return 0


def verify(
    lab: Optional[str] = typer.Option(None, "--lab", help="Lab prefix of the deployed cloud (required unless --list)."),
    scenario: List[str] = typer.Option([], "--scenario", help="Scenario name (repeatable); default: all that apply."),
    runs: int = typer.Option(1, "--runs", help="Runs per scenario (1-20)."),
    fmt: str = typer.Option("table", "--format", help="table or json"),
    list_only: bool = typer.Option(False, "--list", help="List the scenarios and exit."),
    strict: bool = typer.Option(False, "--strict", help="Also exit 1 when any target is missed "
                                "(default: exit 1 only when an acknowledged operation was lost or a run failed)."),
) -> None:
    """Inject faults into the deployed cloud while probes run; report gaps, failures and lost
    acknowledged operations.  Exits 1 if any acknowledged operation was lost (or a run could not
    prove none was); with --strict, also when any target is missed."""
    from stackha.engine.deploy import Deployment
    from stackha.verify import scenarios as sc

    if fmt not in ("table", "json"):
        raise InvalidInput(f"--format {fmt!r}: use table or json")
    if list_only:
        t = Table("scenario", "fault", "hold s", "targets")
        for s in sc.SCENARIOS.values():
            t.add_row(s.name, s.description, f"{s.hold_s:g}", "; ".join(e.text for e in s.expectations))
        console.print(t)
        return
    if not lab:
        raise InvalidInput("--lab is required: the prefix of the lab the cloud is deployed on")
    d = Deployment.open(lab, _state())
    d.provider.require_privileges()
    chosen = sc.applicable(d, list(scenario) or None)
    out = verify_dir(d)
    t0 = time.monotonic()
    say = (lambda m: None) if fmt == "json" else (
        lambda m: console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(m)}", highlight=False))
    reports = sc.run_scenarios(d, [s.name for s in chosen], runs, out, say)
    rows = sc.summarize(reports)
    summary = {"lab": lab, "tuning": d.tuning, "runs": runs, "seconds": round(time.monotonic() - t0, 1),
               "summary": rows, "reports": [r.to_dict() for r in reports],
               "lost": sum(p["lost"] for r in reports for p in r.probes.values()),
               "failing_runs": [f"{r.scenario}#{r.run}: {r.verdict}" for r in reports if r.failed],
               "missed_targets": missed_targets(reports), "strict": strict}
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    (out / f"summary-{stamp}.json").write_text(json.dumps(summary, indent=2, default=str))
    if fmt == "json":
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_runs(reports, f"stackha verify on lab {lab} (tuning {d.tuning})")
        print_summary(rows, reports)
        console.print("recovery s: stackha's recovery (Deployment.recover) after the fault was lifted, until every "
                      "unit was active; gaps and failures count from 3 s before the fault")
        console.print(f"reports and timelines: {out} (summary-{stamp}.json); {summary['seconds']:.0f} s in all")
        if summary["lost"]:
            console.print(f"[bold red]{summary['lost']} acknowledged operation(s) LOST[/]")
        elif summary["failing_runs"]:
            console.print("[bold red]failing runs:[/] " + ", ".join(summary["failing_runs"]))
        else:
            console.print("[green]0 acknowledged operations lost[/]")
        if summary["missed_targets"]:
            console.print(f"[{'bold red' if strict else 'yellow'}]{len(summary['missed_targets'])} target(s) missed[/]"
                          + (" (--strict: exit 1)" if strict else " (exit 0 without --strict)"))
    code = exit_code(reports, strict)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add the ``verify`` command to the stackha CLI."""
    app.command()(verify)

"""``stackha analyze BUNDLE [--overlay FILE]... [--format table|json]``.

Loads the bundle (overlays merged in order), prints the findings (severity, code, path, message,
fix) and then the availability table: per application and for the cloud, as percent, nines and
downtime per year and per day (the layout of seed 001's table of nines).

Exit codes: 0 no error and no warning (info findings do not count), 1 at least one error or
warning, 2 invalid input (the bundle cannot be loaded: every problem is listed, one per line;
hostile input — control characters, deep nesting, alias bombs, huge numbers, a FIFO or a device,
an oversized file — is refused the same way, in bounded time), 70 an internal error.
"""

from __future__ import annotations

import json
import math
import sys
from enum import Enum
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stackha.errors import InvalidInput, printable
from stackha.model import load_bundle
from stackha.model.analysis import AnalysisReport, analyze
from stackha.model.availability import Figure, format_duration

__all__ = ["register", "report_json", "print_report"]


class OutputFormat(str, Enum):
    """Output formats of ``stackha analyze``."""

    table = "table"
    json = "json"


_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def report_json(report: AnalysisReport, bundle_path: str, overlays: list[str]) -> dict[str, Any]:
    """The report as JSON-ready data (infinite nines become null)."""
    return _finite({
        "bundle": bundle_path,
        "overlays": overlays,
        "summary": report.counts(),
        "findings": [f.model_dump() for f in report.findings],
        "known_limits": report.known_limits,
        "classification": {k: v.model_dump() for k, v in report.classification.items()},
        "availability": report.availability.model_dump(),
    })


def _figure_cells(fig: Figure) -> list[str]:
    return [fig.percent_text(), fig.nines_text(), format_duration(fig.downtime_per_year_s),
            format_duration(fig.downtime_per_day_s)]


def _cell(text: str) -> str:
    """User-derived text for a rich table cell: no markup, no control characters."""
    return escape(printable(text, newlines=False))


def print_report(console: Console, report: AnalysisReport, title: str) -> None:
    """Print the findings table, the availability table and the summary line."""
    console.print(f"[bold]{_cell(title)}[/]", highlight=False)
    if report.findings:
        t = Table(title="Findings", title_justify="left", show_lines=False)
        for col in ("severity", "code", "path", "message", "fix"):
            t.add_column(col, overflow="fold")
        for f in report.findings:
            t.add_row(f"[{_STYLE[f.severity]}]{f.severity}[/]", f.code, _cell(f.path),
                      _cell(f.message), _cell(f.fix))
        console.print(t)
    else:
        console.print("Findings: none")
    av = report.availability
    t = Table(title=f"Availability (unit availability {av.unit_availability:g}, "
              f"MTTR {av.unit_mttr_hours:g} h)", title_justify="left")
    for col in ("application", "kind", "state", "mode", "model", "availability", "nines",
                "downtime/year", "downtime/day"):
        t.add_column(col, overflow="fold")
    for name, a in av.applications.items():
        c = report.classification[name]
        t.add_row(_cell(name), a.kind, c.state, c.mode, _cell(a.model), *_figure_cells(a.figure))
    if av.cloud is not None:
        t.add_row("[bold]cloud[/]", "", "", "", "request: " + _cell(" → ".join(av.cloud.path)),
                  *[f"[bold]{c}[/]" for c in _figure_cells(av.cloud.figure)])
    console.print(t)
    if av.cloud is not None:
        fig = av.cloud.figure
        how = "derived from the relations" if av.cloud.derived else "stackha: request_path"
        console.print(f"Cloud availability for a user request ({' → '.join(av.cloud.path)}; {how}): "
                      f"{fig.percent_text()}, {fig.nines_text()} nines, "
                      f"{format_duration(fig.downtime_per_year_s)}/year, "
                      f"{format_duration(fig.downtime_per_day_s)}/day", highlight=False)
    for name, text in report.known_limits.items():
        console.print(f"Known limit ({_cell(name)}): {text}", highlight=False)
    counts = report.counts()
    console.print(f"Summary: {counts['error']} error(s), {counts['warning']} warning(s), "
                  f"{counts['info']} info", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``analyze`` command to the ``stackha`` CLI."""

    @app.command("analyze")
    def analyze_cmd(
        bundle: str = typer.Argument(..., help="Bundle YAML file (Juju bundle format)."),
        overlay: list[str] = typer.Option([], "--overlay", help="Overlay YAML file; repeat for several, applied in order."),
        output: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Output format."),
        unit_availability: float | None = typer.Option(
            None, "--unit-availability", help="Per-unit availability (0 < a < 1), overriding the bundle's stackha: unit_availability."),
    ) -> None:
        """Find single points of failure and quorum problems, and estimate availability.

        Exit 0: no error or warning; 1: errors or warnings found; 2: invalid bundle.
        """
        if unit_availability is not None and not 0 < unit_availability < 1:
            raise InvalidInput(f"--unit-availability {unit_availability:g} is not strictly between 0 and 1")
        b = load_bundle(bundle, overlay)  # BundleError: exit 2, printed as plain text by main()
        report = analyze(b, unit_availability=unit_availability)
        if output is OutputFormat.json:
            typer.echo(json.dumps(report_json(report, bundle, list(overlay)), indent=2))
        else:
            console = Console() if sys.stdout.isatty() else Console(width=160)
            title = f"stackha analyze {bundle}" + "".join(f" --overlay {o}" for o in overlay)
            title += (f": {len(b.machines)} machine(s), {len(b.applications)} application(s), "
                      f"{len(b.relations)} relation(s)")
            print_report(console, report, title)
        if report.has_errors or report.has_warnings:
            raise typer.Exit(1)

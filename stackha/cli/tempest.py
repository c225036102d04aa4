"""``stackha tempest``: Tempest against the deployed cloud, from its client host (see
:mod:`stackha.verify.tempest`).  Exit 1 when a test failed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stackha.errors import InvalidInput

console = Console()


def tempest(
    lab: str = typer.Option(..., "--lab", help="Lab prefix of the deployed cloud."),
    regex: str = typer.Option("", "--regex", help="Test selection (stestr regex); default: smoke + "
                              "compute servers, image and network API tests."),
    concurrency: int = typer.Option(2, "--concurrency", help="Test workers (1-8)."),
    fmt: str = typer.Option("table", "--format", help="table or json"),
) -> None:
    """Run Tempest (Debian's tempest 33) from the client host against the cloud on the VIP; the
    config is written from the deployment, the lab's known limits are skipped with their reasons."""
    from stackha.cli import state_dir
    from stackha.engine.deploy import Deployment
    from stackha.verify import tempest as tp

    if fmt not in ("table", "json"):
        raise InvalidInput(f"--format {fmt!r}: use table or json")
    if not 1 <= concurrency <= 8:
        raise InvalidInput(f"--concurrency {concurrency}: use 1 to 8")
    d = Deployment.open(lab, state_dir())
    d.provider.require_privileges()
    say = (lambda m: None) if fmt == "json" else (lambda m: console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(m)}"))
    result = tp.run_tempest(d, regex or tp.DEFAULT_REGEX, concurrency, say=say)
    out = Path(d.dir) / "tempest"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"tempest-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}.json"
    tp.save(result, path)
    counts = result.counts()
    if fmt == "json":
        print(json.dumps({"counts": counts, "seconds": result.seconds, "failed": result.failed(), "report": str(path)}))
    else:
        t = Table("passed", "failed", "skipped", "seconds", title=f"Tempest on lab {lab}")
        t.add_row(str(counts["success"]), str(counts["fail"]), str(counts["skip"]), f"{result.seconds:.0f}")
        console.print(t)
        for tid in result.failed():
            console.print(f"[red]FAILED[/] {escape(tid)}")
        console.print(f"results: {path}")
    if counts["fail"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``tempest`` command to the stackha CLI."""
    app.command()(tempest)

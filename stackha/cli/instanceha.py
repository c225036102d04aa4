"""``stackha instance-ha``: Masakari's failover segments, a compute host failure handled the way
stackha does it (fence, force down, notify), and a repaired host re-admitted
(:mod:`stackha.instanceha.recovery`)."""

from __future__ import annotations

import json
import time

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stackha.errors import InvalidInput

console = Console()
app = typer.Typer(help="Instance HA with Masakari: segments, host failure, re-admission.", no_args_is_help=True)


def _deployment(lab: str):
    from stackha.cli import state_dir
    from stackha.engine.deploy import Deployment

    d = Deployment.open(lab, state_dir())
    d.provider.require_privileges()
    return d


def _fmt(fmt: str) -> str:
    if fmt not in ("table", "json"):
        raise InvalidInput(f"--format {fmt!r}: use table or json")
    return fmt


@app.command()
def segments(lab: str = typer.Option(..., "--lab", help="Lab prefix."),
             fmt: str = typer.Option("table", "--format", help="table or json")) -> None:
    """Failover segments and their hosts, as Masakari's API gives them."""
    from stackha.instanceha import recovery

    segs = recovery.segments(_deployment(lab))
    if _fmt(fmt) == "json":
        print(json.dumps(segs, indent=2))
        return
    t = Table("Segment", "Recovery method", "Enabled", "Host", "Reserved", "On maintenance")
    for s in segs:
        for i, h in enumerate(s["hosts"] or [{"name": "", "reserved": "", "on_maintenance": ""}]):
            t.add_row(s["name"] if i == 0 else "", s["recovery_method"] if i == 0 else "",
                      str(s["enabled"]) if i == 0 else "", h["name"], str(h["reserved"]), str(h["on_maintenance"]))
    console.print(t)


@app.command("host-down")
def host_down(host: str = typer.Argument(..., help="The compute host (its Nova host name)."),
              lab: str = typer.Option(..., "--lab", help="Lab prefix."),
              fence: bool = typer.Option(True, "--fence/--no-fence", help="Power the host off first (default), "
                                         "or require it to be off already."),
              wait: float = typer.Option(300.0, "--wait", help="Seconds to follow Masakari's notification (0: don't)."),
              fmt: str = typer.Option("table", "--format", help="table or json")) -> None:
    """A compute host failed: fence it, force its compute service down in Nova, notify Masakari,
    and follow the notification until Masakari is done (re-run when the engine running it dies).
    Exit 1 when it did not finish."""
    from stackha.instanceha import recovery

    _fmt(fmt)
    d = _deployment(lab)
    r = recovery.host_failed(d, host, fence=fence)
    result = {"host": host, "fenced_s": r.fenced_s, "forced_down_s": r.forced_down_s, "notified_s": r.notified_s,
              "notification": r.notification}
    if wait > 0 and r.notification:
        n = recovery.follow_notification(d, r, wait)
        result.update(status=n.status, done_s=time.time() - r.started_at)
        if n.reruns:  # the engine running it died: stackha restarted it and posted it again
            result.update(notifications=n.notifications, reruns=n.reruns)
    if fmt == "json":
        print(json.dumps(result))
    else:
        for k, v in result.items():
            console.print(f"{k}: {escape(f'{v:.2f}' if isinstance(v, float) else str(v))}")
    if result.get("status", "finished") != "finished":
        raise typer.Exit(1)


@app.command()
def readmit(host: str = typer.Argument(..., help="The repaired compute host (its Nova host name)."),
            lab: str = typer.Option(..., "--lab", help="Lab prefix.")) -> None:
    """Re-admit a repaired compute host (seed 004): its nova-compute started if needed, its
    compute service enabled and no longer forced down, on_maintenance cleared in Masakari."""
    from stackha.instanceha import recovery

    changes = recovery.readmit(_deployment(lab), host)
    for c in changes:
        console.print(escape(c))
    if not changes:
        console.print(f"{escape(host)} was already admitted; nothing changed")


def register(root: typer.Typer) -> None:
    """Add the ``instance-ha`` command group to the stackha CLI."""
    root.add_typer(app, name="instance-ha")

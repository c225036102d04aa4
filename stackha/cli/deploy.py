"""``stackha deploy / status / recover / resolved / destroy``: the engine's verbs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from stackha.errors import InvalidInput

# Wide enough for the status tables when the output is a log rather than a terminal.
console = Console() if sys.stdout.isatty() else Console(width=160)

STATE_STYLE = {"active": "green", "maintenance": "yellow", "waiting": "yellow", "blocked": "red",
               "error": "bold red", "unknown": "magenta"}


def _state():
    from stackha.cli import state_dir

    return state_dir()


def load_and_check(bundle: Path, overlays: list[Path]):
    """Load the bundle + overlays and run the analysis; refuse errors and quorum problems.

    Returns ``(bundle, report)``.  Raises :class:`InvalidInput` listing every refusing finding."""
    from stackha.model import load_bundle
    from stackha.model.analysis import analyze

    b = load_bundle(bundle, overlays)
    report = analyze(b)
    refusing = [f for f in report.findings
                if f.severity == "error" or (f.severity == "warning" and "quorum" in f.code.lower())]
    if refusing:
        lines = [f"{f.severity} {f.code} at {f.path}: {f.message} (fix: {f.fix})" for f in refusing]
        raise InvalidInput("the analysis refuses this bundle; nothing was started:\n  " + "\n  ".join(lines))
    return b, report


def make_provider(lab: Optional[str], inventory: Optional[Path]):
    """The machine provider a deploy asks for: the machines of ``inventory`` over SSH (the
    deployment is named ``lab`` if given, else by the inventory), else the lab of prefix ``lab``.
    Raises :class:`InvalidInput` when neither is given or the inventory is invalid."""
    if inventory is not None:
        from stackha.hosts.ssh import SshProvider

        return SshProvider.from_file(inventory, _state(), name=lab)
    if not lab:
        raise InvalidInput("give --lab PREFIX (deploy on a lab) or --inventory FILE (deploy on machines over SSH)")
    from stackha.hosts.labprovider import LabProvider

    return LabProvider(lab, _state())


def run_deploy(bundle: Path, overlays: list[Path], lab: Optional[str], tuning: str = "stackha",
               only: Optional[set[str]] = None, quiet: bool = False, inventory: Optional[Path] = None):
    """Deploy ``bundle`` on lab ``lab`` (or on the machines of ``inventory`` over SSH) with a
    progress display; returns the DeployReport.  Every refusal (the bundle, the inventory, a
    machine that does not answer) comes before anything is recorded or changed."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from stackha.engine.deploy import Deployment

    b, _ = load_and_check(bundle, overlays)
    provider = make_provider(lab, inventory)
    lab = provider.name
    if Deployment.exists(lab, _state()):
        recorded = (Deployment(lab, _state()).store.get("provider") or {"kind": "lab"}).get("kind")
        if recorded != provider.kind:
            raise InvalidInput(f"deployment {lab!r} is on {recorded} machines; deploy it with "
                               f"{'--inventory FILE' if recorded == 'ssh' else '--lab ' + lab}, or destroy it first")
    d = Deployment.for_bundle(lab, b, _state(), provider)
    d.check()
    provider.require_privileges()
    d.record_bundle(b, tuning=tuning, sources=[str(bundle), *map(str, overlays)])
    t0 = time.monotonic()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=False, disable=quiet) as progress:
        hosts_task = progress.add_task("hosts", total=None)
        created = d.ensure_hosts(lambda msg: progress.update(hosts_task, description=f"hosts: {msg}"))
        progress.update(hosts_task, description=f"hosts: {len(created)} created, {len(d.provider.hosts())} "
                        f"in {d.provider.describe()}", completed=1, total=1)
        tasks: dict[str, int] = {}

        def on_progress(app: str, msg: str) -> None:
            if app not in tasks:
                tasks[app] = progress.add_task(app, total=None)
            done = msg != "deploying"
            progress.update(tasks[app], description=f"{app}: {msg}", **({"completed": 1, "total": 1} if done else {}))

        report = d.deploy(on_progress, only=only)
    if not quiet:
        if report.failed:
            console.print(f"[red]deploy finished with problems[/] in {time.monotonic() - t0:.1f} s:")
            for app, msg in report.failed.items():
                console.print(f"  {app}: {msg}")
        elif report.changed or created:
            n = sum(len(c) for c in report.changes.values())
            console.print(f"[green]deployed[/] in {time.monotonic() - t0:.1f} s: {n} change(s)")
        else:
            console.print(f"no changes: the cloud on lab {lab} already matches the bundle ({time.monotonic() - t0:.1f} s)")
        for app, msg in report.waiting.items():
            console.print(f"  {app}: {msg}")
    if not report.failed:
        from stackha.engine.clouds import write_clouds_yaml, cloud_name

        path = write_clouds_yaml(d)
        if path is not None and not quiet:
            console.print(f"clouds.yaml (admin, auth_url on the VIP): {path}\n"
                          f"  use it from the client host {d.client.name}: env "
                          f"OS_CLIENT_CONFIG_FILE=/srv/stackha/clouds.yaml openstack --os-cloud {cloud_name(lab)} token issue"
                          + (f"\n  (in the lab: stackha lab exec {d.client.name} -- env ...)" if d.provider.kind == "lab" else ""))
    return report


def deploy(
    bundle: Path = typer.Argument(..., exists=False, help="The bundle YAML."),
    overlay: List[Path] = typer.Option([], "--overlay", help="Overlay bundle(s), applied in order."),
    lab: Optional[str] = typer.Option(None, "--lab", help="Lab prefix: created if missing, reused otherwise "
                                      "(with --inventory: the deployment's name)."),
    inventory: Optional[Path] = typer.Option(None, "--inventory", help="Deploy on real machines over SSH: the "
                                             "inventory YAML (machines, SSH user and key, VIP interface, BMC)."),
    tuning: str = typer.Option("stackha", "--tuning", help="stackha (fast failover) or stock (package defaults)."),
) -> None:
    """Deploy BUNDLE on a lab, or on the machines of an inventory over SSH; exits 1 if a unit
    ended in error, 2 if the bundle or the inventory was refused (then nothing was changed).

    The inventory (see stackha/hosts/inventory.py) maps each bundle machine to a host: name,
    address, SSH user (non-root: sudo -n) and key, known_hosts (always checked), the VIP
    interface, and the BMC (type redfish | ipmi, address, username, password_file (0600) or
    password_env) used for power and fencing with fence_redfish / fence_ipmilan."""
    report = run_deploy(bundle, list(overlay), lab, tuning, inventory=inventory)
    if report.failed:
        raise typer.Exit(1)


def status_rows(d) -> list[dict]:
    """Observe every application of deployment ``d``; JSON-ready rows."""
    out = []
    vips = d.vips()
    for st in d.status():
        ctx_units = {u.name: u for u in d.contexts()[st.app].units}
        out.append({
            "application": st.app,
            "kind": d.bundle.applications[st.app].kind,
            "vip": str(vips[st.app].ip) if st.app in vips else None,
            "facts": st.facts,
            "units": [{"unit": u.unit, "workload": u.state.value, "message": u.message,
                       "host": ctx_units[u.unit].host.name if u.unit in ctx_units else "",
                       "address": str(ctx_units[u.unit].address) if u.unit in ctx_units else "",
                       "facts": u.facts} for u in st.units],
        })
    return out


def _fmt(v) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) or "-"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) or "-"
    return str(v)


# The component facts `stackha status` shows in its tables (all of them are in --format json).
KEY_FACTS = {
    "galera": ("wsrep_cluster_size", "wsrep_cluster_status", "wsrep_local_state_comment", "wsrep_last_committed"),
    "rabbitmq": ("running_nodes", "partitions", "alarms"),
    "haproxy": ("holds_vip", "backends", "writers"),
    "keepalived": ("vrrp_state", "holds_vip"),
}
APP_FACTS = {
    "galera": ("wsrep_cluster_size", "synced_units"),
    "rabbitmq": ("running_nodes", "partitions", "alarms"),
    "haproxy": ("vip_holder",),
    "keepalived": ("vip_holder", "duplicate_vip", "problems"),
    "swift-proxy": ("rings_agree", "replicas", "zones"),
    "swift-storage": ("rings_agree",),
}


def _fact_text(key: str, value) -> str:
    if key == "backends" and isinstance(value, dict):
        parts = []
        for fe, servers in value.items():
            up = sum(1 for st in servers.values() if str(st).startswith("UP"))
            down = [n for n, st in servers.items() if not str(st).startswith("UP")]
            parts.append(f"{fe} {up}/{len(servers)} UP" + (f" (down: {', '.join(down)})" if down else ""))
        return "; ".join(parts)
    if key == "running_nodes" and isinstance(value, list):
        return f"{len(value)} running"
    if key == "daemons" and isinstance(value, dict):
        down = [n for n, up in value.items() if not up]
        return f"{len(value) - len(down)}/{len(value)} daemons" + (f" (down: {', '.join(down)})" if down else "")
    if isinstance(value, dict) and set(value) == {"http", "latency_ms"}:
        return f"{key} {value['http']} {value['latency_ms']:g} ms"
    return f"{key}={_fmt(value)}"


def _facts_line(kind: str | None, facts: dict, keys: dict) -> str:
    wanted = keys.get(kind or "")
    items = [(k, facts[k]) for k in wanted if k in facts] if wanted else list(facts.items())
    return "  ".join(_fact_text(k, v) for k, v in items)


def status(
    lab: str = typer.Option(..., "--lab", help="Lab prefix."),
    fmt: str = typer.Option("table", "--format", help="table or json"),
) -> None:
    """Applications and units with workload status, host, address and component facts."""
    from stackha.engine.deploy import Deployment

    if fmt not in ("table", "json"):
        raise InvalidInput(f"--format {fmt!r}: use table or json")
    d = Deployment.open(lab, _state())
    rows = status_rows(d)
    if fmt == "json":
        print(json.dumps(rows, indent=2, default=str))
        return
    from rich.markup import escape

    apps = Table("App", "Kind", "Units", "VIP", "Facts", title=f"cloud {lab} on {d.provider.describe()}")
    units = Table("Unit", "Workload", "Host", "Address", "Message", "Facts")
    for r in rows:
        active = sum(u["workload"] == "active" for u in r["units"])
        apps.add_row(r["application"], r["kind"] or "?", f"{active}/{len(r['units'])}", r["vip"] or "",
                     escape(_facts_line(r["kind"], r["facts"], APP_FACTS)))
        for u in r["units"]:
            style = STATE_STYLE.get(u["workload"], "")
            units.add_row(u["unit"], f"[{style}]{u['workload']}[/]", u["host"], u["address"], escape(u["message"]),
                          escape(_facts_line(r["kind"], u["facts"], KEY_FACTS)))
    console.print(apps)
    console.print(units)


def recover(
    lab: str = typer.Option(..., "--lab", help="Lab prefix."),
    app: List[str] = typer.Option([], "--app", help="Only these applications."),
) -> None:
    """Bring failed units back: Galera cold start from the highest seqno, RabbitMQ rejoin, restarts."""
    from stackha.engine.deploy import Deployment

    d = Deployment.open(lab, _state())
    done = d.recover(set(app) if app else None, lambda a, m: console.print(f"{a}: {m}"))
    if not done:
        console.print("every unit is active; nothing to recover")


def supervise(
    lab: str = typer.Option(..., "--lab", help="Lab prefix."),
    interval: float = typer.Option(2.0, "--interval", help="Seconds between two observations."),
    duration: float = typer.Option(600.0, "--duration", help="Stop after this many seconds (bounded)."),
) -> None:
    """Watch the cloud and recover what fails, with no operator action (bounded in time):
    every INTERVAL s, observe every application and run its recovery when a unit is not active —
    e.g. the Galera cold start after every controller was powered off and on."""
    from stackha.engine.deploy import Deployment

    if not 0 < interval <= 60 or not 0 < duration <= 86400:
        raise InvalidInput("--interval must be in (0, 60] s and --duration in (0, 86400] s")
    d = Deployment.open(lab, _state())
    end = time.monotonic() + duration
    while time.monotonic() < end:
        t0 = time.monotonic()
        done = d.recover(None, lambda a, m: console.print(f"{time.strftime('%H:%M:%S')} {a}: {m}"))
        if done:
            console.print(f"{time.strftime('%H:%M:%S')} recovery pass took {time.monotonic() - t0:.1f} s")
        time.sleep(max(0.0, min(interval, end - time.monotonic())))


def resolved(
    unit: str = typer.Argument(..., help="The unit in error, e.g. galera/1."),
    lab: str = typer.Option(..., "--lab", help="Lab prefix."),
) -> None:
    """Clear a unit's error and deploy again from there."""
    from stackha.engine.deploy import Deployment

    d = Deployment.open(lab, _state())
    d.resolved(unit)
    report = d.deploy(lambda a, m: console.print(f"{a}: {m}"))
    if report.failed:
        raise typer.Exit(1)


def destroy(lab: str = typer.Option(..., "--lab", help="Lab prefix.")) -> None:
    """Tear the cloud down with its lab, state and secrets."""
    from stackha.engine.deploy import Deployment

    if Deployment.exists(lab, _state()):
        d = Deployment(lab, _state())
        what = d.provider.describe()
        d.destroy()
    else:
        from stackha.hosts.labprovider import LabProvider

        what = f"lab {lab}"
        LabProvider(lab, _state()).teardown()
    console.print(f"{what} destroyed")


def register(app: typer.Typer) -> None:
    app.command()(deploy)
    app.command()(status)
    app.command()(recover)
    app.command()(supervise)
    app.command()(resolved)
    app.command()(destroy)

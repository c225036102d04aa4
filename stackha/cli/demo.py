"""``stackha demo``: the main job.

Deploys examples/lab-control-plane.yaml on a lab (3 controllers with Galera, RabbitMQ and Keystone;
2 load balancers with HAProxy and a keepalived VIP), uses it with the real OpenStack client from the
lab's client host, then proves the HA claims one fault at a time — the Galera writer's controller
powered off, then the load balancer holding the VIP — and tears everything down (``--keep`` leaves
the cloud running).  Each step says what it proves and how long it took.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from stackha.errors import UserError

# Wide enough for the status tables when the output is a log rather than a terminal.
console = Console() if sys.stdout.isatty() else Console(width=160)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lab-control-plane.yaml"


class Phases:
    """Times each phase of the demo (s) and prints the summary table at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, str]] = []
        self.t_start = time.monotonic()

    def step(self, title: str, proves: str):
        console.rule(f"[bold]{title}")
        console.print(f"[dim]what this proves:[/] {proves}")
        return _Timer(self, title)

    def summary(self) -> None:
        table = Table("phase", "seconds", "result", title="stackha demo")
        for title, secs, result in self.rows:
            table.add_row(title, f"{secs:.1f}", result)
        table.add_row("[bold]total", f"[bold]{time.monotonic() - self.t_start:.1f}", "")
        console.print(table)


class _Timer:
    def __init__(self, phases: Phases, title: str):
        self.phases, self.title, self.result = phases, title, "ok"

    def __enter__(self):
        self.t0 = time.monotonic()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None:
            self.result = f"FAILED: {exc}"
        self.phases.rows.append((self.title, time.monotonic() - self.t0, self.result))
        return False


def _openstack(d, *args: str, timeout: float = 60):
    from stackha.engine.clouds import openstack_argv

    return d.client.run(openstack_argv(d.name, *args), timeout=timeout)


def _until_ok(fn, deadline_s: float, interval_s: float = 0.5):
    """Call ``fn`` (returns a CommandResult) until it succeeds or ``deadline_s`` passes.
    Returns (result, seconds waited, attempts)."""
    t0 = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        res = fn()
        if res.ok or time.monotonic() - t0 > deadline_s:
            return res, time.monotonic() - t0, attempts
        time.sleep(interval_s)


def _galera_writer(d) -> str:
    """The lab host whose Galera node is the writer: asked through the VIP (SELECT @@hostname)."""
    from stackha.services import operator_for

    ctxs = d.contexts()
    galera = next(c for c in ctxs.values() if c.kind == "galera")
    user, password = operator_for("galera").client_credentials(galera)
    res = d.client.run(["mariadb", "-h", str(galera.vip.ip), "-u", user, f"-p{password}", "-N", "-B",
                        "--connect-timeout=3", "-e", "SELECT @@hostname"], timeout=20)
    if not res.ok:
        raise UserError(f"cannot ask the database VIP which node writes: {res.stderr.strip()}")
    return res.stdout.strip()


def _vip_holder(d) -> str:
    vip = next(v for v in d.vips().values())
    for h in d.provider.hosts().values():
        if h.is_on() and any(a.ip == vip.ip for a in h.addresses()):
            return h.name
    raise UserError(f"no host holds the VIP {vip.ip}")


def demo(
    prefix: str = typer.Option("demo", "--prefix", help="Lab prefix for the demo cloud."),
    bundle: Path = typer.Option(EXAMPLE, "--bundle", help="The bundle to deploy."),
    keep: bool = typer.Option(False, "--keep", help="Leave the cloud running at the end."),
) -> None:
    """The main job: deploy the example HA cloud on a lab, use it, break it, show it survives."""
    from stackha.cli.deploy import run_deploy, status
    from stackha.engine.deploy import Deployment
    from stackha.hosts.lab import require_root

    require_root()
    phases = Phases()
    failed = False
    d = None
    try:
        with phases.step("1. analyze the bundle",
                         "the design has no single point of failure, before anything runs"):
            from stackha.cli.analyze import print_report
            from stackha.model import load_bundle
            from stackha.model.analysis import analyze

            report = analyze(load_bundle(bundle))
            print_report(console, report, f"stackha analyze {bundle.name}")
        with phases.step("2. deploy the HA control plane",
                         "Galera ×3, RabbitMQ ×3, Keystone ×3 and an HAProxy pair with a keepalived VIP come up from a bundle"):
            rep = run_deploy(bundle, [], prefix)
            if rep.failed:
                raise UserError("deploy failed: " + "; ".join(f"{a}: {m}" for a, m in rep.failed.items()))
        d = Deployment.open(prefix)
        with phases.step("3. use the cloud with the real OpenStack client",
                         "`openstack token issue` and `catalog list` work through the VIP from the client host"):
            for args in (("token", "issue", "-f", "value", "-c", "expires"), ("catalog", "list")):
                res = _openstack(d, *args)
                console.print(f"$ openstack {' '.join(args)}  (rc {res.rc}, {res.duration_s:.2f} s)")
                console.print(res.stdout.rstrip() or res.stderr.rstrip())
                if not res.ok:
                    raise UserError(f"openstack {args[0]} {args[1]} failed: {res.stderr.strip()}")
        for title, proves, pick in (
            ("4. power off the controller whose Galera node is the writer",
             "the database writer moves to another node and Keystone keeps issuing tokens", _galera_writer),
            ("5. power off the load balancer holding the VIP",
             "keepalived moves the VIP to the other load balancer and the API stays reachable", _vip_holder),
        ):
            with phases.step(title, proves) as t:
                victim = pick(d)
                off = d.host(victim).power_off()
                console.print(f"powered off [bold]{victim}[/] in {off * 1000:.0f} ms")
                res, waited, attempts = _until_ok(lambda: _openstack(d, "token", "issue", "-f", "value", "-c", "id",
                                                                     timeout=30), deadline_s=90)
                if not res.ok:
                    raise UserError(f"token issue still failing {waited:.0f} s after powering off {victim}: "
                                    f"{res.stderr.strip()}")
                console.print(f"token issue works: first success {waited:.1f} s after the power-off, "
                              f"attempt {attempts} (one attempt is ≈ 3 s of openstack CLI start-up; "
                              f"`stackha verify` measures the gap itself)")
                t.result = f"{victim} off; token ok at attempt {attempts}, {waited:.1f} s"
        with phases.step("6. status after the faults", "stackha status shows what is down and what serves"):
            status(lab=prefix, fmt="table")
    except UserError as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        failed = True
    finally:
        if not keep:
            with phases.step("7. tear down", "nothing of the lab remains"):
                if Deployment.exists(prefix):
                    Deployment(prefix).destroy()
                else:
                    from stackha.hosts.lab import teardown

                    teardown(prefix)
        else:
            console.print(Panel(f"The cloud keeps running on lab {prefix}.\n"
                                f"  stackha status --lab {prefix}\n"
                                f"  stackha lab exec {prefix}-client -- env OS_CLIENT_CONFIG_FILE=/srv/stackha/clouds.yaml "
                                f"openstack --os-cloud stackha-{prefix} token issue\n"
                                f"  stackha destroy --lab {prefix}"))
        phases.summary()
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(demo)

"""``stackha lab …``: the embedded lab provider's verbs.

``up`` builds a lab, ``list``/``show`` describe labs, ``exec`` runs a command in a host,
``power-off``/``power-on`` fence and boot a host, ``partition``/``heal`` cut and restore its cable,
``down`` tears a lab down completely.  Hosts are named ``<prefix>-<suffix>`` (``demo-h1``).
"""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from stackha.errors import InvalidInput

app = typer.Typer(help="The lab: machines as Linux namespaces on one computer.", no_args_is_help=True)
console = Console()


def _state():
    from stackha.cli import state_dir

    return state_dir()


def _host(name: str):
    """Find a host by its full name ``<prefix>-<suffix>``."""
    from stackha.hosts.lab import Lab

    if "-" not in name:
        raise InvalidInput(f"host {name!r}: give the full name <prefix>-<host>, e.g. demo-h1 (see `stackha lab list`)")
    prefix = name.split("-", 1)[0]
    return Lab.load(prefix, _state()).host(name)


@app.command()
def up(
    prefix: str = typer.Option(..., "--prefix", "-p", help="Lab name: 1-10 of [a-z0-9], starting with a letter."),
    hosts: int = typer.Option(3, "--hosts", "-n", help="Number of hosts (h1 … hN)."),
    subnet: Optional[str] = typer.Option(None, "--subnet", help="A /24 inside 198.18.0.0/15 [default: first free]."),
) -> None:
    """Build a lab of HOSTS hosts on a private bridge."""
    from stackha.hosts.lab import Lab

    import time

    t0 = time.monotonic()
    lab = Lab.create(prefix, hosts, state_dir=_state(), subnet=subnet)
    console.print(f"lab [bold]{prefix}[/] up: {len(lab.hosts)} hosts on {lab.subnet} in {time.monotonic() - t0:.2f} s")
    _print_hosts(lab)


def _print_hosts(lab) -> None:
    table = Table("host", "address", "power", "failure domain", "processes")
    for h in lab.hosts.values():
        on = h.is_on()
        table.add_row(h.name, str(h.address), "on" if on else "[red]off[/]", h.failure_domain,
                      str(len(h.processes())) if on else "-")
    console.print(table)


@app.command("list")
def list_(fmt: str = typer.Option("table", "--format", help="table or json")) -> None:
    """List the labs recorded in the state directory."""
    from stackha.hosts.lab import Lab, list_labs

    records = list_labs(_state())
    if fmt == "json":
        out = []
        for r in records:
            lab = Lab(r, _state())
            out.append({"prefix": r.prefix, "subnet": r.subnet, "hosts": [
                {"name": h.name, "address": str(h.address), "on": h.is_on(), "failure_domain": h.failure_domain}
                for h in lab.hosts.values()]})
        print(json.dumps(out, indent=2))
        return
    if fmt != "table":
        raise InvalidInput(f"--format {fmt!r}: use table or json")
    table = Table("lab", "subnet", "hosts", "on")
    for r in records:
        lab = Lab(r, _state())
        table.add_row(r.prefix, r.subnet, str(len(r.hosts)), str(sum(h.is_on() for h in lab.hosts.values())))
    console.print(table if records else "no labs")


@app.command()
def show(prefix: str = typer.Argument(..., help="The lab's prefix.")) -> None:
    """Show a lab's hosts: address, power, failure domain, process count."""
    from stackha.hosts.lab import Lab

    lab = Lab.load(prefix, _state())
    console.print(f"lab [bold]{prefix}[/] on {lab.subnet}")
    _print_hosts(lab)


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_(
    host: str = typer.Argument(..., help="Host name, e.g. demo-h1."),
    command: List[str] = typer.Argument(..., help="The command (after --)."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds before the command is killed."),
) -> None:
    """Run a command in a lab host and print its output; exits with its exit code."""
    res = _host(host).run(command, timeout=timeout)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    raise typer.Exit(res.rc)


@app.command("power-off")
def power_off(host: str = typer.Argument(..., help="Host name, e.g. demo-h2.")) -> None:
    """Fence a host: cgroup.kill of every process, link down, addresses flushed."""
    h = _host(host)
    dt = h.power_off()
    console.print(f"{h.name} powered off in {dt * 1000:.1f} ms")


@app.command("power-on")
def power_on(host: str = typer.Argument(..., help="Host name, e.g. demo-h2.")) -> None:
    """Boot a host again: fresh /run and /tmp, boot address only, no daemon running."""
    h = _host(host)
    dt = h.power_on()
    console.print(f"{h.name} powered on in {dt * 1000:.1f} ms ({h.address})")


@app.command()
def partition(host: str = typer.Argument(..., help="Host name.")) -> None:
    """Cut a host's cable at the bridge (it keeps running)."""
    _host(host).partition()
    console.print(f"{host} partitioned")


@app.command()
def heal(host: str = typer.Argument(..., help="Host name.")) -> None:
    """Reconnect a partitioned host."""
    _host(host).heal()
    console.print(f"{host} healed")


@app.command()
def down(prefix: str = typer.Argument(..., help="The lab's prefix.")) -> None:
    """Tear a lab down: processes, cgroups, veths, bridge, namespaces, lease, state."""
    from stackha.hosts.lab import teardown

    removed = teardown(prefix, _state())
    console.print(f"lab {prefix}: " + (f"removed {len(removed)} objects" if removed else "nothing to remove"))

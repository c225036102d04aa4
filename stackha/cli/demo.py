"""``stackha demo``: the main job.

Deploys examples/lab-cloud.yaml with the instance HA overlays examples/lab-instance-ha.yaml and
examples/lab-instance-ha-monitors.yaml on a lab (3 controllers with Galera, RabbitMQ, Keystone,
Glance, Placement, Nova, Neutron, Swift proxy, Masakari and a Pacemaker cluster; 2 load balancers
with HAProxy and a keepalived VIP; 3 Swift storage zones; 3 compute hosts — Pacemaker Remote nodes
with masakari-processmonitor; masakari-hostmonitor on the controllers — in one failover segment, one of them reserved), uses it with the real
OpenStack client from the lab's client host, then proves the HA claims one fault at a time — the
Galera writer's controller powered off, the load balancer holding the VIP powered off, then a
compute host running HA_Enabled servers powered off and nobody told: Pacemaker fences it (power,
then Nova force-down), a host monitor notifies Masakari, whose engine evacuates every server to
the reserved host — and tears everything down (``--keep`` leaves the cloud running).  Each step
says what it proves and how long it took.  Without the monitors overlay, stackha itself fences,
forces down and notifies (``stackha instance-ha host-down``'s path).
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
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = EXAMPLES / "lab-cloud.yaml"
INSTANCE_HA = EXAMPLES / "lab-instance-ha.yaml"
MONITORS = EXAMPLES / "lab-instance-ha-monitors.yaml"
#: HA_Enabled servers booted on the compute host the demo powers off.
HA_SERVERS = 6


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


def _servers_table(d, ids: list[str], title: str) -> None:
    """Print the servers in ``ids`` as the real client lists them (name, status, host)."""
    import json

    res = _openstack(d, "server", "list", "--all-projects", "--long", "-f", "json", timeout=120)
    if not res.ok:
        console.print(f"server list failed: {res.stderr.strip()[-300:]}")
        return
    t = Table("server", "status", "host", title=title)
    for row in json.loads(res.stdout):
        if row["ID"] in ids:
            t.add_row(row["Name"], row["Status"], row["Host"] or "")
    console.print(t)


def _instance_ha(d, t) -> None:
    """Step 6: boot HA_Enabled servers on a compute host, power it off, follow Masakari."""
    from stackha.instanceha import recovery

    computes = [u.host.name for c in d.contexts().values() if c.kind == "nova-compute" for u in c.units]
    victim = computes[0]
    res = _openstack(d, "segment", "list", timeout=120)
    console.print(f"$ openstack segment list  (rc {res.rc}, {res.duration_s:.2f} s)\n{res.stdout.rstrip() or res.stderr.rstrip()}")
    ids = recovery.boot_ha_servers(d, victim, HA_SERVERS, "demo-ha")
    _servers_table(d, ids, f"{HA_SERVERS} servers with HA_Enabled=True, booted on {victim}")
    if recovery.monitored(d, victim):
        # Nobody tells anyone: Pacemaker loses the remote node, fences it (power, then Nova
        # force-down), a masakari-hostmonitor on a controller notifies Masakari.
        fail = recovery.HostFailure(host=victim, fenced_s=None, forced_down_s=None, notified_s=None,
                                    notification=None, started_at=time.time())
        d.host(victim).power_off()
        console.print(f"powered off [bold]{victim}[/]; stackha tells nobody — the cluster and the host monitors "
                      f"must find it")
    else:
        fail = recovery.host_failed(d, victim)
        console.print(f"powered off [bold]{victim}[/] — the fence — in {fail.fenced_s * 1000:.0f} ms; its nova-compute "
                      f"forced down in Nova at {fail.forced_down_s:.1f} s; Masakari notification {fail.notification} "
                      f"(COMPUTE_HOST, STOPPED) accepted at {fail.notified_s:.1f} s")
    ev = recovery.wait_evacuated(d, fail, ids, deadline_s=300)
    if ev.done_s is None:
        raise UserError(f"{len(ev.active_s)} of {len(ids)} servers ACTIVE on another host after 300 s: "
                        f"{ev.where}")
    if fail.notification is None:
        det = recovery.detection(d, victim, fail.started_at)
        if not det.notifications:
            raise UserError(f"the servers moved, but Masakari has no notification for {victim}")
        fail.notification = det.notifications[0]["uuid"]
        starts = sorted(t for ts in recovery.evacuation_starts(d, ids).values() for t in ts)

        def rel(t: float | None) -> str:
            return "no evidence" if t is None else f"{t - fail.started_at:.1f} s"

        console.print(f"Pacemaker fenced it: the lab's power fence at {rel(det.power_off_at)}, then "
                      f"fence_stackha_nova forced its nova-compute down at {rel(det.forced_down_at)} (fence level "
                      f"complete at {rel(det.fence_completed_at)}, whole seconds); a masakari-hostmonitor's "
                      f"notification {fail.notification} {det.notifications[0]['payload']} at "
                      f"{rel(det.notifications[0]['created_at'])}; Nova's first evacuation at "
                      f"{rel(starts[0] if starts else None)} (whole seconds) — after the force-down, so after the fence")
    note = recovery.wait_notification(d, fail.notification, 120)
    console.print(f"every one of the {len(ids)} servers ACTIVE on another host [bold]{ev.done_s:.1f} s[/] after "
                  f"the power-off (first at {min(ev.active_s.values()):.1f} s); notification {note['status']}")
    _servers_table(d, ids, f"the same servers after Masakari's recovery ({ev.done_s:.1f} s)")
    for args in (("notification", "list"), ("segment", "host", "list", recovery.segments(d)[0]["uuid"],
                                             "-c", "name", "-c", "reserved", "-c", "on_maintenance")):
        res = _openstack(d, *args, timeout=120)
        console.print(f"$ openstack {' '.join(args)}  (rc {res.rc})\n{res.stdout.rstrip() or res.stderr.rstrip()}")
    t.result = (f"{victim} off; {len(ids)} servers ACTIVE elsewhere in {ev.done_s:.1f} s, "
                f"notification {note['status']}")
    if note["status"] != "finished":
        raise UserError(f"Masakari's notification {fail.notification} ended {note['status']}")


def demo(
    prefix: str = typer.Option("demo", "--prefix", help="Lab prefix for the demo cloud."),
    bundle: Path = typer.Option(EXAMPLE, "--bundle", help="The bundle to deploy."),
    overlay: list[Path] = typer.Option(None, "--overlay", help="Overlay bundles (repeatable; default with the "
                                       "default bundle: examples/lab-instance-ha.yaml and "
                                       "lab-instance-ha-monitors.yaml)."),
    keep: bool = typer.Option(False, "--keep", help="Leave the cloud running at the end."),
) -> None:
    """The main job: deploy the example HA cloud on a lab, use it, break it, show it survives."""
    from stackha.cli.deploy import run_deploy, status
    from stackha.engine.deploy import Deployment
    from stackha.hosts.lab import require_root

    require_root()
    overlays = list(overlay or ([INSTANCE_HA, MONITORS] if bundle == EXAMPLE else []))
    phases = Phases()
    failed = False
    d = None
    try:
        with phases.step("1. analyze the bundle",
                         "the design has no single point of failure, before anything runs"):
            from stackha.cli.analyze import print_report
            from stackha.model import load_bundle
            from stackha.model.analysis import analyze

            report = analyze(load_bundle(bundle, overlays))
            print_report(console, report, f"stackha analyze {bundle.name}")
        with phases.step("2. deploy the HA cloud",
                         "Galera ×3, RabbitMQ ×3, every API ×3 behind an HAProxy pair with a keepalived VIP, "
                         "Swift across 3 zones, 3 compute hosts and Masakari come up from a bundle"):
            rep = run_deploy(bundle, overlays, prefix)
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
        if any(c.kind == "masakari" for c in d.contexts().values()):
            with phases.step("6. power off a compute host running HA servers",
                             "Pacemaker fences it and forces it down in Nova, a host monitor tells Masakari, which "
                             "evacuates every HA_Enabled server to the reserved host — still with a controller and a "
                             "load balancer off") as t:
                _instance_ha(d, t)
        with phases.step("7. status after the faults", "stackha status shows what is down and what serves"):
            status(lab=prefix, fmt="table")
    except UserError as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        failed = True
    finally:
        if not keep:
            with phases.step("8. tear down", "nothing of the lab remains"):
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

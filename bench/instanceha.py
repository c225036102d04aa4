#!/usr/bin/env python3
"""Instance HA benchmark: a compute host powered off → every HA instance ACTIVE on another host,
with stackha's tuning and with Masakari's stock settings, in one invocation.

    .venv/bin/python bench/instanceha.py [--sizes 10,50] [--runs 1] [--tuning stackha|stock]... [--keep]

Deploys examples/lab-cloud.yaml with the overlay examples/lab-instance-ha.yaml twice (two labs,
each with its VIP moved to a free /24, :mod:`stackha.verify.labs`; a deploy that leaves a unit
failed fails the bench):

1. ``tuning="stackha"`` — stackha's path (:mod:`stackha.instanceha.recovery`): fence, force the
   compute service down in Nova, notify; the engine waits 0 s after disabling the service and
   evacuates 8 servers at a time (:mod:`stackha.services.openstack.masakari`);
2. ``tuning="stock"`` — Masakari and Nova as shipped: fence and notify only (nothing forced
   down), the engine sleeps ``wait_period_after_service_update`` = 180 s to outwait Nova's
   ``service_down_time`` (60 s) and evacuates 3 at a time.  The notification is posted right
   after the fence here, so the stock figure leaves out what a stock deployment adds before it:
   masakari-hostmonitor's ``monitoring_interval`` (60 s) and Pacemaker's detection.

Both segments are switched to recovery method ``auto`` (the reserved host stays disabled, so the
other ordinary compute host takes the servers; the victim alternates between nova-compute/0 and
/1 so each run starts from a re-admitted host).  For each size N and run, interleaved (tuned then
stock): boot N ``HA_Enabled=True`` servers on the victim (Nova's fake driver: real Nova objects,
no hypervisor), power the victim off (the lab's power-off: link down, then every process killed),
and poll Nova from the client host every 0.5 s until every server is ACTIVE with no task on
another host.  Times are from the power-off.  Then the servers are deleted, the victim powered on
and re-admitted (``stackha instance-ha readmit``'s path).

Prints one table (median over runs per size and tuning; ratio tuned/stock) and writes every run
to ``<state>/bench-instanceha-<time>.json``.  Target (issue 14): ≤ 20 s for 20 instances with
stackha's tuning.  Exit 1 when a deploy or a run failed or a server never came back (reported as
"no evidence", never as a time).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from stackha.verify.labs import with_clouds  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 170)
BUNDLE = ROOT / "examples" / "lab-cloud.yaml"
OVERLAY = ROOT / "examples" / "lab-instance-ha.yaml"
TUNINGS = ("stackha", "stock")
#: How long a run may take from the fence before it counts as "no evidence" (s): stock Masakari
#: sleeps 180 s before its first evacuation and evacuates 3 servers at a time.
DEADLINE_S = {"stackha": 300.0, "stock": 900.0}


def say(msg: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {msg}", highlight=False)


def new_cloud(tuning: str, used: set[int], work: Path) -> dict:
    """Deploy one cloud on its own lab; its record (``error`` set when the deploy failed)."""
    from stackha.cli.deploy import run_deploy
    from stackha.verify.labs import free_vip_subnet, vip_overlay

    prefix = "bih" + "".join(secrets.choice("0123456789") for _ in range(4))
    subnet = free_vip_subnet(avoid=used)
    used.add((int(subnet.network_address) >> 8) & 0xFF)
    vip = vip_overlay(BUNDLE, subnet, work / f"vip-{prefix}.yaml")
    out: dict = {"tuning": tuning, "lab": prefix, "subnet": str(subnet), "runs": []}
    say(f"[bold]{tuning}[/]: deploying lab-cloud + instance HA on lab {prefix} (VIP in {subnet})")
    t0 = time.monotonic()
    try:
        rep = run_deploy(BUNDLE, [OVERLAY, vip], prefix, tuning=tuning, quiet=True)
    except Exception as exc:
        out["error"] = f"deploy raised {type(exc).__name__}: {exc}"
    else:
        out["deploy_s"] = round(time.monotonic() - t0, 1)
        if rep.failed or rep.waiting:
            out["error"] = f"deploy failed: {sorted(rep.failed) + sorted(rep.waiting)}"
    say(f"[red]{tuning}: {escape(out['error'])}[/]" if "error" in out else f"{tuning}: deployed in {out['deploy_s']:.0f} s")
    return out


def to_auto(d) -> None:
    """Switch every failover segment of ``d`` to recovery method ``auto`` with the real client."""
    from stackha.engine.clouds import openstack_argv
    from stackha.instanceha import recovery

    for seg in recovery.segments(d):
        if seg["recovery_method"] != "auto":
            d.client.run(openstack_argv(d.name, "segment", "update", "--recovery_method", "auto", seg["uuid"]),
                         timeout=120, check=True)


def one_run(d, tuning: str, size: int, n: int) -> dict:
    """Boot ``size`` HA servers on the victim, fail it, time the evacuation, clean up."""
    from stackha.instanceha import recovery

    computes = [u.host.name for c in d.contexts().values() if c.kind == "nova-compute" for u in c.units]
    victim = computes[n % 2]
    out: dict = {"tuning": tuning, "size": size, "run": n, "victim": victim}
    ids = recovery.boot_ha_servers(d, victim, size, f"bench-{size}-{n}")
    say(f"  {tuning}: {size} HA servers ACTIVE on {victim}; powering it off")
    fail = recovery.host_failed(d, victim, force_down=tuning == "stackha")
    out.update(fenced_ms=round(fail.fenced_s * 1000, 1), notified_s=round(fail.notified_s, 2),
               forced_down_s=None if fail.forced_down_s is None else round(fail.forced_down_s, 2))
    ev = recovery.wait_evacuated(d, fail, ids, deadline_s=DEADLINE_S[tuning])
    note = recovery.wait_notification(d, fail.notification, 300)
    per = sorted(ev.active_s.values())
    out.update(done_s=None if ev.done_s is None else round(ev.done_s, 2),
               first_s=round(per[0], 2) if per else None,
               median_server_s=round(statistics.median(per), 2) if per else None,
               back=len(per), notification=note["status"],
               targets=sorted({w[0] for w in ev.where.values() if w and w[0]}))
    say(f"  {tuning}: " + (f"all {size} ACTIVE elsewhere {ev.done_s:.1f} s after the power-off" if ev.done_s
                           else f"[red]{len(per)} of {size} back: no evidence of a full recovery[/]")
        + f"; notification {note['status']}")
    recovery.delete_servers(d, ids)
    d.host(victim).power_on()
    recovery.readmit(d, victim)
    return out


def run_all(clouds: dict[str, dict], sizes: list[int], runs: int) -> None:
    """Every size × run on every cloud, interleaved (tuned then stock) so that load drift on the
    shared machine hits both; one cloud under a fault at a time.  An exception ends that cloud's
    runs (recorded as its ``error``); the other goes on."""
    from stackha.cli import state_dir
    from stackha.engine.deploy import Deployment

    ds = {t: Deployment.open(r["lab"], state_dir()) for t, r in clouds.items() if "error" not in r}
    for t, d in ds.items():
        to_auto(d)
    n = 0
    for size in sizes:
        for _ in range(runs):
            for tuning, d in ds.items():
                res = clouds[tuning]
                if "error" in res:
                    continue
                say(f"[bold]{escape(f'[{tuning}]')} {size} instances, run {n + 1}[/]")
                try:
                    res["runs"].append(one_run(d, tuning, size, n))
                except Exception as exc:
                    res["error"] = f"{size} instances run {n + 1} raised {type(exc).__name__}: {exc}"
                    say(f"[red]{tuning}: {escape(res['error'])}[/]")
            n += 1


def _median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def table(clouds: dict[str, dict], sizes: list[int]) -> list[dict]:
    """Per size: median time to all ACTIVE elsewhere per tuning, ratio, and the runs' details."""
    rows = []
    for size in sizes:
        row: dict = {"size": size}
        for t in TUNINGS:
            rs = [r for r in clouds.get(t, {}).get("runs", []) if r["size"] == size]
            row[f"runs_{t}"] = len(rs)
            row[f"done_{t}"] = [r["done_s"] for r in rs]
            row[f"median_{t}"] = _median(row[f"done_{t}"]) if rs and all(r["done_s"] for r in rs) else None
            row[f"first_{t}"] = _median([r["first_s"] for r in rs])
            row[f"notified_{t}"] = _median([r["notified_s"] for r in rs])
        a, b = row["median_stackha"], row["median_stock"]
        row["ratio"] = round(a / b, 3) if a and b else None
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    def f(v, fmt="{:.1f}"):
        return "no evidence" if v is None else fmt.format(v)

    t = Table("instances", "runs t/s", "notified s t/s", "first ACTIVE elsewhere s t/s",
              "all ACTIVE elsewhere s tuned", "… stock", "tuned/stock",
              title="instance HA: power-off → every HA instance ACTIVE on another host (medians; t = stackha, s = stock)")
    for r in rows:
        t.add_row(str(r["size"]), f"{r['runs_stackha']}/{r['runs_stock']}",
                  f"{f(r['notified_stackha'])}/{f(r['notified_stock'])}", f"{f(r['first_stackha'])}/{f(r['first_stock'])}",
                  f(r["median_stackha"]), f(r["median_stock"]), f(r["ratio"], "{:.3f}"))
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,50", help="instances on the failed host, comma-separated (1-100 each)")
    ap.add_argument("--runs", type=int, default=1, help="runs per size and tuning (1-5)")
    ap.add_argument("--tuning", action="append", choices=TUNINGS, default=[], help="only this tuning (repeatable)")
    ap.add_argument("--state-dir", type=Path, default=None, help="state directory (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the labs running")
    args = ap.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        sizes = []
    if not sizes or not all(1 <= s <= 100 for s in sizes):
        console.print(f"--sizes {args.sizes!r}: give comma-separated numbers from 1 to 100, e.g. 10,50")
        return 2
    if not 1 <= args.runs <= 5:
        console.print("--runs must be 1..5")
        return 2
    if os.geteuid() != 0:
        console.print("bench/instanceha.py needs root (it builds labs)")
        return 2
    from stackha import cli

    state = args.state_dir or Path(tempfile.mkdtemp(prefix="stackha-bench-"))
    cli.settings.state_dir = state
    work = Path(tempfile.mkdtemp(prefix="stackha-bench-overlays-"))
    t0 = time.monotonic()
    used: set[int] = set()
    try:
        clouds = with_clouds(args.tuning or TUNINGS, lambda t: new_cloud(t, used, work),
                             lambda c: run_all(c, sizes, args.runs), keep=args.keep, say=lambda m: say(escape(m)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = table(clouds, sizes)
    print_table(rows)
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    path = state / f"bench-instanceha-{stamp}.json"
    path.write_text(json.dumps({"sizes": sizes, "runs": args.runs, "seconds": round(time.monotonic() - t0, 1),
                                "rows": rows, "clouds": clouds}, indent=2, default=str))
    console.print(f"total {time.monotonic() - t0:.0f} s; results: {path}")
    errors = {t: r["error"] for t, r in clouds.items() if r.get("error")}
    for t, e in errors.items():
        console.print(f"[red]{t}: {escape(e)}[/]")
    incomplete = [f"{t} {r['size']}#{r['run']}" for t, c in clouds.items() for r in c["runs"]
                  if r["done_s"] is None or r["notification"] != "finished"]
    for line in incomplete:
        console.print(f"[red]incomplete run: {line}[/]")
    return 1 if errors or incomplete else 0


if __name__ == "__main__":
    sys.exit(main())

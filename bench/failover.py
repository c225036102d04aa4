#!/usr/bin/env python3
"""Failover benchmark: the same cloud with stackha's tuned timers and with the stock defaults.

    .venv/bin/python bench/failover.py [--runs 3] [--scenario NAME]... [--bundle B] [--keep]

Deploys ``examples/lab-control-plane.yaml`` twice in one invocation (two labs, both up; a deploy
that leaves a unit failed fails the bench, nothing is redeployed piecemeal):

1. ``tuning="stackha"`` — the operators' fast-failover settings;
2. ``tuning="stock"`` — the defaults the anchors ship (keepalived advert_int 1, Galera's default
   EVS timers, HAProxy ``check inter 2000 rise 2 fall 5``, RabbitMQ's default tick time).

Each cloud gets its own lab (prefix ``ver`` + digits) and its own /24: an overlay moves the
bundle's VIP to ``198.18.K.250`` of a free /24 (:mod:`stackha.verify.labs`), machines as they are.
The key scenarios (:data:`stackha.verify.scenarios.KEY_SCENARIOS`) run ``--runs`` times on each,
interleaved (scenario S run 1 on the tuned cloud, then on the stock one, then run 2 …) so that load
drift on the shared 2-core machine hits both; only one cloud is under a fault at a time.  The table
gives per scenario and probe the median longest gap (ms) of both clouds and the ratio
tuned/stock, plus failures, acknowledged-but-lost operations and the median recovery time.  Both
labs are torn down at the end, also on failure or Ctrl-C (``--keep`` keeps them).  The figures
and every run's report are written to ``<state>/bench-failover-<time>.json``.

Targets (issues 6 and 10) for the tuned cloud, judged on the median over the runs: VIP power-off
write and token gap ≤ 1.0 s; Galera writer loss ≤ 2.0 s; RabbitMQ node loss ≤ 2.0 s publish-confirm
gap; controller loss 0 failed token requests and token gap ≤ 2.0 s; partition AMQP gap ≤ 5 s; cold
start → token issue ≤ 60 s; 0 acknowledged operations lost anywhere.  Exit status: 1 when an
operation was lost, a deploy or run failed; the targets are reported, not asserted.
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
BUNDLE = ROOT / "examples" / "lab-control-plane.yaml"
TUNINGS = ("stackha", "stock")


def say(msg: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {msg}", highlight=False)


def deploy_cloud(bundle: Path, overlay: Path, prefix: str, tuning: str):
    """Deploy once and return the DeployReport (``seconds`` set).  A deploy that leaves a unit
    failed or waiting fails the bench: it is never patched up application by application, so the
    benchmark measures the deploy an operator gets."""
    from stackha.cli.deploy import run_deploy

    t0 = time.monotonic()
    report = run_deploy(bundle, [overlay], prefix, tuning=tuning, quiet=True)
    report.seconds = time.monotonic() - t0
    return report


def new_cloud(tuning: str, args, used_subnets: set[int], work: Path) -> dict:
    """Deploy one cloud (its own lab prefix ``ver…`` and VIP /24); its record, with ``error`` set
    when the deploy failed."""
    from stackha.verify.labs import free_vip_subnet, vip_overlay

    prefix = "ver" + "".join(secrets.choice("0123456789") for _ in range(5))
    subnet = free_vip_subnet(avoid=used_subnets)
    used_subnets.add((int(subnet.network_address) >> 8) & 0xFF)
    overlay = vip_overlay(args.bundle, subnet, work / f"overlay-{prefix}.yaml")
    out: dict = {"tuning": tuning, "lab": prefix, "subnet": str(subnet), "reports": []}
    say(f"[bold]{tuning}[/]: deploying {args.bundle.name} on lab {prefix} (VIP in {subnet})")
    try:
        rep = deploy_cloud(args.bundle, overlay, prefix, tuning)
    except Exception as exc:
        out["error"] = f"deploy raised {type(exc).__name__}: {exc}"
    else:
        out["deploy_s"] = round(rep.seconds, 1)
        if rep.failed or rep.waiting:
            out["error"] = f"deploy failed: {sorted(rep.failed) + sorted(rep.waiting)}"
    if "error" in out:
        say(f"[red]{tuning}: {escape(out['error'])}[/]")
    else:
        say(f"{tuning}: deployed in {out['deploy_s']:.0f} s")
    return out


def run_interleaved(results: dict[str, dict], args) -> None:
    """Run every scenario ``args.runs`` times on every cloud, interleaved: run 1 of a scenario on
    A, then on B, then run 2 on A, on B… so load drift on the shared machine hits both tunings
    alike.  Each report is appended to its cloud's ``reports``; an exception of one run is recorded
    as that cloud's ``error`` and stops its later runs, the other cloud goes on."""
    from stackha.cli import state_dir
    from stackha.engine.deploy import Deployment
    from stackha.verify import scenarios as sc

    clouds = {t: Deployment.open(r["lab"], state_dir()) for t, r in results.items() if "error" not in r}
    for name in args.scenario:
        for n in range(1, args.runs + 1):
            for tuning, d in clouds.items():
                res = results[tuning]
                if "error" in res:
                    continue
                found = sc.applicable(d, [name])
                if not found:
                    continue
                say(f"[{tuning} {name} run {n}/{args.runs}] {escape(found[0].description)}")
                try:
                    rep = sc.run_scenario(d, found[0], n, d.dir / "verify", lambda m: say("  " + escape(m)))
                except Exception as exc:
                    res["error"] = f"{name} run {n} raised {type(exc).__name__}: {exc}"
                    say(f"[red]{tuning}: {escape(res['error'])}[/]")
                    continue
                res["reports"].append(rep.to_dict())


def _median(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def table(results: dict[str, dict], runs: int) -> list[dict]:
    """Rows: per scenario and probe, median gap (ms) tuned / stock and the ratio tuned/stock."""
    rows: dict[tuple[str, str], dict] = {}
    for tuning, res in results.items():
        for rep in res.get("reports", []):
            for probe, p in rep["probes"].items():
                row = rows.setdefault((rep["scenario"], probe), {"scenario": rep["scenario"], "probe": probe})
                row.setdefault(f"gaps_{tuning}", []).append(p["longest_gap_ms"])
                row[f"failed_{tuning}"] = row.get(f"failed_{tuning}", 0) + p["failed"]
                row[f"lost_{tuning}"] = row.get(f"lost_{tuning}", 0) + p["lost"]
                row[f"fbc_{tuning}"] = row.get(f"fbc_{tuning}", 0) + p["failed_but_committed"]
                row.setdefault(f"recovery_{tuning}", []).append(rep["recovery_s"])
                first = rep.get("extra", {}).get("first_success_s", {}).get(probe)
                row.setdefault(f"first_{tuning}", []).append(first)
    out = []
    for row in rows.values():
        for t in TUNINGS:
            row[f"median_gap_{t}"] = _median(row.get(f"gaps_{t}", []))
            row[f"median_recovery_{t}"] = _median(row.get(f"recovery_{t}", []))
            row[f"median_first_{t}"] = _median(row.get(f"first_{t}", []))
        a, b = row["median_gap_stackha"], row["median_gap_stock"]
        row["ratio"] = round(a / b, 2) if a is not None and b else None
        out.append(row)
    order = {n: i for i, n in enumerate(results.get("stackha", {}).get("scenarios", []))}
    return sorted(out, key=lambda r: (order.get(r["scenario"], 99), r["scenario"], r["probe"]))


def print_table(rows: list[dict]) -> None:
    def f(v, fmt="{:.0f}"):
        return "-" if v is None else fmt.format(v)

    t = Table("scenario", "probe", "gap ms tuned", "gap ms stock", "tuned/stock", "failed t/s", "lost t/s",
              "failed-but-committed t/s", "recovery s t/s", "first ok after restore s t/s",
              title="failover benchmark: medians over runs (tuned = stackha, stock = package defaults)")
    for r in rows:
        t.add_row(r["scenario"], r["probe"], f(r["median_gap_stackha"]), f(r["median_gap_stock"]),
                  f(r["ratio"], "{:.2f}"),
                  f"{r.get('failed_stackha', '-')}/{r.get('failed_stock', '-')}",
                  f"{r.get('lost_stackha', '-')}/{r.get('lost_stock', '-')}",
                  f"{r.get('fbc_stackha', '-')}/{r.get('fbc_stock', '-')}",
                  f"{f(r['median_recovery_stackha'], '{:.1f}')}/{f(r['median_recovery_stock'], '{:.1f}')}",
                  f"{f(r['median_first_stackha'], '{:.1f}')}/{f(r['median_first_stock'], '{:.1f}')}")
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    from stackha.verify import scenarios as sc

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per scenario and cloud (1-20)")
    ap.add_argument("--scenario", action="append", default=[], help="scenario (repeatable); default: the key ones")
    ap.add_argument("--bundle", type=Path, default=BUNDLE)
    ap.add_argument("--tuning", action="append", choices=TUNINGS, default=[], help="only this tuning (repeatable)")
    ap.add_argument("--state-dir", type=Path, default=None, help="state directory (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep both labs running")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        console.print("bench/failover.py needs root (it builds labs)")
        return 2
    if not 1 <= args.runs <= 20:
        console.print("--runs must be 1..20")
        return 2
    args.scenario = args.scenario or list(sc.KEY_SCENARIOS)
    for name in args.scenario:
        sc.scenario(name)
    from stackha import cli

    state = args.state_dir or Path(tempfile.mkdtemp(prefix="stackha-bench-"))
    cli.settings.state_dir = state
    work = Path(tempfile.mkdtemp(prefix="stackha-bench-overlays-"))
    t0 = time.monotonic()
    used: set[int] = set()

    def make(tuning: str) -> dict:
        return {**new_cloud(tuning, args, used, work), "scenarios": args.scenario}

    try:
        results = with_clouds(args.tuning or TUNINGS, make, lambda r: run_interleaved(r, args), keep=args.keep,
                              say=lambda m: say(escape(m)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = table(results, args.runs)
    print_table(rows)
    lost = sum(r.get("lost_stackha", 0) + r.get("lost_stock", 0) for r in rows)
    errors = {t: r["error"] for t, r in results.items() if r.get("error")}
    failing = [f"{t}: {rep['scenario']}#{rep['run']} {rep['verdict']}" for t, r in results.items()
               for rep in r.get("reports", []) if rep["verdict"] != "ok"]
    targets: dict[tuple[str, str], list[dict]] = {}
    for rep in results.get("stackha", {}).get("reports", []):
        for e in rep["expectations"]:
            targets.setdefault((rep["scenario"], e["target"]), []).append(e)
    if targets:
        tt = Table("scenario", "target (tuned cloud)", "values over runs", "median", "runs met", "median met",
                   title="targets")
        for (scn, target), es in targets.items():
            vals = [e["value"] for e in es if e["value"] is not None]
            med = _median(vals)
            # the targets are upper bounds, so the median meets one exactly when most runs do
            med_met = sum(e["met"] for e in es) * 2 > len(es)
            tt.add_row(scn, target, ", ".join(f"{v:g}" for v in vals) or "no evidence",
                       "-" if med is None else f"{med:g}", f"{sum(e['met'] for e in es)}/{len(es)}",
                       "[green]yes[/]" if med_met else "[red]no[/]")
        console.print(tt)
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    path = state / f"bench-failover-{stamp}.json"
    path.write_text(json.dumps({"runs": args.runs, "seconds": round(time.monotonic() - t0, 1), "rows": rows,
                                "results": results}, indent=2, default=str))
    console.print(f"acknowledged operations lost: {lost}; total {time.monotonic() - t0:.0f} s; results: {path}")
    for t, e in errors.items():
        console.print(f"[red]{t}: {e}[/]")
    for line in failing:
        console.print(f"[red]failing run {line}[/]")
    return 1 if lost or errors or failing else 0


if __name__ == "__main__":
    sys.exit(main())

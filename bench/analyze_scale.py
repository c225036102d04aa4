#!/usr/bin/env python3
"""How ``stackha analyze`` scales with the number of applications (no lab, no root).

Generates synthetic bundles of N applications made of repeated *cells* — a database cluster, a
RabbitMQ cluster, Keystone with a VIP and an hacluster subordinate, Glance — three machines per
cell, every unit in an LXD container, every cell's relations — and times, per size, reading the
YAML and building the bundle (``load``), the analysis (``analyze``) and the JSON report
(``report``, what ``stackha analyze --format json`` prints).  Sizes run interleaved, RUNS rounds;
the table gives medians, the time per application and its ratio to the smallest size's, measured
in the same invocation (1.0 = linear).

Usage: .venv/bin/python bench/analyze_scale.py [--sizes 500,2000,6000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from rich.console import Console
from rich.table import Table

from stackha.cli.analyze import report_json
from stackha.model import load_bundle_text
from stackha.model.analysis import analyze

CELL_APPS = 5


def bundle_text(n_apps: int) -> str:
    """A bundle of ``n_apps`` applications (rounded up to whole cells of 5), as YAML text."""
    cells = -(-n_apps // CELL_APPS)
    lines = ["series: jammy", "machines:"]
    for m in range(3 * cells):
        lines.append(f"  '{m}': {{constraints: mem=8G}}")
    lines.append("applications:")
    rels: list[str] = []
    for c in range(cells):
        to = ", ".join(f"lxd:{3 * c + i}" for i in range(3))
        vip = f"10.{(c >> 8) & 255}.{c & 255}.250"
        lines += [
            f"  db-c{c}: {{charm: ch:percona-cluster, num_units: 3, to: [{to}]}}",
            f"  mq-c{c}: {{charm: ch:rabbitmq-server, num_units: 3, to: [{to}]}}",
            f"  keystone-c{c}: {{charm: ch:keystone, num_units: 3, to: [{to}], options: {{vip: {vip}}}}}",
            f"  keystone-hacluster-c{c}: {{charm: ch:hacluster, options: {{cluster_count: 3}}}}",
            f"  glance-c{c}: {{charm: ch:glance, num_units: 3, to: [{to}]}}",
        ]
        rels += [
            f"  - [keystone-c{c}:shared-db, db-c{c}:shared-db]",
            f"  - [keystone-c{c}:ha, keystone-hacluster-c{c}:ha]",
            f"  - [glance-c{c}:shared-db, db-c{c}:shared-db]",
            f"  - [glance-c{c}:identity-service, keystone-c{c}:identity-service]",
            f"  - [glance-c{c}:amqp, mq-c{c}:amqp]",
        ]
    lines.append("relations:")
    lines += rels
    return "\n".join(lines) + "\n"


def run_once(text: str) -> dict[str, float]:
    t0 = time.perf_counter()
    b = load_bundle_text(text)
    t1 = time.perf_counter()
    report = analyze(b)
    t2 = time.perf_counter()
    json.dumps(report_json(report, "<bench>", []))
    t3 = time.perf_counter()
    return {"load": t1 - t0, "analyze": t2 - t1, "report": t3 - t2, "total": t3 - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="500,2000,6000")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    texts = {n: bundle_text(n) for n in sizes}
    results: dict[int, list[dict[str, float]]] = {n: [] for n in sizes}
    for _ in range(args.runs):  # interleaved: each round runs every size once
        for n in sizes:
            results[n].append(run_once(texts[n]))
    table = Table("applications", "YAML bytes", "load (s)", "analyze (s)", "report (s)",
                  "total (s)", "ms per app", "per-app ratio to first size",
                  title=f"stackha analyze scaling, median of {args.runs} interleaved runs")
    base_per_app = None
    for n in sizes:
        med = {k: statistics.median(r[k] for r in results[n]) for k in ("load", "analyze", "report", "total")}
        apps = -(-n // CELL_APPS) * CELL_APPS
        per_app = med["total"] / apps
        base_per_app = base_per_app or per_app
        table.add_row(str(apps), str(len(texts[n])), f"{med['load']:.2f}", f"{med['analyze']:.2f}",
                      f"{med['report']:.2f}", f"{med['total']:.2f}", f"{per_app * 1000:.2f}",
                      f"{per_app / base_per_app:.2f}")
    Console(width=150).print(table)


if __name__ == "__main__":
    main()

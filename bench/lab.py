#!/usr/bin/env python3
"""Lab bring-up and power-off times (root only).

For 3, 10 and 30 hosts: median (and min/max) over RUNS runs of the time to build a lab from
nothing to every host booted and addressed, and of one host's power-off (cgroup.kill + link
down + address flush, until the host's cgroup is empty) and power-on.  Each run uses its own
prefix and state directory and tears its lab down, also on failure.

Usage: .venv/bin/python bench/lab.py [--runs 5] [--sizes 3,10,30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from stackha.hosts.lab import Lab, teardown


def measure(n: int, runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"up": [], "off": [], "on": [], "down": []}
    for i in range(runs):
        prefix = f"bench{n}x{i}"
        with tempfile.TemporaryDirectory() as d:
            try:
                t0 = time.monotonic()
                lab = Lab.create(prefix, n, state_dir=Path(d))
                out["up"].append(time.monotonic() - t0)
                host = list(lab.hosts.values())[n // 2]
                host.spawn("sleeper", ["sleep", "600"])
                out["off"].append(host.power_off())
                out["on"].append(host.power_on())
                t0 = time.monotonic()
                teardown(prefix, Path(d))
                out["down"].append(time.monotonic() - t0)
            finally:
                teardown(prefix, Path(d))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="3,10,30")
    args = ap.parse_args()
    table = Table("hosts", "bring-up median (s)", "min-max (s)", "per host (ms)",
                  "power-off median (ms)", "power-on median (ms)", "teardown median (s)",
                  title=f"lab timings, median of {args.runs} runs")
    for n in (int(x) for x in args.sizes.split(",")):
        m = measure(n, args.runs)
        up = statistics.median(m["up"])
        table.add_row(str(n), f"{up:.2f}", f"{min(m['up']):.2f}-{max(m['up']):.2f}", f"{up / n * 1000:.0f}",
                      f"{statistics.median(m['off']) * 1000:.1f}", f"{statistics.median(m['on']) * 1000:.0f}",
                      f"{statistics.median(m['down']):.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()

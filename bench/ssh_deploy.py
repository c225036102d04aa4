#!/usr/bin/env python3
"""Deploy time of the same bundle over SSH and on the lab, interleaved in one invocation (root).

For each round: (1) the lab provider deploys examples/lab-control-plane.yaml on a fresh lab (its
VIP moved to a free /24), timed from the command's start to its end — creating the lab's hosts
included; (2) the same bundle is deployed over SSH on lab hosts made into machines
(:mod:`stackha.hosts.labssh`: sshd, a non-root sudo login, a Redfish BMC), by ``stackha deploy
--inventory`` run on the lab's client host — timed the same way; preparing the machines (what a
datacenter has before stackha runs) is reported apart and not counted.  Each lab is torn down
before the next deploy starts (one lab at a time), also on failure.  Prints every round, the
medians and the ratio SSH / lab.

Usage: /work/tools/labslot --exclusive .venv/bin/python bench/ssh_deploy.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from stackha import cli
from stackha.cli.deploy import run_deploy
from stackha.hosts import labssh
from stackha.hosts.lab import LEASE_DIR, teardown

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lab-control-plane.yaml"
MACHINES = ("0", "1", "2", "3", "4")


def free_third() -> int:
    taken = {p.name for p in LEASE_DIR.iterdir()} if LEASE_DIR.is_dir() else set()
    return next(t for t in range(101, 256) if str(t) not in taken)


def lab_round(tmp: Path) -> float:
    prefix = "r" + secrets.token_hex(3)
    state = tmp / f"state-{prefix}"
    third = free_third()
    overlay = tmp / f"vip-{prefix}.yaml"
    overlay.write_text(yaml.safe_dump({"applications": {"haproxy": {"options": {"vip": f"198.18.{third}.250"}}}}))
    cli.settings.state_dir = state
    try:
        t0 = time.monotonic()
        report = run_deploy(EXAMPLE, [overlay], prefix, quiet=True)
        secs = time.monotonic() - t0
        if report.failed:
            raise SystemExit(f"lab deploy failed: {report.failed}")
        return secs
    finally:
        teardown(prefix, state)


def ssh_round(tmp: Path) -> tuple[float, float]:
    prefix = "r" + secrets.token_hex(3)
    state = tmp / f"state-{prefix}"
    third = free_third()
    t0 = time.monotonic()
    lab, ws = labssh.build(prefix, MACHINES, state_dir=state, subnet=f"198.18.{third}.0/24")
    try:
        prep = time.monotonic() - t0
        overlay = "/srv/stackha/ssh/vip.yaml"
        ws.host.write_file(overlay, yaml.safe_dump({"applications": {"haproxy": {"options": {
            "vip": f"198.18.{third}.250"}}}}))
        t0 = time.monotonic()
        res = labssh.run_stackha(ws, "deploy", str(EXAMPLE), "--overlay", overlay, "--inventory", ws.inventory,
                                 timeout=1800)
        secs = time.monotonic() - t0
        if not res.ok:
            raise SystemExit(f"SSH deploy failed (rc {res.rc}): {res.stdout[-1500:]} {res.stderr[-1500:]}")
        return secs, prep
    finally:
        teardown(prefix, state)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="rounds of (lab deploy, SSH deploy), 1-5")
    args = ap.parse_args()
    if not 1 <= args.rounds <= 5:
        raise SystemExit("--rounds: 1 to 5")
    console = Console()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for r in range(1, args.rounds + 1):
            lab_s = lab_round(tmp)
            console.print(f"round {r}: lab deploy {lab_s:.1f} s")
            ssh_s, prep_s = ssh_round(tmp)
            console.print(f"round {r}: SSH deploy {ssh_s:.1f} s (machines prepared in {prep_s:.1f} s, not counted)")
            rows.append((r, lab_s, ssh_s, prep_s))
    t = Table("round", "lab deploy s", "SSH deploy s", "SSH / lab", "machine preparation s (not counted)",
              title=f"examples/lab-control-plane.yaml, {len(MACHINES)} machines + client, interleaved")
    for r, lab_s, ssh_s, prep_s in rows:
        t.add_row(str(r), f"{lab_s:.1f}", f"{ssh_s:.1f}", f"{ssh_s / lab_s:.2f}", f"{prep_s:.1f}")
    lab_med = statistics.median(x[1] for x in rows)
    ssh_med = statistics.median(x[2] for x in rows)
    t.add_row("median", f"{lab_med:.1f}", f"{ssh_med:.1f}", f"{ssh_med / lab_med:.2f}", "")
    console.print(t)


if __name__ == "__main__":
    main()

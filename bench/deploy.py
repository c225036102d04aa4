#!/usr/bin/env python3
"""Deploy timings and memory of the example HA cloud (root only).

Deploys a bundle (default examples/lab-cloud.yaml, the whole HA cloud; ``--bundle`` for another)
on a fresh lab (its VIP moved to a free /24 so it can run beside the demo), prints per application
when it finished and how long its apply took (the engine applies independent applications
concurrently: :data:`stackha.engine.deploy.DEPLOY_WORKERS`), the time from the empty lab to the
data tier all active and to every unit active, the resident memory (RSS, MiB) of every process of
the cloud per host and per daemon kind, and the whole cloud's PSS (shared pages counted once).  Then
it deploys again (must report no change) and tears the lab down, also on failure.

Usage: .venv/bin/python bench/deploy.py [--prefix bdep] [--bundle examples/lab-cloud.yaml]
                                        [--keep STATE_DIR]
(measure with no other lab running on the machine).  ``--keep STATE_DIR`` records the deployment in
STATE_DIR and leaves the cloud running, e.g. for ``stackha --state-dir STATE_DIR tempest --lab bdep``;
``stackha --state-dir STATE_DIR destroy --lab bdep`` removes it.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from stackha import cli
from stackha.engine.deploy import Deployment
from stackha.hosts.lab import LEASE_DIR, _cgroup_pids, teardown
from stackha.model import load_bundle

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lab-cloud.yaml"
DATA_TIER = ("galera", "rabbitmq-server", "haproxy", "keepalived")


def pss_bytes(lab) -> int:
    """The cloud's memory without double counting: the sum of every lab process's PSS
    (``/proc/PID/smaps_rollup``: each shared page divided among the processes mapping it), bytes.
    The RSS sum counts a page shared by N processes (Python's libraries, uwsgi's forked workers)
    N times."""
    total = 0
    for host in lab.hosts.values():
        for pid in _cgroup_pids(host.cgroup):
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            total += sum(int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("Pss:"))
    return total


def rss_by_host_and_command(lab) -> dict[str, dict[str, int]]:
    """RSS in bytes of every process of the lab's hosts: {host: {command name: bytes}}."""
    out: dict[str, dict[str, int]] = {}
    for host in lab.hosts.values():
        per: dict[str, int] = collections.Counter()
        for pid in _cgroup_pids(host.cgroup):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            kb = int(fields.get("VmRSS", "0 kB").split()[0])
            per[fields.get("Name", "?").strip()] += kb * 1024
        out[host.name] = dict(per)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefix", default="bdep")
    ap.add_argument("--bundle", type=Path, default=EXAMPLE)
    ap.add_argument("--keep", type=Path, metavar="STATE_DIR", default=None,
                    help="record the deployment here and leave the cloud running")
    args = ap.parse_args()
    console = Console()
    taken = {p.name for p in LEASE_DIR.iterdir()} if LEASE_DIR.is_dir() else set()
    third = next(t for t in range(101, 256) if str(t) not in taken)
    with tempfile.TemporaryDirectory() as tmp:
        state = args.keep or Path(tmp) / "state"
        state.mkdir(parents=True, exist_ok=True)
        overlay = Path(tmp) / "vip.yaml"
        overlay.write_text(yaml.safe_dump({"applications": {"haproxy": {"options": {"vip": f"198.18.{third}.250"}}}}))
        cli.settings.state_dir = state
        try:
            bundle = load_bundle(args.bundle, [overlay])
            d = Deployment.for_bundle(args.prefix, bundle, state)
            marks: dict[str, float] = {}
            t0 = time.monotonic()
            d.record_bundle(bundle)
            d.ensure_hosts()
            marks["hosts"] = time.monotonic() - t0

            def progress(app: str, msg: str) -> None:
                if msg != "deploying":
                    marks[app] = time.monotonic() - t0

            report = d.deploy(progress)
            total = time.monotonic() - t0
            if report.failed:
                raise SystemExit(f"deploy failed: {report.failed}")
            table = Table("step", "done at (s)", "apply took (s)", title=f"deploy of {args.bundle.name} from an empty lab")
            for step, at in sorted(marks.items(), key=lambda kv: kv[1]):
                took = report.app_seconds.get(step, at if step == "hosts" else None)
                table.add_row(step, f"{at:.1f}", "-" if took is None else f"{took:.1f}")
            data_tier = max(marks[a] for a in DATA_TIER if a in marks)
            table.add_row("[bold]data tier active", f"{data_tier:.1f}", "")
            table.add_row("[bold]every unit active", f"{total:.1f}", "")
            console.print(table)
            rss = rss_by_host_and_command(d.provider.lab)
            mem = Table("host", "RSS (MiB)", "largest processes (MiB)", title="memory of the cloud")
            kinds: dict[str, int] = collections.Counter()
            for host, per in rss.items():
                for name, b in per.items():
                    kinds[name] += b
                top = sorted(per.items(), key=lambda kv: -kv[1])[:4]
                mem.add_row(host, f"{sum(per.values()) / 2**20:.0f}",
                            ", ".join(f"{n} {b / 2**20:.0f}" for n, b in top))
            mem.add_row("[bold]all hosts", f"[bold]{sum(kinds.values()) / 2**20:.0f}", "")
            mem.add_row("[bold]all hosts, PSS", f"[bold]{pss_bytes(d.provider.lab) / 2**20:.0f}",
                        "shared pages counted once (the figure for the ≤ 8 GiB target)")
            console.print(mem)
            by = Table("process", "RSS (MiB), all hosts", title="memory by process name")
            for name, b in sorted(kinds.items(), key=lambda kv: -kv[1])[:10]:
                by.add_row(name, f"{b / 2**20:.0f}")
            console.print(by)
            t1 = time.monotonic()
            again = d.deploy()
            changed = {a: c for a, c in again.changes.items() if c}
            console.print(f"second deploy: {'no changes' if not changed else changed} in {time.monotonic() - t1:.1f} s")
        except BaseException:
            teardown(args.prefix, state)
            raise
        if args.keep:
            from stackha.engine.clouds import write_clouds_yaml

            write_clouds_yaml(d)  # as `stackha deploy` does: the client host's openstack CLI works
            console.print(f"kept: stackha --state-dir {state} destroy --lab {args.prefix}")
        else:
            teardown(args.prefix, state)


if __name__ == "__main__":
    main()

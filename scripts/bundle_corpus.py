#!/usr/bin/env python3
"""Run ``stackha analyze`` on every bundle and overlay of a bundle collection; count exit codes.

Usage::

    scripts/bundle_corpus.py CHECKOUT [--dirs stable development] [--timeout 60] [--show 2,70]

CHECKOUT is a work tree of a bundle collection such as openstack-charmers/openstack-bundles
(``git clone``, or ``git --git-dir=REPO archive HEAD stable development | tar -x -C DIR``).  Nothing
of the collection is copied into stackha: this script only reads it.

Every ``*.yaml``/``*.yml`` under the given directories is classified:

- an *overlay* (its name contains ``overlay``, or it lies in an ``overlays/`` directory) is analysed
  on top of a base: the ``bundle.yaml`` beside it; for ``<dir>/overlays/NAME-<series>-<release>.yaml``
  the ``openstack-base-<series>-<release>/bundle.yaml`` of that directory when there is one; else
  the ``stable/`` bundle its name starts with (``ceph-base``, ``openstack-telemetry``), else
  ``stable/openstack-base/bundle.yaml``;
- a *bundle* (a mapping with ``applications:`` or ``services:``) is analysed alone;
- anything else (``charmcraft.yaml``, ``tests.yaml``, …) is skipped and listed;
- a symlink to a file already analysed is counted once, as a duplicate: a bundle by the file it
  resolves to, an overlay by that file *and its base* (the collection links one spaces overlay
  into every ``openstack-base-*`` directory, meant for the bundle beside each link: each such
  pair is analysed).

Each analysis is a separate ``python -m stackha analyze`` process with a timeout.  The script
prints one line per file (exit code, seconds, file), the counts by exit code, and for the exit
codes given with ``--show`` (default 2 and anything outside 0/1/2) the first lines of stderr.
A traceback or a timeout is reported as such.  Exits 1 when any analysis printed a traceback,
timed out, or exited outside {0, 1, 2}.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml


def classify(path: Path) -> str:
    """"overlay", "bundle" or "skip:<reason>" for one YAML file of the collection."""
    if "overlay" in path.name or path.parent.name == "overlays":
        return "overlay"
    if path.name in ("tests.yaml", "charmcraft.yaml"):
        return f"skip:{path.name} is not a bundle"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8", errors="replace"))
    except yaml.YAMLError:
        return "bundle"  # let stackha report it
    if isinstance(data, dict) and ("applications" in data or "services" in data):
        return "bundle"
    return "skip:no applications"


def base_for(overlay: Path, root: Path) -> Path | None:
    """The bundle an overlay is analysed on (see the module docstring)."""
    beside = overlay.parent / "bundle.yaml"
    if beside.is_file():
        return beside
    m = re.search(r"-([a-z]+-[a-z]+)$", overlay.stem)
    if m:
        same = overlay.parent.parent / f"openstack-base-{m.group(1)}" / "bundle.yaml"
        if same.is_file():
            return same
    for prefix in ("ceph-base", "openstack-telemetry"):
        if overlay.stem.startswith(prefix) and (root / "stable" / prefix / "bundle.yaml").is_file():
            return root / "stable" / prefix / "bundle.yaml"
    default = root / "stable" / "openstack-base" / "bundle.yaml"
    return default if default.is_file() else None


def jobs(root: Path, dirs: list[str], counts: Counter[str]) -> list[tuple[str, list[Path]]]:
    """(label, [bundle] or [base, "--overlay", overlay]) for each analysis to run, in path order;
    skipped files and duplicates are counted in ``counts`` and skips printed."""
    files = sorted(p for d in dirs for p in (root / d).rglob("*")
                   if p.suffix in (".yaml", ".yml") and p.is_file())
    seen: set[tuple[Path, Path | None]] = set()
    out: list[tuple[str, list[Path]]] = []
    for path in files:
        rel = path.relative_to(root)
        kind = classify(path)
        base = base_for(path, root) if kind == "overlay" else None
        key = (path.resolve(), base.resolve() if base else None)
        if key in seen:
            counts["duplicate (symlink)"] += 1
            continue
        seen.add(key)
        if kind.startswith("skip:"):
            counts["skipped"] += 1
            print(f"skip  {rel} ({kind[5:]})")
        elif kind == "overlay" and base is None:
            counts["skipped"] += 1
            print(f"skip  {rel} (no base bundle for this overlay)")
        elif kind == "overlay":
            out.append((f"{base.relative_to(root)} --overlay {rel}", [base, Path("--overlay"), path]))
        else:
            out.append((str(rel), [path]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkout", type=Path)
    ap.add_argument("--dirs", nargs="+", default=["stable", "development"])
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per analysis")
    ap.add_argument("--show", default="2", help="exit codes whose stderr is printed (comma list)")
    args = ap.parse_args()
    root = args.checkout.resolve()
    show = {int(c) for c in args.show.split(",") if c}
    counts: Counter[str] = Counter()
    shown: list[tuple[str, str]] = []
    bad = 0
    for label, operands in jobs(root, args.dirs, counts):
        argv = [sys.executable, "-m", "stackha", "analyze", "--format", "json", *map(str, operands)]
        kind = "overlay" if len(operands) > 1 else "bundle"
        t0 = time.monotonic()
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout)
            code: str = str(r.returncode)
            err = r.stderr
        except subprocess.TimeoutExpired:
            code, err = "timeout", ""
        dt = time.monotonic() - t0
        if "Traceback" in err:
            code = f"{code}+traceback"
        if code not in ("0", "1", "2"):
            bad += 1
        counts[f"exit {code}"] += 1
        print(f"{code:>5} {dt:5.2f}s {kind:7} {label}")
        if code not in ("0", "1", "2") or (code.isdigit() and int(code) in show):
            shown.append((label, "\n".join(err.strip().splitlines()[:6])))
    print("\ncounts:", ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    for label, err in shown:
        print(f"\n--- {label}\n{err}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

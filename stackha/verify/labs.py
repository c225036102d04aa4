"""Helpers to put a second (third …) copy of a bundle's cloud on its own lab.

A lab leases the /24 its bundle's VIP lives in (``stackha.hosts.lab``), so two clouds from the same
bundle cannot run at once unless the VIP moves: :func:`vip_overlay` writes an overlay bundle that
moves every ``vip`` option to the same host part in another /24 of 198.18.0.0/15, and
:func:`free_vip_subnet` picks a /24 no lab holds (the lease files in ``/run/stackha/subnets``).
Used by bench/failover.py, bench/instanceha.py and the lab tests; :func:`with_clouds` is the
benchmarks' deploy → run → always tear down frame.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Callable, Iterable

import yaml

from stackha.hosts.lab import LAB_RANGE, LEASE_DIR, _subnet_index
from stackha.errors import UserError


def free_vip_subnet(first: int = 101, last: int = 199, avoid: set[int] = frozenset()) -> ipaddress.IPv4Network:
    """The first 198.18.K.0/24 with ``first`` ≤ K ≤ ``last`` that no lab leases (and K not in
    ``avoid``).  Raises :class:`UserError` when all are taken."""
    for k in range(first, last + 1):
        if k in avoid:
            continue
        net = ipaddress.IPv4Network((int(LAB_RANGE.network_address) + (k << 8), 24))
        if not (LEASE_DIR / str(_subnet_index(net))).exists():
            return net
    raise UserError(f"every /24 from 198.18.{first}.0 to 198.18.{last}.0 is leased by a lab")


def vip_overlay(bundle: Path, subnet: ipaddress.IPv4Network, dest: Path) -> Path:
    """Write to ``dest`` an overlay for ``bundle`` that moves every application's ``vip`` /
    ``virtual_ip`` option into ``subnet`` (same last octet); returns ``dest``.  Machines and
    everything else are left as they are.  Raises :class:`UserError` if the bundle has no VIP."""
    doc = yaml.safe_load(Path(bundle).read_text())
    apps = doc.get("applications") or doc.get("services") or {}
    overlay: dict = {"applications": {}}
    for name, app in apps.items():
        opts = (app or {}).get("options") or {}
        for key in ("vip", "virtual_ip"):
            if key in opts and opts[key]:
                moved = []
                for raw in str(opts[key]).split():
                    ip = ipaddress.IPv4Address(raw.split("/")[0])
                    moved.append(str(subnet.network_address + (int(ip) & 0xFF)))
                overlay["applications"].setdefault(name, {"options": {}})["options"][key] = " ".join(moved)
    if not overlay["applications"]:
        raise UserError(f"{bundle} declares no vip option to move")
    dest.write_text(yaml.safe_dump(overlay, sort_keys=False))
    return dest


def destroy_cloud(res: dict, say: Callable[[str], None]) -> None:
    """Tear down the lab of a benchmark cloud record (``{"tuning", "lab"}``): its deployment
    when one is recorded, else whatever of the lab exists.  Never raises: a failed teardown is
    reported through ``say``."""
    from stackha.cli import state_dir
    from stackha.engine.deploy import Deployment
    from stackha.hosts.lab import teardown

    prefix = res["lab"]
    say(f"{res['tuning']}: tearing down lab {prefix}")
    try:
        if Deployment.exists(prefix, state_dir()):
            Deployment(prefix, state_dir()).destroy()
        else:
            teardown(prefix, state_dir())
    except Exception as exc:
        say(f"teardown of {prefix} failed: {exc}")


def with_clouds(tunings: Iterable[str], make: Callable[[str], dict], run: Callable[[dict], None], *,
                keep: bool, say: Callable[[str], None]) -> dict[str, dict]:
    """The benchmarks' frame (bench/failover.py, bench/instanceha.py): ``make(tuning)`` deploys
    one cloud per tuning and returns its record (``error`` set when the deploy failed), then
    ``run(records)`` when every deploy worked; every lab is torn down at the end — also on
    failure or Ctrl-C (recorded as ``error: interrupted``) — unless ``keep``.  Returns the
    records."""
    clouds: dict[str, dict] = {}
    try:
        for tuning in tunings:
            clouds[tuning] = make(tuning)
        if not any("error" in r for r in clouds.values()):
            run(clouds)
    except KeyboardInterrupt:
        for r in clouds.values():
            r.setdefault("error", "interrupted")
        raise
    finally:
        if not keep:
            for r in clouds.values():
                destroy_cloud(r, say)
    return clouds

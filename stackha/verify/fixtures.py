"""Objects the compute probes and Tempest need in the deployed cloud, made once and found again.

:func:`compute_fixtures` makes, through the VIP with the real ``openstack`` CLI on the client host
(idempotent by name): a 1 MiB raw image ``stackha-image`` (random bytes: with the fake driver no
guest boots from it), flavors ``stackha.small`` and ``stackha.alt`` (64 MiB, 1 vCPU, 1 GB: Tempest
needs two), and a flat network ``stackha-net`` on ``physnet1`` with a subnet in 198.19.0.0/24 (a
lab-range value in Neutron's database; no traffic ever uses it).
"""

from __future__ import annotations

import json
import secrets

from stackha.engine.clouds import openstack_argv
from stackha.errors import UserError

IMAGE = "stackha-image"
FLAVORS = ("stackha.small", "stackha.alt")
NETWORK = "stackha-net"
SUBNET_RANGE = "198.19.0.0/24"
PHYSNET = "physnet1"


class FixtureError(UserError):
    """A fixture could not be made (the message names it and gives the client's error)."""


def _cli(d, *args: str, timeout: float = 180):
    res = d.client.run(openstack_argv(d.name, *args, "-f", "json"), timeout=timeout)
    return res, (json.loads(res.stdout) if res.ok and res.stdout.strip() else None)


def _show_or_make(d, what: str, show: list[str], make: list[str], timeout: float = 180) -> dict:
    res, obj = _cli(d, *show)
    if obj is not None:
        return obj
    res, obj = _cli(d, *make, timeout=timeout)
    if obj is None:
        raise FixtureError(f"cannot create {what}: {(res.stderr or res.stdout).strip()[-300:]}")
    return obj


def compute_fixtures(d) -> dict:
    """Make (or find) the fixtures; returns ``{"image", "checksum", "flavors": [id, id],
    "network"}`` (ids).  Raises :class:`FixtureError`."""
    path = "/srv/stackha/verify/stackha-image.raw"
    res, img = _cli(d, "image", "show", IMAGE)
    if img is None or img.get("status") != "active":
        if img is not None:
            d.client.run(openstack_argv(d.name, "image", "delete", img["id"]), timeout=120)
        d.client.run(["mkdir", "-p", "/srv/stackha/verify"], check=True)
        d.client.write_file(path, secrets.token_bytes(1 << 20))
        res, img = _cli(d, "image", "create", "--disk-format", "raw", "--container-format", "bare",
                        "--public", "--file", path, IMAGE, timeout=300)
        if img is None:
            raise FixtureError(f"cannot upload image {IMAGE}: {(res.stderr or res.stdout).strip()[-300:]}")
        from stackha.polling import WaitTimeout, wait_until

        try:
            img = wait_until(lambda: (lambda i: i if i and i.get("status") == "active" else None)(
                _cli(d, "image", "show", img["id"])[1]), 120, 1.0, what=f"image {IMAGE} active")
        except WaitTimeout as exc:
            raise FixtureError(str(exc)) from None
    flavors = [_show_or_make(d, f"flavor {f}", ["flavor", "show", f],
                             ["flavor", "create", "--ram", "64", "--disk", "1", "--vcpus", "1", "--public", f])["id"]
               for f in FLAVORS]
    net = _show_or_make(d, f"network {NETWORK}", ["network", "show", NETWORK],
                        ["network", "create", "--provider-network-type", "flat",
                         "--provider-physical-network", PHYSNET, NETWORK])
    _show_or_make(d, f"subnet of {NETWORK}", ["subnet", "show", NETWORK + "-subnet"],
                  ["subnet", "create", "--network", net["id"], "--subnet-range", SUBNET_RANGE, "--no-dhcp",
                   NETWORK + "-subnet"])
    return {"image": img["id"], "checksum": img["checksum"], "flavors": flavors, "network": net["id"]}

"""The lab as a :class:`~stackha.hosts.provider.Provider`: one lab per deployment.

The lab's prefix is the deployment's name.  :meth:`LabProvider.ensure` creates the lab on the /24
of the bundle's VIPs (README "The lab": one /24 per lab, VIPs in .200–.254) if it is missing,
then a host per bundle machine (``<prefix>-m0`` …), containers on their machine
(``<prefix>-m1lxd0``, failure domain machine 1), and the client host ``<prefix>-client``.
``teardown`` removes every trace of the lab (:func:`stackha.hosts.lab.teardown`).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Callable, Mapping, Sequence

from stackha.errors import InvalidInput
from stackha.hosts.lab import LAB_RANGE, VIP_FIRST, VIP_LAST, Lab, lab_dir, require_root, teardown, validate_prefix
from stackha.hosts.provider import CLIENT_HOST, MachineSpec, Provider


def host_suffix(host_key: str) -> str:
    """The lab host name (after ``<prefix>-``) for a bundle machine or container.

    ``"0"`` → ``m0``; ``"1/lxd/0"`` → ``m1lxd0``; ``"new:keystone/0"`` → ``nkeystone0``.
    """
    if host_key.startswith("new:"):
        return ("n" + re.sub(r"[^a-z0-9]", "", host_key[4:].lower()))[:16]
    return ("m" + re.sub(r"[^a-z0-9]", "", host_key.lower()))[:16]


def check_lab_fit(name: str, vips: Mapping[str, ipaddress.IPv4Interface], lab_subnet: ipaddress.IPv4Network) -> None:
    """Refuse VIPs outside the lab's /24 or in its hosts' range (:class:`InvalidInput` naming the
    application's ``vip`` option)."""
    for app, vip in vips.items():
        if vip.ip not in lab_subnet:
            raise InvalidInput(
                f"applications.{app}.options.vip: {vip.ip} is outside lab {name}'s subnet {lab_subnet}; "
                f"use an address in {lab_subnet} from .{VIP_FIRST} to .{VIP_LAST}")
        if not VIP_FIRST <= int(vip.ip) - int(lab_subnet.network_address) <= VIP_LAST:
            raise InvalidInput(
                f"applications.{app}.options.vip: {vip.ip} is in the lab's host range; "
                f"use .{VIP_FIRST} to .{VIP_LAST} of {lab_subnet}")


def wanted_subnet(vips: Mapping[str, ipaddress.IPv4Interface]) -> str | None:
    """The /24 the VIPs live in (the lab to create), or None without VIPs.  :class:`InvalidInput`
    when they span several /24s or lie outside 198.18.0.0/15."""
    nets = {ipaddress.IPv4Network(f"{v.ip}/24", strict=False) for v in vips.values()}
    if len(nets) > 1:
        raise InvalidInput(f"the bundle's VIPs span several /24s ({', '.join(map(str, sorted(nets)))}); a lab has one")
    if not nets:
        return None
    net = nets.pop()
    if not net.subnet_of(LAB_RANGE):
        vip_app = next(iter(vips))
        raise InvalidInput(f"applications.{vip_app}.options.vip: lab addresses must be in {LAB_RANGE}")
    return str(net)


class LabProvider(Provider):
    """Deployment ``name`` on the lab of the same prefix, recorded under ``state_dir``."""

    kind = "lab"

    def __init__(self, name: str, state_dir: Path):
        self.name = name
        self.state_dir = Path(state_dir)
        self._lab: Lab | None = None

    # ----------------------------------------------------------------- the lab
    @property
    def lab(self) -> Lab:
        """The lab (loaded on first use; :class:`UserError` if it was never created)."""
        if self._lab is None:
            self._lab = Lab.load(self.name, self.state_dir)
        return self._lab

    def exists(self) -> bool:
        return (lab_dir(self.state_dir, self.name) / "lab.json").exists()

    def describe(self) -> str:
        return f"lab {self.name}"

    def record(self) -> dict:
        return {"kind": self.kind}

    def require_privileges(self) -> None:
        require_root()

    # ----------------------------------------------------------------- Provider
    def check(self, machines: Sequence[MachineSpec], vips: Mapping[str, ipaddress.IPv4Interface]) -> None:
        validate_prefix(self.name)
        if self.exists():
            check_lab_fit(self.name, vips, self.lab.subnet)
        else:
            wanted_subnet(vips)

    def host_name(self, key: str) -> str:
        return f"{self.name}-{host_suffix(key)}"

    def ensure(self, machines: Sequence[MachineSpec], vips: Mapping[str, ipaddress.IPv4Interface],
               progress: Callable[[str], None] = lambda s: None) -> list[str]:
        created: list[str] = []
        if not self.exists():
            progress(f"creating lab {self.name}")
            self._lab = Lab.create(self.name, 0, state_dir=self.state_dir, subnet=wanted_subnet(vips))
        lab = self.lab
        check_lab_fit(self.name, vips, lab.subnet)
        # Machines first, then containers on them.
        for spec in sorted(machines, key=lambda m: m.parent is not None):
            parent = self.host_name(spec.parent) if spec.parent else None
            if parent and parent not in lab.hosts:
                lab.add_host(host_suffix(spec.parent))
                created.append(parent)
            name = self.host_name(spec.key)
            if name not in lab.hosts:
                progress(f"creating host {name}")
                lab.add_host(host_suffix(spec.key), parent=parent)
                created.append(name)
        if f"{self.name}-{CLIENT_HOST}" not in lab.hosts:
            lab.add_host(CLIENT_HOST)
            created.append(f"{self.name}-{CLIENT_HOST}")
        return created

    def host(self, key: str):
        return self.lab.host(self.host_name(key))

    def client(self):
        return self.lab.host(CLIENT_HOST)

    def hosts(self) -> dict:
        return self.lab.hosts

    def teardown(self) -> list[str]:
        self._lab = None
        return teardown(self.name, self.state_dir)

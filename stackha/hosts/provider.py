"""The Provider interface: where a cloud's machines come from.

A provider ensures the machines a bundle needs exist (the lab creates them) or are reachable (SSH
checks them), hands out their :class:`~stackha.hosts.base.Host` objects, and tears down what it
made.  The engine talks to this interface only (DESIGN.md: "Nothing above hosts/ may know which
provider it runs on"); the engine records :meth:`Provider.record` in its state store and
:func:`open_provider` rebuilds the same provider from it for ``status``, ``verify``, ``destroy``.

Implementations:

- ``lab`` — :class:`stackha.hosts.labprovider.LabProvider`: one lab per deployment (its prefix is
  the deployment's name), hosts created on demand, torn down completely by ``destroy``;
- ``ssh`` — :class:`stackha.hosts.ssh.SshProvider`: real machines named by an inventory
  (:mod:`stackha.hosts.inventory`), reached over SSH, powered through their BMCs.
"""

from __future__ import annotations

import abc
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Mapping, Sequence

from stackha.errors import UserError
from stackha.hosts.base import Host

CLIENT_HOST = "client"


def default_state_dir() -> Path:
    """``$STACKHA_STATE_DIR`` or ``/var/lib/stackha``: where labs and deployments are recorded."""
    return Path(os.environ.get("STACKHA_STATE_DIR", "/var/lib/stackha"))


@dataclass(frozen=True)
class MachineSpec:
    """One host a bundle needs.

    ``key``: its placement key as the model names it (``"0"``, ``"1/lxd/0"``, ``"new:keystone/0"``);
    ``machine``: the key of the physical machine it runs on (itself, or N for ``N/lxd/M``);
    ``parent``: for a container, the key of the machine it sits on (its failure domain), else None.
    """

    key: str
    machine: str
    parent: str | None = None


class Provider(abc.ABC):
    """A source of machines for deployment ``name`` (see the module docstring).

    Errors: refusals are :class:`stackha.errors.UserError` / ``InvalidInput`` with one line naming
    the field or the machine and the fix; a machine that fails while in use raises
    :class:`stackha.hosts.base.HostError`.
    """

    #: ``lab`` or ``ssh``: the ``kind`` of :meth:`record`.
    kind: ClassVar[str]
    name: str

    @abc.abstractmethod
    def check(self, machines: Sequence[MachineSpec], vips: Mapping[str, ipaddress.IPv4Interface]) -> None:
        """Refuse what cannot work before anything changes: VIPs (``{application: VIP}``) the
        machines cannot carry, machines the provider cannot give.  Touches nothing; raises
        ``InvalidInput`` / ``UserError`` with one line naming the field or machine."""

    def require_privileges(self) -> None:
        """Raise :class:`UserError` unless this process may use the provider (the lab needs root;
        SSH needs nothing locally)."""

    @abc.abstractmethod
    def ensure(self, machines: Sequence[MachineSpec], vips: Mapping[str, ipaddress.IPv4Interface],
               progress: Callable[[str], None] = lambda s: None) -> list[str]:
        """Make every machine plus the client host exist and answer (after :meth:`check` with the
        same arguments); returns the names of the hosts it created (empty when all were there).
        Idempotent; ``progress`` is called with short messages as hosts appear."""

    @abc.abstractmethod
    def host_name(self, key: str) -> str:
        """The name of the host for placement key ``key`` (pure: nothing is contacted)."""

    @abc.abstractmethod
    def host(self, key: str) -> Host:
        """The host for placement key ``key``.  Raises :class:`UserError` if there is none."""

    @abc.abstractmethod
    def client(self) -> Host:
        """The host probes and clients run from (never part of the cloud)."""

    @abc.abstractmethod
    def hosts(self) -> dict[str, Host]:
        """Every host the provider has for this deployment, client included, by name."""

    @abc.abstractmethod
    def record(self) -> dict:
        """A JSON-able description from which :func:`open_provider` rebuilds this provider
        (``{"kind": …, …}``; never a secret)."""

    @abc.abstractmethod
    def teardown(self) -> list[str]:
        """Undo what the provider made (the lab: every namespace, cgroup and disk; SSH: the
        daemons stackha started).  Idempotent; returns what it removed, for messages."""

    def exists(self) -> bool:
        """True if the provider's machines are there already (a lab that was created)."""
        return True

    def close(self) -> None:
        """Release what the provider holds open (SSH connections).  Idempotent."""

    def describe(self) -> str:
        """A short phrase for messages: ``lab demo``, ``3 machines over SSH``."""
        return f"{self.kind} {self.name}"


def host_named(provider: Provider, name: str) -> Host:
    """The host called ``name`` of ``provider``; :class:`UserError` naming the known ones otherwise."""
    hosts = provider.hosts()
    if name in hosts:
        return hosts[name]
    raise UserError(f"{provider.describe()} has no host {name!r}; its hosts: {', '.join(sorted(hosts)) or 'none'}")


def open_provider(record: Mapping | None, name: str, state_dir: Path) -> Provider:
    """The provider a deployment recorded (:meth:`Provider.record`); ``None`` — a deployment made
    before providers were recorded — is the lab.  Raises :class:`UserError` for an unknown kind."""
    kind = (record or {}).get("kind", "lab")
    if kind == "lab":
        from stackha.hosts.labprovider import LabProvider

        return LabProvider(name, state_dir)
    if kind == "ssh":
        from stackha.hosts.ssh import SshProvider

        return SshProvider.from_record(dict(record or {}), name, state_dir)
    raise UserError(f"deployment {name!r} records an unknown machine provider {kind!r}; deploy it again")

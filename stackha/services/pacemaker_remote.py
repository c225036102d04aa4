"""Pacemaker Remote on compute hosts: the ``pacemaker-remote`` subordinate (seed 004's overlay).

Seed 004 wires ``nova-compute:juju-info`` ↔ ``pacemaker-remote:juju-info`` and
``hacluster:pacemaker-remote`` ↔ ``pacemaker-remote:pacemaker-remote``: each compute host runs
``pacemaker-remoted`` and becomes a *remote node* of the controllers' Pacemaker cluster — it does
not vote in Corosync (a cluster of dozens of compute hosts would otherwise lose quorum easily),
it is watched through its connection resource (``ocf:pacemaker:remote``, on a cluster node) and,
when that connection is lost, fenced by the cluster's STONITH (its ``fence-<host>`` device, then
the force-down device: :mod:`stackha.services.pacemaker`).  masakari-hostmonitor on the cluster
nodes reads the remote nodes' states from ``crm_mon -X`` (:mod:`stackha.services.masakari_monitors`).

This operator runs the daemon; the hacluster operator owns everything in the CIB.

- **Binary**: ``/usr/sbin/pacemaker-remoted`` (Debian's ``pacemaker-remote`` package, on a real
  compute host).  Debian's package Conflicts with ``pacemaker``, which the lab's controllers need
  from the same /usr: ``scripts/setup.sh`` unpacks the package's one binary into
  ``/opt/stackha/pacemaker-remote`` (it runs on pacemaker 2.1.5's libraries) and the lab uses that.
- **Key**: the cluster's TLS pre-shared key (``PCMK_authkey_location`` =
  :data:`stackha.services.pacemaker.REMOTE_AUTHKEY`, 0640 root:haclient; 256 random characters
  from the hacluster application's secret store, the same bytes on every node — not
  ``/etc/pacemaker/authkey``, which lab hosts share with the machine).
- **Port** 3121/tcp on every address of the host.

``apply`` starts the daemon where it does not run (``host.spawn``, daemon name
``pacemaker-remoted``; restarts it when the key changed); ``recover`` does the same on hosts that
are on again after a fence.  ``observe``: the daemon runs, and the node's state in the cluster's
quorate view (``online`` once a cluster node holds its connection).
"""

from __future__ import annotations

from typing import Any

from stackha.errors import InvalidInput
from stackha.hosts.base import HostDown, HostError
from stackha.services import pacemaker as pcmk
from stackha.services.base import (
    AppContext,
    AppStatus,
    BaseOperator,
    RenderedFile,
    Unit,
    UnitStatus,
    WorkloadState,
    apply_where_on,
    install_files,
    log_tail,
)

KIND = pcmk.REMOTE_KIND
DAEMON = "pacemaker-remoted"
#: Where the binary is looked for, in order (module docstring).
BINARIES = ("/usr/sbin/pacemaker-remoted", "/opt/stackha/pacemaker-remote/usr/sbin/pacemaker-remoted")
ENV = {"PCMK_logfile": pcmk.PACEMAKER_LOG, "PCMK_logfacility": "none",
       "PCMK_authkey_location": pcmk.REMOTE_AUTHKEY}


class PacemakerRemoteOperator(BaseOperator):
    """Operator of kind ``pacemaker-remote`` (see the module docstring).  No options."""

    kind = KIND

    def cluster(self, app: AppContext) -> AppContext:
        """The related hacluster application; InvalidInput naming the missing relation."""
        found = sorted(app.related_of_kind(pcmk.KIND), key=lambda a: a.name)
        if not found:
            raise InvalidInput(f"applications.{app.name}: a pacemaker-remote needs its cluster: add the relation "
                               f"`- [hacluster:pacemaker-remote, {app.name}:pacemaker-remote]`")
        return found[0]

    def render(self, app: AppContext) -> dict[str, dict[str, RenderedFile]]:
        """``{unit: {path: file}}``: the cluster's remote key on every unit.  Pure."""
        key = self.cluster(app).secrets.get(pcmk.REMOTE_AUTHKEY_SECRET, length=pcmk.REMOTE_AUTHKEY_LENGTH)
        return {u.name: {pcmk.REMOTE_AUTHKEY: RenderedFile(key, mode=0o640, group="haclient")} for u in app.units}

    def binary(self, unit: Unit) -> str:
        """The pacemaker-remoted path on ``unit``'s host; InvalidInput when it has none."""
        for path in BINARIES:
            if unit.host.exists(path):
                return path
        raise InvalidInput(f"{unit.name}: no pacemaker-remoted on {unit.host.name}: install Debian's pacemaker-remote "
                           f"(in the lab, run scripts/setup.sh, which unpacks it into /opt/stackha/pacemaker-remote)")

    def _converge(self, app: AppContext, units: list[Unit]) -> list[str]:
        rendered = self.render(app)
        changes: list[str] = []
        for unit in units:
            host = unit.host
            host.run(["mkdir", "-p", pcmk.CONFIG_DIR], check=True)
            changed = install_files(host, rendered[unit.name])
            changes += [f"{unit.name}: {p}" for p in changed]
            if changed and host.daemon(DAEMON) is not None:
                host.stop(DAEMON)
                changes.append(f"{unit.name}: stopped pacemaker-remoted (its key changed)")
            if host.daemon(DAEMON) is None:
                host.spawn(DAEMON, [self.binary(unit)], env=ENV)
                changes.append(f"{unit.name}: started pacemaker-remoted on {host.name}")
        return changes

    def apply(self, app: AppContext) -> list[str]:
        """Install the key and run pacemaker-remoted on every unit (idempotent: [] when nothing
        changed).  Units on powered-off hosts are skipped, then :class:`HostDown` names them."""
        return apply_where_on(app, lambda up: self._converge(app, up))

    def recover(self, app: AppContext) -> list[str]:
        """pacemaker-remoted again on hosts that are on (after a fence and a power-on); the
        cluster reconnects within its ``reconnect_interval``."""
        return self._converge(app, [u for u in app.units if u.host.is_on()])

    def observe(self, app: AppContext) -> AppStatus:
        """Per unit: ``error`` host off; ``blocked`` daemon not running; ``waiting`` the cluster
        has not connected (or has no quorate view); ``active`` online as a remote node.  Fact
        ``node``: the node's state in the cluster's view."""
        cluster = self.cluster(app)
        view = pcmk.HAClusterOperator().best_view(cluster)
        units = [self._unit(u, view) for u in app.units]
        return AppStatus(app=app.name, units=units, facts={"cluster": cluster.name})

    def _unit(self, unit: Unit, view: pcmk.ClusterView | None) -> UnitStatus:
        node = pcmk.node_name(unit)
        facts: dict[str, Any] = {}
        state = view.nodes[node].state if view is not None and node in view.nodes else None
        if state is not None:
            facts["node"] = state
        try:
            if not unit.host.is_on():
                return UnitStatus(unit.name, WorkloadState.ERROR, f"host {unit.host.name} is powered off", facts)
            if unit.host.daemon(DAEMON) is None:
                return UnitStatus(unit.name, WorkloadState.BLOCKED,
                                  f"pacemaker-remoted is not running: {log_tail(unit.host, DAEMON, 2)}", facts)
        except HostDown:
            return UnitStatus(unit.name, WorkloadState.ERROR, f"host {unit.host.name} is powered off", facts)
        except HostError as exc:
            return UnitStatus(unit.name, WorkloadState.UNKNOWN, f"cannot observe: {exc}", facts)
        if view is None or not view.quorum:
            return UnitStatus(unit.name, WorkloadState.WAITING, "pacemaker-remoted runs; no quorate cluster view", facts)
        if state != "online":
            return UnitStatus(unit.name, WorkloadState.WAITING,
                              f"pacemaker-remoted runs; the cluster sees the node {state or 'not yet'}", facts)
        return UnitStatus(unit.name, WorkloadState.ACTIVE, "online as a Pacemaker Remote node", facts)

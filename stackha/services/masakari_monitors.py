"""masakari-hostmonitor and -processmonitor: the ``masakari-monitors`` subordinate (seed 004).

Seed 004 relates ``nova-compute:juju-info`` ↔ ``masakari-monitors:container`` and
``keystone:identity-credentials`` ↔ ``masakari-monitors``.  Debian's ``masakari-hostmonitor``
(masakari-monitors 14.0.0) reads the Pacemaker cluster's view every ``monitoring_interval`` with
``crm_mon -X`` and posts a ``COMPUTE_HOST`` notification (event STOPPED) to masakari-api for every
Pacemaker Remote node (``restrict_to_remotes = True``) it sees go offline; LAB-NOTES "Masakari".
Every host monitor posts one; Masakari keeps the first and answers 409 to the others, which stop.

**Where the host monitor runs**: on the nodes of the Pacemaker cluster whose remote nodes are the
compute hosts (``pacemaker_node_type = cluster``; its corosync heartbeat checked with tcpdump on
knet's port), not on the compute hosts.  On a compute host, crm_mon reaches the CIB through
pacemaker-remoted's proxy, so every read sends the whole CIB over that host's TLS connection.
With the monitors there (every 2 s on each compute host), 2 of 7 lab power-offs hung the cluster
node holding the lost host's connection — pacemaker-controld stopped answering, pacemakerd killed
it after 34 s — and the fence came 57 s after the power-off, or, once, never.  A CIB reply in
flight to the dead host is the likely trigger (not proven); on the cluster nodes crm_mon is local,
the remote connections carry only Pacemaker's own traffic, and the hang has not recurred since
(tests/lab/test_instance_ha_monitors_lab.py, ``stackha verify``).  Compute hosts in no cluster stackha knows get
the host monitor themselves (``pacemaker_node_type = remote``).

Settings, and why (the hostmonitor's own code, masakarimonitors/hostmonitor/host_handler):

- ``disable_ipmi_check = True``: without it the monitor reports ``host_status`` NORMAL only when
  ``ipmitool power status`` of an ``external/ipmi`` stonith primitive says off, and UNKNOWN —
  which the engine ignores — otherwise.  stackha's fence devices are ``fence_*`` agents in a
  fencing level (power, then Nova force-down), so the monitor cannot ask them.
- The monitor reports a node once crm_mon shows it offline, which can be *before* the fence has
  finished (an UNCLEAN node is offline too).  The order "fence, then evacuate" is kept by Nova and
  by the engine, not by the monitor: the force-down device runs only after the power fence
  succeeded, Nova refuses to evacuate from a host whose service is not down, and stackha's
  engine flow waits for that (:mod:`stackha.services.openstack.masakari`).
- Credentials: Keystone user ``masakari-monitors`` (admin in project ``service``, made by the
  identity provider at apply), its password from the keystone application's secret store.
- The monitors run as root in their host, so privsep's helper runs without sudo.

Timers (``app.tuning``):

=========================== ======= ======= ============================================
option                      stock   stackha why
=========================== ======= ======= ============================================
``monitoring_interval``     60      2       seconds between two crm_mon reads (plus the
                                            heartbeat check: tcpdump until one corosync
                                            packet)
``api_retry_interval``      10      1       a notification that failed (masakari-api
``api_retry_max``           12      60      unreachable) is retried this often, this many
                                            times
``monitoring_samples``      1       1       equal reads before a change is believed
=========================== ======= ======= ============================================

**masakari-processmonitor** watches the host's nova-compute (a substring of its command line in
``ps -ef``, every ``check_interval``) and restarts it with ``restart_command`` up to
``restart_retries`` times, then posts a PROCESS notification (Masakari then disables the host's
compute service).  Its start and restart command is a launcher stackha renders
(:func:`stackha.hosts.base.launcher_script`): it starts the daemon exactly as stackha's own
``spawn`` (same pidfile, start-time record and log), and does nothing when it already runs —
processmonitor runs every start command when it starts — so the restarted nova-compute is the
daemon ``stackha status`` and ``recover`` know.  Debian's process list (systemctl commands,
/usr/local/bin paths) does not apply; stackha writes its own.  [process] timers: stock 5 s check,
5 s between restarts; stackha 1 s and 2 s.

masakari-instancemonitor is not run: the lab's compute hosts use Nova's fake driver, which has no
libvirt domain events for it to watch (a VM notification in its schema is posted with the real
client instead: tests/lab/test_instance_ha_lab.py).
"""

from __future__ import annotations

from typing import Any

import yaml

from stackha.errors import InvalidInput
from stackha.hosts.base import HostDown, HostError
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
    provider,
    render_template,
    select_tuning,
)

KIND = "masakari-monitors"
USER = "masakari-monitors"
CONF = "/etc/masakarimonitors/masakarimonitors.conf"
LOG_DIR = "/var/log/masakari"
HOSTMONITOR = "masakari-hostmonitor"
PROCESSMONITOR = "masakari-processmonitor"
PROCESS_LIST = "/etc/masakarimonitors/process_list.yaml"
BIN_DIR = "/srv/masakari-monitors/bin"
COROSYNC_PORT = 5405  # knet's default UDP port: the host monitor checks the cluster's heartbeat on it

#: ``[process]`` timers per tuning (module docstring).
PROCESS_TIMERS = {
    "stock": {"check_interval": 5, "restart_retries": 3, "restart_interval": 5, "api_retry_max": 12,
              "api_retry_interval": 10},
    "stackha": {"check_interval": 1, "restart_retries": 3, "restart_interval": 2, "api_retry_max": 60,
                "api_retry_interval": 1},
}

#: ``[host]`` timers per tuning (module docstring).
TIMERS = {
    "stock": {"monitoring_interval": 60, "monitoring_samples": 1, "api_retry_max": 12, "api_retry_interval": 10},
    "stackha": {"monitoring_interval": 2, "monitoring_samples": 1, "api_retry_max": 60, "api_retry_interval": 1},
}


class MasakariMonitorsOperator(BaseOperator):
    """Operator of kind ``masakari-monitors`` (see the module docstring).  No options."""

    kind = KIND

    def identity(self, app: AppContext) -> tuple[AppContext, Any]:
        """The related identity provider; InvalidInput naming the missing relation."""
        found = provider(app, "identity")
        if found is None:
            raise InvalidInput(f"applications.{app.name}: masakari-monitors posts notifications as a Keystone user: "
                               f"add `- [keystone:identity-credentials, {app.name}:identity-credentials]`")
        return found

    def watched(self, app: AppContext, unit: Unit) -> list[tuple[str, list[str], str, str]]:
        """The daemons masakari-processmonitor watches on ``unit``'s host: the workers of the
        nova-compute unit there, as ``(daemon name, argv, user, cwd)``."""
        from stackha.services import operator_for

        out = []
        for nova in sorted(app.related_of_kind("nova-compute"), key=lambda a: a.name):
            op = operator_for(nova.kind)
            for nu in (u for u in nova.units if u.host.name == unit.host.name):
                d = op.descriptor
                out += [(w.name, list(w.argv), w.user or d.user, d.state_dir) for w in op.workers_on(nova, nu)]
        return out

    def cluster_nodes(self, app: AppContext) -> list[Unit]:
        """The nodes (hacluster units) of the Pacemaker cluster whose remote nodes are this
        application's compute hosts (nova-compute → pacemaker-remote → hacluster); [] without one."""
        from stackha.services import pacemaker as pcmk

        found: dict[str, Unit] = {}
        for nova in app.related_of_kind("nova-compute"):
            for remote in nova.related_of_kind(pcmk.REMOTE_KIND):
                for ha in remote.related_of_kind(pcmk.KIND):
                    found.update({u.name: u for u in ha.units})
        return [found[k] for k in sorted(found)]

    def hostmonitor_units(self, app: AppContext) -> list[Unit]:
        """Where masakari-hostmonitor runs (module docstring): the cluster's nodes, or — for compute
        hosts in no cluster stackha knows — the compute hosts themselves."""
        return self.cluster_nodes(app) or list(app.units)

    def _conf(self, app: AppContext, unit: Unit, node_type: str) -> RenderedFile:
        from stackha.services.openstack.operator import REGION

        id_app, id_op = self.identity(app)
        auth = {"auth_url": id_op.auth_url(id_app), "username": USER,
                "password": id_app.secrets.get(f"service-{USER}"), "project_name": "service",
                "user_domain_name": "Default", "project_domain_name": "Default", "region": REGION}
        return RenderedFile(render_template(
            "masakari_monitors/masakarimonitors.conf.j2", unit=unit.name, log_dir=LOG_DIR, auth=auth,
            timers=select_tuning(TIMERS, app.tuning), process_timers=select_tuning(PROCESS_TIMERS, app.tuning),
            process_list=PROCESS_LIST, tuning=app.tuning, conf=CONF, node_type=node_type,
            interface=getattr(unit.host, "vip_interface", "eth0"), corosync_port=COROSYNC_PORT), mode=0o600)

    def render(self, app: AppContext) -> dict[str, dict[str, RenderedFile]]:
        """``{unit: {path: file}}`` for the compute hosts: the config (0600), the process list and,
        per watched daemon, its launcher (:func:`stackha.hosts.base.launcher_script`:
        processmonitor's start and restart command, so a restarted nova-compute is the one stackha
        tracks).  Pure.  The host monitors' files are :meth:`render_hostmonitors`'."""
        from stackha.hosts.base import launcher_script

        out: dict[str, dict[str, RenderedFile]] = {}
        for u in app.units:
            files = {CONF: self._conf(app, u, "remote")}
            entries = []
            for name, argv, user, cwd in self.watched(app, u):
                path = f"{BIN_DIR}/start-{name}"
                files[path] = RenderedFile(launcher_script(name, argv, user=user, cwd=cwd), mode=0o755)
                # processmonitor matches a substring of `ps -ef`: the daemon's own command line
                entries.append({"process_name": " ".join(argv), "start_command": path, "pre_start_command": "",
                                "post_start_command": "", "restart_command": path, "pre_restart_command": "",
                                "post_restart_command": "", "run_as_root": True})
            files[PROCESS_LIST] = RenderedFile(
                "# Rendered by stackha: the daemons masakari-processmonitor watches and restarts.\n"
                + yaml.safe_dump(entries, sort_keys=False))
            out[u.name] = files
        return out

    def render_hostmonitors(self, app: AppContext) -> dict[str, dict[str, RenderedFile]]:
        """``{unit: {CONF: file}}`` for :meth:`hostmonitor_units` (cluster nodes read crm_mon
        locally: ``pacemaker_node_type = cluster``).  Pure."""
        node_type = "cluster" if self.cluster_nodes(app) else "remote"
        return {u.name: {CONF: self._conf(app, u, node_type)} for u in self.hostmonitor_units(app)}

    def _converge(self, app: AppContext, units: list[Unit]) -> list[str]:
        """Files and daemons on ``units`` (compute hosts that are on: processmonitor) and on every
        host monitor host that is on."""
        own = {u.name: u for u in units}
        work: dict[str, tuple[Unit, dict[str, RenderedFile], list[str]]] = {}
        for name, files in self.render(app).items():
            if name in own:
                work[own[name].host.name] = (own[name], files, [PROCESSMONITOR])
        hm_files = self.render_hostmonitors(app)
        for u in self.hostmonitor_units(app):
            if u.host.is_on():
                unit, files, daemons = work.get(u.host.name, (u, {}, []))
                work[u.host.name] = (unit, {**files, **hm_files[u.name]}, daemons + [HOSTMONITOR])
        changes: list[str] = []
        for unit, files, daemons in work.values():
            host = unit.host
            host.run(["mkdir", "-p", LOG_DIR], check=True)
            changed = install_files(host, files)
            changes += [f"{unit.name}: {p}" for p in changed]
            for daemon in daemons:
                if changed and host.daemon(daemon) is not None:
                    host.stop(daemon)
                if host.daemon(daemon) is None:
                    host.spawn(daemon, [f"/usr/bin/{daemon}", f"--config-file={CONF}"])
                    changes.append(f"{unit.name}: started {daemon} on {host.name}")
        return changes

    def apply(self, app: AppContext) -> list[str]:
        """The Keystone user, the files and running monitors (idempotent).  Units on powered-off
        hosts are skipped, then :class:`HostDown` names them."""
        id_app, id_op = self.identity(app)
        changes = list(id_op.ensure_service(id_app, USER, [])[1])
        return changes + apply_where_on(app, lambda up: self._converge(app, up))

    def recover(self, app: AppContext) -> list[str]:
        """The monitors again on hosts that are on."""
        return self._converge(app, [u for u in app.units if u.host.is_on()])

    def observe(self, app: AppContext) -> AppStatus:
        """Per unit (compute host): ``error`` host off, ``blocked`` its processmonitor — or the
        host monitor on a cluster node that is on — is not running, else ``active``.  Fact
        ``hostmonitors``: {host: running | not running | off}."""
        hostmonitors: dict[str, str] = {}
        for u in self.hostmonitor_units(app):
            try:
                hostmonitors[u.host.name] = ("off" if not u.host.is_on() else
                                             "running" if u.host.daemon(HOSTMONITOR) else "not running")
            except HostError:
                hostmonitors[u.host.name] = "off"
        missing_hm = [h for h, st in hostmonitors.items() if st == "not running"]
        units = []
        for u in app.units:
            try:
                if not u.host.is_on():
                    units.append(UnitStatus(u.name, WorkloadState.ERROR, f"host {u.host.name} is powered off"))
                elif u.host.daemon(PROCESSMONITOR) is None:
                    units.append(UnitStatus(u.name, WorkloadState.BLOCKED, f"{PROCESSMONITOR} is not running: "
                                            f"{log_tail(u.host, PROCESSMONITOR, 2)}"))
                elif missing_hm:
                    units.append(UnitStatus(u.name, WorkloadState.BLOCKED,
                                            f"masakari-hostmonitor is not running on {', '.join(missing_hm)}"))
                else:
                    units.append(UnitStatus(u.name, WorkloadState.ACTIVE, "masakari-processmonitor running; "
                                            f"masakari-hostmonitor on {', '.join(sorted(hostmonitors))}"))
            except HostDown:
                units.append(UnitStatus(u.name, WorkloadState.ERROR, f"host {u.host.name} is powered off"))
            except HostError as exc:
                units.append(UnitStatus(u.name, WorkloadState.UNKNOWN, f"cannot observe: {exc}"))
        return AppStatus(app=app.name, units=units, facts={"hostmonitors": hostmonitors})

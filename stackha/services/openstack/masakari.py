"""Masakari (masakari-api / masakari-engine 14.0.2, Zed): instance HA's control plane.

**masakari-api** runs under uwsgi on every unit, port 15868, active/active behind the VIP (HAProxy
checks ``GET /``, the version document, which needs no token); catalog type ``instance-ha`` on
``http://<VIP>:15868/v1/$(project_id)s`` (Masakari's API v1 paths carry the project; the client
and openstacksdk find it there).  **masakari-engine** runs on every unit too: the API casts each
notification to any engine over RabbitMQ (topic ``ha_engine``), so a dead engine costs nothing
but the notifications it was running (LAB-NOTES: marked failed only after 24 h).

State: database ``masakari`` on the Galera VIP; ``[taskflow] connection`` in a database of its own
(``masakari_taskflow``), so ``GET /notifications/{id}`` at microversion ≥ 1.1 shows the recovery
flow's progress.  Zed's ``masakari-manage db sync`` creates taskflow's tables in its migration 006
by taskflow's alembic migrations — but Debian's python3-taskflow 5.0.0 does not ship them
(``taskflow/persistence/backends/sqlalchemy/alembic/`` is missing: "No config file …alembic.ini
found", seen on the lab).  So stackha runs the db sync with ``[taskflow] connection`` blanked by a
second config file (``db-sync.conf``: migration 006 then skips taskflow) and creates taskflow's
tables from taskflow's own table definitions (``taskflow.persistence.backends.sqlalchemy.tables``,
what taskflow itself does for SQLite), ``create_all`` being idempotent.

**Coordination** (``[coordination] backend_url``): the API serialises notifications per host with
a tooz lock (``create_host_notification-<host>``, so two API units do not both accept a
notification for one host); without a backend the lock is a no-op.  stackha uses tooz's **mysql**
driver on the masakari database through the Galera VIP: ``GET_LOCK`` is not replicated by Galera,
but HAProxy sends every database connection to one Galera node at a time (the others are
``backup``), so every unit's locks live on the same server.  When the writer fails over, the lock
connections break with it and the locks are released — the next notification takes them on the
new writer.  Nothing else is needed (no etcd, ZooKeeper or Redis is deployed; tooz's file driver
is per host and, per Masakari's own help text, leaks lock files).

**Debian 12 compatibility**: python3-oslo.messaging 14.0.3-0+deb12u1 (a bookworm security
update) rebuilds every notification's request context from a list of safe keys without
``read_deleted``, and Masakari 14.0.2's RequestContext refuses ``read_deleted=None``: every
segment, host or notification create answered HTTP 500 after writing the database (seen on the
lab), and the engine's status notifications fail the same way.  stackha runs Debian's
masakari-engine and masakari-wsgi through two wrapper files that first load
``masakari_context_fix.py`` (a missing ``read_deleted`` means ``"no"``, RequestContext's own
default); Debian's files are not changed.

**Engine tuning** (``app.tuning``; ``stock`` keeps Masakari's defaults):

================================================ ======= ======= ==================================
option                                           stock   stackha why
================================================ ======= ======= ==================================
``wait_period_after_service_update``             180     0       the engine sleeps this long after
                                                                 disabling the failed host's
                                                                 compute service, to outwait Nova's
                                                                 heartbeat window.  With stackha the
                                                                 fenced host's service is forced
                                                                 down (fence level, or
                                                                 :mod:`stackha.instanceha`) and the
                                                                 flow waits for that (below): a
                                                                 forced-down service is down for
                                                                 Nova at once, nothing to wait for
``duplicate_notification_detection_interval``    180     10      a host that fails again after it
                                                                 was repaired is not refused for
                                                                 3 minutes
``host_failure_recovery_threads``                3       8       instances evacuated at once
``process_unfinished_notifications_interval``    120     30      a notification left ``new`` or
                                                                 ``error`` is retried sooner
``retry_notification_new_status_interval``       60      15      (the same periodic task)
================================================ ======= ======= ==================================

**Fence before evacuate** (tuning ``stackha``; ``[taskflow_driver_recovery_flows]``): the
host-failure flows (auto and reserved_host, which rh_priority / auto_priority chain) start with
``stackha_confirm_host_down_task`` (:data:`HOST_DOWN_TASK`, rendered as ``stackha_masakari_tasks``
beside the engine's wrapper with a dist-info that declares its ``masakari.task_flow.tasks`` entry
point): it polls Nova every 0.5 s until the failed host's nova-compute service is *forced down* —
by the fence level's second device after the power fence, or by ``stackha instance-ha host-down``
after its fence; a service merely *down* (heartbeats stopped: the host may be cut off but running)
is not enough — and fails after :data:`HOST_DOWN_WAIT_S` (the notification goes to error and is
retried: an unfenced host is never evacuated).  Why before Masakari's own
DisableComputeServiceTask: masakari-hostmonitor reports a node offline as soon as crm_mon shows
it so, which is also while it is UNCLEAN and not yet fenced (lab: notified 4.5 s after a power-off,
fence level done 5.8 s); disabling a service Nova still thinks up makes Nova call the dead host
over RPC, which answered after 60 s (rpc_response_timeout) on the lab — recovery 77.6 s instead
of 18.8 s for 6 servers.  With the task first, the disable finds the service down and returns at
once.

**Nova auth cache** (tuning ``stackha`` only): Masakari 14.0.2 builds a new novaclient, and a new
keystoneauth password plugin, for every Nova call (masakari/compute/nova.py), so every call issues
a new token and Nova validates a token it has never seen; a host failure makes several calls per
instance.  The engine's wrapper then also loads ``masakari_nova_auth_cache.py``, which memoises the
password plugins by their options: one token, renewed by keystoneauth before it expires.  The
figure it changes is bench/instanceha.py's.

``[host_failure] evacuate_all_instances`` follows the option ``evacuate-all-instances`` (default
true, Masakari's default: HA_Enabled servers first, then the others).  Failover segments come
from the option ``segments`` (:mod:`stackha.instanceha.segments`), created through the API once
the units serve (:meth:`MasakariOperator.after_start`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stackha.services.base import AppContext, RenderedFile, render_template, select_tuning
from stackha.services.openstack.descriptor import Api, CatalogEntry, Database, Descriptor, Worker
from stackha.services.openstack.operator import OpenStackServiceOperator, ServiceError

PORT = 15868
CONF = "/etc/masakari/masakari.conf"
API_SCRIPT = Path(__file__).resolve().parents[2] / "instanceha" / "masakari_api.py"
BIN = "/srv/masakari/bin"
FIX = f"{BIN}/masakari_context_fix.py"
AUTH_CACHE = f"{BIN}/masakari_nova_auth_cache.py"
ENGINE_BIN = f"{BIN}/masakari-engine"
HOST_DOWN_TASK = "stackha_confirm_host_down_task"
TASKS_MODULE = f"{BIN}/stackha_masakari_tasks.py"
TASKS_DIST = f"{BIN}/stackha_masakari_tasks-1.0.dist-info"
WSGI_BIN = f"{BIN}/masakari-wsgi"

SYNC_CONF = "/etc/masakari/db-sync.conf"

#: taskflow's persistence tables on ``[taskflow] connection`` (see the module docstring), the URL
#: read from the config so the password is never on a command line.
TASKFLOW_TABLES = (
    "import sqlalchemy as sa, masakari.conf; "
    "from taskflow.persistence.backends.sqlalchemy import tables; "
    "C = masakari.conf.CONF; C(['--config-file', '" + CONF + "'], project='masakari'); "
    "md = sa.MetaData(); tables.fetch(md); "
    "e = sa.create_engine(C.taskflow.connection); md.create_all(e); e.dispose()"
)

MASAKARI = Descriptor(
    kind="masakari", service="masakari", user="masakari", package="masakari-api", messaging=True,
    # masakari.cmd monkey-patches with eventlet: processes, no uwsgi threads (as nova-api).
    apis=(Api(name="masakari-api", port=PORT, health_path="/", health_codes=(200, 300),
              wsgi_file=WSGI_BIN, processes=2,
              env=(("OS_MASAKARI_CONFIG_DIR", "/etc/masakari"),)),),
    workers=(Worker("masakari-engine", (ENGINE_BIN, f"--config-file={CONF}")),),
    config={CONF: "masakari/masakari.conf.j2", SYNC_CONF: "masakari/db-sync.conf.j2"},
    databases=(Database("masakari", "masakari"), Database("masakari_taskflow", "masakari")),
    sync=(("masakari-manage", f"--config-file={CONF}", f"--config-file={SYNC_CONF}", "db", "sync"),
          ("/usr/bin/python3", "-c", TASKFLOW_TABLES)),
    catalog=(CatalogEntry("instance-ha", "masakari", PORT, "/v1/$(project_id)s"),),
    service_user="masakari",
)

#: Engine options per tuning (module docstring): ``[DEFAULT]`` key → value.
ENGINE = {
    "stock": {"wait_period_after_service_update": 180, "duplicate_notification_detection_interval": 180,
              "host_failure_recovery_threads": 3, "process_unfinished_notifications_interval": 120,
              "retry_notification_new_status_interval": 60},
    "stackha": {"wait_period_after_service_update": 0, "duplicate_notification_detection_interval": 10,
                "host_failure_recovery_threads": 8, "process_unfinished_notifications_interval": 30,
                "retry_notification_new_status_interval": 15},
}


#: Host-failure flows (``[taskflow_driver_recovery_flows]``) per tuning: stock keeps Masakari's;
#: stackha confirms the host is down *before* the service is disabled (module docstring).
FLOWS = {
    "stock": None,
    "stackha": {
        "host_auto_failure_recovery_tasks": {"pre": [HOST_DOWN_TASK, "disable_compute_service_task"],
                                             "main": ["prepare_HA_enabled_instances_task"],
                                             "post": ["evacuate_instances_task"]},
        "host_rh_failure_recovery_tasks": {"pre": [HOST_DOWN_TASK, "disable_compute_service_task"],
                                           "main": ["prepare_HA_enabled_instances_task", "evacuate_instances_task"],
                                           "post": []},
    },
}
#: How long the host-down task waits for the fence level's force-down (s), and its poll (s).
HOST_DOWN_WAIT_S = 60
HOST_DOWN_POLL_S = 0.5


def flow_option(flow: dict[str, list[str]]) -> str:
    """An oslo.config Dict-of-List value: ``pre:['a', 'b'],main:[…],post:[]``."""
    return ",".join(f"{k}:[{', '.join(repr(t) for t in v)}]" for k, v in flow.items())


#: Whether masakari-engine shares one Keystone token across its Nova calls (the module docstring,
#: "Nova auth cache"); stock: a new token per call, as Masakari 14.0.2 ships.
NOVA_AUTH_CACHE = {"stock": False, "stackha": True}


def coordination_url(db_url: str) -> str:
    """tooz's mysql URL for an oslo.db ``mysql+pymysql://…`` URL (same user, host, database)."""
    scheme, sep, rest = db_url.partition("://")
    if not sep or not scheme.startswith("mysql"):
        raise ValueError(f"not a MySQL URL: {scheme}://…")
    return f"mysql://{rest}"


class MasakariOperator(OpenStackServiceOperator):
    """Operator for kind ``masakari`` (see the module docstring)."""

    descriptor = MASAKARI

    def values(self, app: AppContext) -> dict[str, Any]:
        v = super().values(app)
        evacuate_all = app.options.get("evacuate-all-instances", True)
        flows = select_tuning(FLOWS, app.tuning) or {}
        return {**v, "port": PORT, "engine": select_tuning(ENGINE, app.tuning),
                "flows": {k: flow_option(f) for k, f in flows.items()},
                "coordination_url": coordination_url(v["db"]["masakari"]),
                "evacuate_all_instances": "true" if evacuate_all is not False else "false"}

    def unit_files(self, app: AppContext, unit, values: dict[str, Any]) -> dict[str, RenderedFile]:
        """The context fix and the wrappers that load it (module docstring)."""
        cache = AUTH_CACHE if select_tuning(NOVA_AUTH_CACHE, app.tuning) else None
        kw = {"fix": FIX, "bin_dir": BIN, "auth_cache": cache}
        files = {FIX: RenderedFile(render_template("masakari/context_fix.py.j2"), mode=0o644),
                 ENGINE_BIN: RenderedFile(render_template("masakari/masakari-engine.py.j2", **kw), mode=0o755),
                 WSGI_BIN: RenderedFile(render_template("masakari/masakari-wsgi.py.j2", **kw), mode=0o644)}
        if cache:
            files[AUTH_CACHE] = RenderedFile(render_template("masakari/nova_auth_cache.py.j2"), mode=0o644)
        if select_tuning(FLOWS, app.tuning):
            files[TASKS_MODULE] = RenderedFile(render_template(
                "masakari/host_down_task.py.j2", task_name=HOST_DOWN_TASK, wait_s=HOST_DOWN_WAIT_S,
                poll_s=HOST_DOWN_POLL_S), mode=0o644)
            files[f"{TASKS_DIST}/METADATA"] = RenderedFile(
                "Metadata-Version: 2.1\nName: stackha-masakari-tasks\nVersion: 1.0\n", mode=0o644)
            files[f"{TASKS_DIST}/entry_points.txt"] = RenderedFile(
                f"[masakari.task_flow.tasks]\n{HOST_DOWN_TASK} = stackha_masakari_tasks:ConfirmHostDownTask\n", mode=0o644)
        return files

    def restart_paths(self) -> set[str]:
        """The config, the uwsgi ini and the wrappers: a change restarts the daemons."""
        return super().restart_paths() | {FIX, AUTH_CACHE, ENGINE_BIN, WSGI_BIN, TASKS_MODULE,
                                          f"{TASKS_DIST}/entry_points.txt"}

    def prepare(self, app: AppContext, leader) -> list[str]:
        for unit in app.units:
            unit.host.run(["install", "-d", "-o", "masakari", "-g", "masakari", "/var/lib/masakari"], check=True)
        return []

    def after_start(self, app: AppContext) -> list[str]:
        """Create the bundle's failover segments through the API on the VIP (idempotent)."""
        from stackha.instanceha.segments import resolve

        specs = resolve(app)
        if not specs:
            return []
        out = self.api(app, "ensure_segments", segments=[s.as_request() for s in specs])
        return [f"masakari: {c}" for c in out["changes"]]

    def api(self, app: AppContext, action: str, *, timeout_s: float = 180, **payload: Any) -> Any:
        """One action of :mod:`stackha.instanceha.masakari_api` as the cloud's admin, run on a
        keystone unit through the VIP; its JSON result.  :class:`ServiceError` on failure, also
        when the script runs longer than ``timeout_s`` seconds."""
        id_app, id_op = self.identity(app)
        return id_op.admin_script(id_app, API_SCRIPT, {"action": action, **payload},
                                  what=f"masakari {action}", timeout=timeout_s)

    def app_facts(self, app: AppContext) -> dict[str, Any]:
        facts = super().app_facts(app)
        if app.options.get("segments"):
            try:
                facts["segments"] = {s["name"]: f"{s['recovery_method']}: " + ", ".join(
                    h["name"] + ("(reserved)" if h["reserved"] else "") + ("(maintenance)" if h["on_maintenance"] else "")
                    for h in s["hosts"]) for s in self.api(app, "segments")}
            except ServiceError as exc:
                facts["segments"] = f"unknown: {exc}"
        return facts

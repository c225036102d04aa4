"""The one operator of every OpenStack API service, driven by a :class:`Descriptor`.

A service is active/active behind the VIP (OpenStack HA guide: stateless API services behind a
load balancer): every unit runs the same API daemons on its own address, HAProxy balances the VIP
over the units whose health check answers, and the state lives in the Galera cluster (reached on
its VIP: one writer at a time) and the RabbitMQ cluster (every broker in ``transport_url``, quorum
queues).  :meth:`OpenStackServiceOperator.apply` does, idempotently and in this order:

1. the relations — databases and their users on Galera (:class:`DatabaseProvider`), a RabbitMQ
   user on the services' vhost (:class:`MessagingProvider`), the service user, the catalog
   service and its public/internal/admin endpoints on the VIP in Keystone
   (:class:`IdentityProvider`, one openstacksdk process);
2. directories and the rendered files on every unit (config from the descriptor's templates, one
   uwsgi ini per WSGI daemon), then :meth:`prepare` (a service's own step: Keystone's keys);
3. the schema sync on the leader (unit 0) when its inputs changed (:meth:`sync`);
4. daemons started where missing, and restarted **one unit at a time** where their files changed,
   each unit's APIs answering their health check before the next unit is touched — so a config
   change never takes the whole API down; then :meth:`after_start` (Nova's ``discover_hosts``).

Active/passive workers run under Pacemaker where the bundle relates an ``hacluster`` to the
service (:meth:`ha_resources`), else on the leader only.

A service's own behaviour is a subclass overriding the declared hooks :meth:`values`,
:meth:`unit_files`, :meth:`prepare`, :meth:`sync`, :meth:`after_start` and :meth:`app_facts` —
nothing is looked up with ``hasattr``.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stackha.hosts.base import HostDown, HostError
from stackha.polling import wait_until
from stackha.services.base import (
    AppContext,
    AppStatus,
    BaseOperator,
    Frontend,
    RenderedFile,
    Unit,
    UnitStatus,
    WorkloadState,
    install_files,
    log_tail,
    provider,
    render_template,
)
from stackha.services.openstack.descriptor import ACTIVE_PASSIVE, Api, Descriptor, Worker

REGION = "RegionOne"
START_TIMEOUT_S = 120.0
PROBE_TIMEOUT_S = 3.0
DB_PORT = 3306


class ServiceError(HostError):
    """An OpenStack service could not be deployed; ``unit`` names the unit when one failed."""

    def __init__(self, message: str, unit: str | None = None):
        super().__init__(message)
        self.unit = unit


def db_url(user: str, password: str, host: str, name: str) -> str:
    """``mysql+pymysql://user:password@host:3306/name`` (oslo.db's connection string)."""
    return f"mysql+pymysql://{user}:{password}@{host}:{DB_PORT}/{name}"


class OpenStackServiceOperator(BaseOperator):
    """Deploys, observes and recovers one OpenStack service kind (see the module docstring).

    Subclasses set :attr:`descriptor` and override the hooks they need."""

    descriptor: Descriptor

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.descriptor.kind

    # ================================================================ relations
    def database(self, app: AppContext) -> tuple[AppContext, Any]:
        """The related database application and its operator; :class:`ServiceError` if none."""
        found = provider(app, "database")
        if found is None:
            raise ServiceError(f"{app.name} needs a relation to a galera database (add `- [{app.name}, galera]`)")
        return found

    def messaging(self, app: AppContext) -> tuple[AppContext, Any]:
        found = provider(app, "messaging")
        if found is None:
            raise ServiceError(f"{app.name} needs a relation to rabbitmq (add `- [{app.name}, rabbitmq-server]`)")
        return found

    def identity(self, app: AppContext) -> tuple[AppContext, Any]:
        found = provider(app, "identity")
        if found is None:
            raise ServiceError(f"{app.name} needs a relation to keystone (add `- [{app.name}, keystone]`)")
        return found

    def endpoint_url(self, app: AppContext, port: int, path: str = "") -> str:
        """``http://<VIP>:<port><path>``; :class:`ServiceError` when the service has no VIP."""
        if app.vip is None:
            raise ServiceError(f"{app.name} has no VIP: relate it to haproxy (with keepalived) or give it `vip`")
        return f"http://{app.vip.ip}:{port}{path}"

    # ================================================================ render
    def values(self, app: AppContext) -> dict[str, Any]:
        """Template values shared by every unit (a hook: services add their own).

        ``db``: ``{database name: oslo.db URL}``; ``transport_url``; ``auth``: the
        ``[keystone_authtoken]`` values; ``options``: the bundle's options; ``vip``."""
        d = self.descriptor
        v: dict[str, Any] = {"service": d.service, "options": app.options, "region": REGION,
                             "vip": str(app.vip.ip) if app.vip else None, "log_dir": d.log_dir,
                             "state_dir": d.state_dir, "tuning": app.tuning}
        if d.databases:
            db_app, db_op = self.database(app)
            host = db_op.client_address(db_app)
            v["db"] = {db.name: db_url(db.user, app.secrets.get(f"db-{db.user}"), host, db.name)
                       for db in d.databases}
        if d.messaging:
            mq_app, mq_op = self.messaging(app)
            v["transport_url"] = mq_op.transport_url(mq_app, d.service, app.secrets.get("amqp-password"), d.vhost)
        if d.service_user:
            id_app, id_op = self.identity(app)
            v["auth"] = {"auth_url": id_op.auth_url(id_app), "username": d.service_user,
                         "password": app.secrets.get("identity-password"), "project_name": "service",
                         "user_domain_name": "Default", "project_domain_name": "Default", "region": REGION}
        return v

    def unit_files(self, app: AppContext, unit: Unit, values: dict[str, Any]) -> dict[str, RenderedFile]:
        """Files of a unit beyond its config (a hook: Keystone's key repositories).  A change to
        one of these does not restart the daemons."""
        return {}

    def config_files(self, app: AppContext, unit: Unit, values: dict[str, Any]) -> dict[str, RenderedFile]:
        """The unit's config files and uwsgi inis: a change restarts the unit's daemons."""
        d = self.descriptor
        uv = {**values, "unit": unit.name, "address": str(unit.address), "hostname": unit.host.name}
        files = {path: RenderedFile(render_template(tpl, **uv), mode=0o640, owner="root", group=d.user)
                 for path, tpl in d.config.items()}
        for api in d.apis:
            if api.wsgi_file:
                files[api.uwsgi_ini] = RenderedFile(render_template(
                    "openstack/uwsgi.ini.j2", unit=unit.name, api=api, address=str(unit.address),
                    processes=int(app.options.get("processes", api.processes))), mode=0o644)
        return files

    def render(self, app: AppContext) -> dict[str, dict[str, RenderedFile]]:
        """``{unit: {path: file}}``: config, uwsgi inis and the service's own files.  Pure."""
        values = self.values(app)
        return {u.name: {**self.config_files(app, u, values), **self.unit_files(app, u, values)}
                for u in app.units}

    def frontends(self, app: AppContext) -> list[Frontend]:
        """One HTTP frontend per API daemon: VIP:port → every unit's port, ``option httpchk GET
        <health_path>``, round robin unless the bundle's ``balance`` says otherwise."""
        return [Frontend(app=app.name, name=f"{app.name}-{api.name}" if len(self.descriptor.apis) > 1
                         else f"{app.name}-public", port=api.port, mode="http", check_path=api.health_path,
                         balance=str(app.options.get("balance", "roundrobin")),
                         servers=tuple((u.slug, str(u.address)) for u in app.units))
                for api in self.descriptor.apis if api.frontend]

    # ================================================================ hacluster
    def has_hacluster(self, app: AppContext) -> bool:
        return bool(app.related_of_kind("hacluster"))

    def ha_resources(self, app: AppContext) -> list:
        """Active/passive workers as Pacemaker resources (one node at a time, beside the VIP)."""
        from stackha.services.pacemaker import DaemonResource

        d = self.descriptor
        return [DaemonResource(id=w.name, argv=w.argv, user=d.user, with_vip=True,
                               files=tuple(d.config))
                for w in d.workers if w.mode == ACTIVE_PASSIVE]

    def workers_on(self, app: AppContext, unit: Unit) -> list[Worker]:
        """The workers stackha itself runs on ``unit``: every active/active one; the
        active/passive ones only on the leader and only without an hacluster (Pacemaker runs them)."""
        out = []
        for w in self.descriptor.workers:
            if w.mode == ACTIVE_PASSIVE and (self.has_hacluster(app) or unit is not app.units[0]):
                continue
            out.append(w)
        return out

    # ================================================================ apply
    def ensure_relations(self, app: AppContext) -> list[str]:
        """Databases, the RabbitMQ user and the Keystone registration; returns what changed."""
        d = self.descriptor
        changes: list[str] = []
        if d.databases:
            db_app, db_op = self.database(app)
            for db in d.databases:
                password = db_op.ensure_database(db_app, db.name, db.user)
                if app.secrets.read(f"db-{db.user}") != password:
                    app.secrets.put(f"db-{db.user}", password)
        if d.messaging:
            mq_app, mq_op = self.messaging(app)
            password = mq_op.ensure_user(mq_app, d.service, d.vhost, queue_type="classic")
            if app.secrets.read("amqp-password") != password:
                app.secrets.put("amqp-password", password)
        if d.service_user:
            id_app, id_op = self.identity(app)
            catalog = [(e.type, e.name, {i: self.endpoint_url(app, e.port, e.path) for i in ("public", "internal", "admin")})
                       for e in d.catalog]
            password, changed = id_op.ensure_service(id_app, d.service_user, catalog)
            changes += changed
            if app.secrets.read("identity-password") != password:
                app.secrets.put("identity-password", password)
        return changes

    def prepare(self, app: AppContext, leader: Unit) -> list[str]:
        """A service's own step after its files are installed and before the sync (a hook)."""
        return []

    def sync_inputs(self, app: AppContext, leader: Unit) -> str:
        """What the sync depends on: the commands, the database URLs, the package version."""
        d = self.descriptor
        version = ""
        if d.package:
            res = leader.host.run(["dpkg-query", "-W", "-f=${Version}", d.package], timeout=30)
            version = res.stdout.strip()
        urls = sorted(self.values(app).get("db", {}).values())
        return hashlib.sha256(json.dumps([d.sync, urls, version]).encode()).hexdigest()

    def sync(self, app: AppContext, leader: Unit) -> list[str]:
        """Run the descriptor's sync commands on the leader once per change of their inputs
        (marker ``<state_dir>/synced`` holds the inputs' hash).  Raises :class:`ServiceError`."""
        d = self.descriptor
        if not d.sync:
            return []
        marker = f"{d.state_dir}/synced"
        inputs = self.sync_inputs(app, leader)
        if (leader.host.read_file(marker) or b"").decode() == inputs:
            return []
        for argv in d.sync:
            self.run_as_service(leader, argv, timeout=900)
        leader.host.write_file(marker, inputs, mode=0o600)
        return [f"{leader.name}: {' ; '.join(' '.join(a) for a in d.sync)}"]

    def after_start(self, app: AppContext) -> list[str]:
        """A service's own step once every unit serves (a hook: Nova's discover_hosts)."""
        return []

    def run_as_service(self, unit: Unit, argv: tuple[str, ...] | list[str], timeout: float = 300) -> str:
        """Run ``argv`` on ``unit`` as the service user; its stdout.  :class:`ServiceError` with
        the last lines of its output when it fails."""
        res = unit.host.run(list(argv), user=self.descriptor.user, timeout=timeout)
        if not res.ok:
            tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
            raise ServiceError(f"{unit.name}: {' '.join(argv[:3])} failed (rc {res.rc}): {' | '.join(tail)}",
                               unit=unit.name)
        return res.stdout

    def restart_paths(self) -> set[str]:
        """Files whose change restarts the unit's daemons: the config and the uwsgi inis."""
        d = self.descriptor
        return set(d.config) | {a.uwsgi_ini for a in d.apis if a.wsgi_file}

    def install(self, app: AppContext, rendered: dict[str, dict[str, RenderedFile]],
                units: list[Unit]) -> tuple[list[str], set[str]]:
        """Install the rendered files; returns (changes, names of the units whose config changed)."""
        d = self.descriptor
        changes: list[str] = []
        restart: set[str] = set()
        config = self.restart_paths()
        for unit in units:
            unit.host.run(["install", "-d", "-o", d.user, "-g", d.user, d.state_dir, d.log_dir,
                           f"{d.state_dir}/lock"], check=True)
            changed = install_files(unit.host, rendered[unit.name])
            if any(p in config for p in changed):
                restart.add(unit.name)
            changes += [f"{unit.name}: {p}" for p in changed]
        return changes, restart

    def apply(self, app: AppContext) -> list[str]:
        """Deploy the service (see the module docstring).  Returns what changed ([] when the
        cloud already matched); raises :class:`ServiceError` naming the unit that failed."""
        if not app.units:
            raise ServiceError(f"{app.name} has no units")
        leader = app.units[0]
        changes = self.ensure_relations(app)
        rendered = self.render(app)
        new_changes, restart = self.install(app, rendered, app.units)
        changes += new_changes
        prepared = self.prepare(app, leader)
        if prepared:
            changes += prepared
            more, again = self.install(app, self.render(app), app.units)
            changes += more
            restart |= again
        changes += self.sync(app, leader)
        for unit in app.units:  # one unit at a time: the others keep serving
            changes += self.start_unit(app, unit, restart=unit.name in restart)
        changes += self.after_start(app)
        return changes

    def daemon_argv(self, api: Api) -> list[str]:
        return ["uwsgi", "--ini", api.uwsgi_ini] if api.wsgi_file else list(api.argv)

    def start_unit(self, app: AppContext, unit: Unit, *, restart: bool = False) -> list[str]:
        """Start (or, with ``restart``, restart) the unit's daemons and wait for its APIs."""
        d = self.descriptor
        changes = []
        # Workers first: an API may use one at once (Keystone's memcached: a cache server found
        # dead is skipped for memcache_dead_retry s).
        wanted: list[tuple[str, list[str], str]] = [(w.name, list(w.argv), w.user or d.user)
                                                     for w in self.workers_on(app, unit)]
        wanted += [(a.name, self.daemon_argv(a), a.user or d.user) for a in d.apis]
        touched = False
        for name, argv, user in wanted:
            running = unit.host.daemon(name)
            if running is not None and not restart:
                continue
            if running is not None:
                unit.host.stop(name)
            unit.host.spawn(name, argv, user=user, cwd=d.state_dir)
            changes.append(f"{unit.name}: {name} {'restarted' if running else 'started'}")
            touched = True
        if touched:
            self.wait_ready(unit)
        return changes

    def probe(self, unit: Unit, api: Api, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[int, float]:
        """HTTP status of GET ``http://<unit>:<port><health_path>`` from the unit's own host and
        its time in s; ``(0, timeout_s)`` when nothing answered."""
        res = unit.host.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                             "--max-time", str(timeout_s), f"http://{unit.address}:{api.port}{api.health_path}"],
                            timeout=timeout_s + 5)
        try:
            code, secs = res.stdout.split()
            return int(code), float(secs)
        except ValueError:
            return 0, timeout_s

    def wait_ready(self, unit: Unit, deadline_s: float = START_TIMEOUT_S) -> None:
        """Poll every API of ``unit`` every 0.5 s until each answers its health check;
        :class:`ServiceError` (with the daemon's last log lines) if a daemon exits or after
        ``deadline_s`` s."""
        for api in self.descriptor.apis:
            def answered(api: Api = api) -> bool:
                if unit.host.daemon(api.name) is None:
                    raise ServiceError(f"{unit.name}: {api.name} exited: {log_tail(unit.host, api.name)}", unit=unit.name)
                return self.probe(unit, api)[0] in api.health_codes

            wait_until(answered, deadline_s, 0.5, what=f"{unit.name}: {api.name} answering GET {api.health_path}",
                       error=lambda msg, api=api: ServiceError(f"{msg}: {log_tail(unit.host, api.name)}", unit=unit.name))

    # ================================================================ observe
    def observe_unit(self, app: AppContext, unit: Unit) -> UnitStatus:
        """One unit: active when every daemon it should run is running and every API answers its
        health check (facts: daemons, per API its HTTP code and latency in ms)."""
        try:
            if not unit.host.is_on():
                return UnitStatus(unit.name, WorkloadState.ERROR, "host is powered off")
            names = [a.name for a in self.descriptor.apis] + [w.name for w in self.workers_on(app, unit)]
            down = [n for n in names if unit.host.daemon(n) is None]
            facts: dict[str, Any] = {"daemons": {n: n not in down for n in names}}
            if down:
                return UnitStatus(unit.name, WorkloadState.BLOCKED, f"not running: {', '.join(down)}", facts)
            bad = []
            for api in self.descriptor.apis:
                code, secs = self.probe(unit, api)
                facts[api.name] = {"http": code, "latency_ms": round(secs * 1000, 1)}
                if code not in api.health_codes:
                    bad.append(f"{api.name} GET {api.health_path} answered {code or 'nothing'}")
            if bad:
                return UnitStatus(unit.name, WorkloadState.BLOCKED, "; ".join(bad), facts)
            return UnitStatus(unit.name, WorkloadState.ACTIVE, "Unit is ready", facts)
        except HostDown:
            return UnitStatus(unit.name, WorkloadState.ERROR, "host is powered off")
        except HostError as exc:
            return UnitStatus(unit.name, WorkloadState.UNKNOWN, f"cannot observe: {exc}")

    def app_facts(self, app: AppContext) -> dict[str, Any]:
        """Application-level facts (a hook: Nova's compute services as Nova sees them)."""
        facts: dict[str, Any] = {}
        if app.vip is not None and self.descriptor.catalog:
            facts["endpoints"] = {e.type: self.endpoint_url(app, e.port, e.path) for e in self.descriptor.catalog}
        return facts

    def observe(self, app: AppContext) -> AppStatus:
        """Every unit (in parallel) plus :meth:`app_facts`; never changes anything."""
        with ThreadPoolExecutor(max_workers=max(1, len(app.units))) as pool:
            units = list(pool.map(lambda u: self.observe_unit(app, u), app.units))
        try:
            facts = self.app_facts(app)
        except HostError as exc:
            facts = {"problem": f"cannot read application facts: {exc}"}
        return AppStatus(app.name, units, facts)

    def recover(self, app: AppContext) -> list[str]:
        """Start what is not running again (config re-installed, nothing synced twice)."""
        return self.apply(app)

"""Keystone, active/active behind the VIP: a descriptor plus Keystone's own hooks.

Each unit runs Debian's keystone (Zed) as ``keystone-wsgi-public`` under uwsgi on its own address,
port 5000, as user ``keystone``; HAProxy serves the units on VIP:5000 with an HTTP check on ``/v3``
(LAB-NOTES: 120 token requests with one keystone killed → 0 failures).  The generic part —
database, config + uwsgi render, frontends, rolling start, readiness poll, observe — is
:class:`~stackha.services.openstack.operator.OpenStackServiceOperator`'s.  Keystone's own:

- **keys**: fernet and credential keys must be the same files on every unit (LAB-NOTES), or a
  token issued by one unit fails to validate on another.  They are made once by ``keystone-manage
  fernet_setup`` / ``credential_setup`` on the leader (unit 0), kept as secrets (0600) by stackha,
  written to every unit, and stale ones removed.  :meth:`KeystoneOperator.rotate_keys` rotates
  the fernet keys on the leader and distributes them: the former primary stays as a secondary key,
  so tokens issued before the rotation still validate (``max_active_keys`` = 3);
- **bootstrap** after ``db_sync`` (admin user, project, role, region RegionOne and the identity
  endpoints public/internal/admin on the VIP), once per change of its inputs;
- the **identity provider** of the other services (:meth:`ensure_service`: their service user,
  catalog service and endpoints, one openstacksdk process — :mod:`.register`);
- **cache**: memcached on every unit (:data:`MEMCACHED_PORT` on the unit's address, 64 MiB, run
  as ``memcache``) and Keystone's ``[cache]`` on all of them (oslo.cache ``memcache_pool``), as
  every reference deployment (kolla-ansible, openstack-ansible) runs it.  Without the cache every
  token validation repeats the identity, assignment, catalog and revocation queries: measured on
  the lab (control plane, another lab running) POST token 0.5-0.8 s, validate 1.1-1.7 s; with this
  cache POST 0.26-0.56 s, validate 0.02-0.25 s.  The token probe runs issue + validate back to back, so its gap can
  never be shorter than that (issue 10's token gaps).  The cache holds nothing that is not in the
  database: a lost memcached costs one ``memcache_socket_timeout`` per pooled client, after
  which the client skips it for ``memcache_dead_retry`` s (stackha's tuning: 0.5 s / 30 s;
  oslo.cache's defaults 1.0 s / 300 s).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from stackha.services.base import AppContext, RenderedFile, Unit
from stackha.services.openstack.descriptor import Api, Database, Descriptor, Worker
from stackha.services.openstack.operator import REGION, OpenStackServiceOperator, ServiceError

PORT = 5000
DAEMON = "keystone"
CONF = "/etc/keystone/keystone.conf"
KEY_DIRS = {"fernet": "/etc/keystone/fernet-keys", "credential": "/etc/keystone/credential-keys"}
MEMCACHED_PORT = 11211
MEMCACHED_WRAPPER = "/srv/stackha/keystone-memcached.sh"
#: oslo.cache's memcache client settings under stackha's tuning (stock: oslo.cache's defaults).
MEMCACHE_TUNING = {"socket_timeout": 0.5, "dead_retry": 30, "get_timeout": 2}
REGISTER_SCRIPT = Path(__file__).with_name("register.py")
QUERY_SCRIPT = Path(__file__).with_name("query.py")
SERVICE_PROJECT = "service"

KEYSTONE = Descriptor(
    kind="keystone", service="keystone", user="keystone", package="keystone",
    # Threads: a token request spends most of its time in bcrypt (which releases the GIL); with one
    # thread per process, two slow token requests held both workers and HAProxy's GET /v3 checks
    # queued behind them past their 3 s timeout — on a loaded lab every unit was marked DOWN at
    # once and the VIP answered 503 (seen in tests/lab/test_cloud.py runs).
    apis=(Api(name=DAEMON, port=PORT, health_path="/v3", wsgi_file="/usr/bin/keystone-wsgi-public",
              processes=2, threads=4),),
    config={CONF: "keystone/keystone.conf.j2"},
    workers=(Worker("memcached", ("/bin/sh", MEMCACHED_WRAPPER), user="memcache"),),
    databases=(Database("keystone", "keystone"),),
    sync=(("keystone-manage", "db_sync"),),
)

KeystoneError = ServiceError  # the name earlier code and messages use


class KeystoneOperator(OpenStackServiceOperator):
    """Operator for kind ``keystone`` (see the module docstring)."""

    descriptor = KEYSTONE

    # ----------------------------------------------------------------- identity provider
    def auth_url(self, app: AppContext) -> str:
        """``http://<VIP>:5000/v3`` — the identity endpoint (public, internal and admin)."""
        return self.endpoint_url(app, PORT, "/v3")

    public_url = auth_url

    def admin_password(self, app: AppContext) -> str:
        """The bootstrap admin's password (a generated secret)."""
        return app.secrets.get("admin-password")

    def admin_auth(self, app: AppContext) -> dict[str, str]:
        """keystoneauth password-plugin values of the bootstrap admin (project-scoped)."""
        return {"auth_url": self.auth_url(app), "username": "admin", "password": self.admin_password(app),
                "project_name": "admin", "user_domain_name": "Default", "project_domain_name": "Default"}

    def ensure_service(self, app: AppContext, user: str, catalog: list[tuple[str, str, dict[str, str]]]
                       ) -> tuple[str, list[str]]:
        """Service user ``user`` (admin in project ``service``) and each catalog entry
        ``(type, name, {interface: url})`` — one openstacksdk process on the leader's host, through
        the VIP.  Returns (the user's password, what changed).  Raises :class:`ServiceError`."""
        password = app.secrets.get(f"service-{user}")
        req = {"user": {"name": user, "password": password}, "project": SERVICE_PROJECT, "roles": ["admin", "service"],
               "services": [{"type": t, "name": n, "endpoints": e} for t, n, e in catalog]}
        out = self.admin_script(app, REGISTER_SCRIPT, req, what=f"registering {user} in Keystone")
        return password, [f"keystone: {c}" for c in out["changes"]]

    def query(self, app: AppContext, query: str) -> Any:
        """One of :mod:`.query`'s queries (e.g. ``compute_services``) as the admin, through the VIP."""
        return self.admin_script(app, QUERY_SCRIPT, {"query": query}, what=f"query {query}", timeout=60)

    def admin_script(self, app: AppContext, script: Path, payload: dict[str, Any], *, what: str,
                     timeout: float = 180) -> Any:
        """Run a self-contained openstacksdk ``script`` (:mod:`.register`, :mod:`.query`) with
        Debian's python3 on the first keystone unit that is on, the admin's credentials and
        ``payload`` on its stdin (never in argv); its JSON output.  Raises :class:`ServiceError`."""
        unit = next((u for u in app.units if u.host.is_on()), None)
        if unit is None:
            raise ServiceError(f"{app.name}: no unit is up for {what}")
        path = f"/srv/stackha/{script.name}"
        unit.host.write_file(path, script.read_text(), mode=0o644)
        req = {"auth": self.admin_auth(app), "region": REGION, **payload}
        res = unit.host.run(["/usr/bin/python3", path], input=json.dumps(req), timeout=timeout)
        if not res.ok:
            raise ServiceError(f"{app.name}: {what} failed: {(res.stderr or res.stdout).strip()[-300:]}",
                               unit=unit.name)
        try:
            return json.loads(res.stdout)
        except ValueError:
            raise ServiceError(f"{app.name}: {what} printed no JSON result") from None

    # ----------------------------------------------------------------- render hooks
    def values(self, app: AppContext) -> dict[str, Any]:
        return {**super().values(app),
                "token_expiration": int(app.options.get("token-expiration", 3600)),
                "max_active_keys": int(app.options.get("fernet-max-active-keys", 3)),
                "memcache_servers": ",".join(f"{u.address}:{MEMCACHED_PORT}" for u in app.units),
                "memcache": MEMCACHE_TUNING}

    def config_files(self, app: AppContext, unit: Unit, values: dict[str, Any]) -> dict[str, RenderedFile]:
        """keystone.conf, the uwsgi ini and the unit's memcached wrapper (listens on the unit's
        address only: memcached has no authentication)."""
        wrapper = (f"#!/bin/sh\n# Keystone's cache on {unit.name}, rendered by stackha.\n"
                   f"exec memcached -l {unit.address} -p {MEMCACHED_PORT} -U 0 -m 64 -c 1024\n")
        return {**super().config_files(app, unit, values), MEMCACHED_WRAPPER: RenderedFile(wrapper, mode=0o644)}

    def unit_files(self, app: AppContext, unit: Unit, values: dict[str, Any]) -> dict[str, RenderedFile]:
        """The recorded fernet and credential keys (0600, keystone's)."""
        files = {}
        for kind, directory in KEY_DIRS.items():
            for name, content in json.loads(app.secrets.read(f"{kind}-keys") or "{}").items():
                files[f"{directory}/{name}"] = RenderedFile(content, mode=0o600, owner="keystone", group="keystone")
        return files

    # ----------------------------------------------------------------- apply hooks
    def _read_keys(self, unit: Unit, directory: str) -> dict[str, str]:
        names = unit.host.run(["ls", directory], check=True).stdout.split()
        return {n: (unit.host.read_file(f"{directory}/{n}") or b"").decode() for n in names}

    def prepare(self, app: AppContext, leader: Unit) -> list[str]:
        """Make the fernet and credential keys once (on the leader) and keep them as secrets."""
        changes = []
        for kind, directory in KEY_DIRS.items():
            if app.secrets.read(f"{kind}-keys") is not None:
                continue
            leader.host.run(["rm", "-rf", directory], check=True)
            self.run_as_service(leader, ["keystone-manage", f"{kind}_setup", "--keystone-user", "keystone",
                                         "--keystone-group", "keystone"])
            app.secrets.put(f"{kind}-keys", json.dumps(self._read_keys(leader, directory)))
            changes.append(f"{kind} keys generated on {leader.name}")
        return changes

    def install(self, app, rendered, units):
        """Install the files, then make each key repository hold exactly the recorded keys."""
        changes, restart = super().install(app, rendered, units)
        for unit in units:
            for kind, directory in KEY_DIRS.items():
                wanted = set(json.loads(app.secrets.read(f"{kind}-keys") or "{}"))
                unit.host.run(["install", "-d", "-m", "0700", "-o", "keystone", "-g", "keystone", directory], check=True)
                present = set(unit.host.run(["ls", directory], check=True).stdout.split())
                for stale in sorted(present - wanted):
                    unit.host.run(["rm", "-f", f"{directory}/{stale}"], check=True)
                    changes.append(f"{unit.name}: {directory}/{stale} removed")
        return changes, restart

    def sync(self, app: AppContext, leader: Unit) -> list[str]:
        """``keystone-manage db_sync`` (when its inputs changed), then ``bootstrap`` once per
        change of the URL, region or admin password."""
        changes = super().sync(app, leader)
        url = self.auth_url(app)
        inputs = hashlib.sha256(json.dumps([url, REGION, self.admin_password(app)]).encode()).hexdigest()
        marker = f"{KEYSTONE.state_dir}/bootstrapped"
        if (leader.host.read_file(marker) or b"").decode() != inputs:
            self.run_as_service(leader, [
                "keystone-manage", "bootstrap", "--bootstrap-password", self.admin_password(app),
                "--bootstrap-username", "admin", "--bootstrap-project-name", "admin",
                "--bootstrap-role-name", "admin", "--bootstrap-service-name", "keystone",
                "--bootstrap-region-id", REGION, "--bootstrap-admin-url", url,
                "--bootstrap-internal-url", url, "--bootstrap-public-url", url])
            leader.host.write_file(marker, inputs, mode=0o600)
            changes.append(f"{leader.name}: bootstrap (admin, region {REGION}, identity endpoints on {url})")
        return changes

    def app_facts(self, app: AppContext) -> dict[str, Any]:
        return {"endpoint": self.auth_url(app)} if app.vip else {}

    # ----------------------------------------------------------------- day 2
    def rotate_keys(self, app: AppContext) -> list[str]:
        """Rotate the fernet keys on the leader and distribute them to every unit.

        Tokens issued before the rotation stay valid: the old primary key becomes a secondary key
        (keystone's fernet rotation).  Returns what changed."""
        leader = app.units[0]
        self.run_as_service(leader, ["keystone-manage", "fernet_rotate", "--keystone-user", "keystone",
                                     "--keystone-group", "keystone"])
        app.secrets.put("fernet-keys", json.dumps(self._read_keys(leader, KEY_DIRS["fernet"])))
        changes = [f"{leader.name}: fernet keys rotated"]
        rendered = self.render(app)
        more, _ = self.install(app, rendered, app.units)
        return changes + more

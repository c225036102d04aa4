"""Keystone, active/active behind the VIP.

Each unit runs Debian's keystone (Zed) as ``keystone-wsgi-public`` under uwsgi on its own address,
port 5000, as user ``keystone``; HAProxy serves the units on VIP:5000 with an HTTP check on ``/v3``,
``option redispatch`` and retries so an idempotent request survives a backend dying mid-way
(LAB-NOTES: 120 token requests with one keystone killed → 0 failures).

- Database: ``keystone`` on the related Galera cluster, reached through the Galera VIP (one writer
  at a time via HAProxy); the user and its password are made by the Galera operator.
- Fernet and credential keys must be the same files on every unit (LAB-NOTES), or a token issued by
  one unit fails to validate on another.  They are made once by ``keystone-manage fernet_setup`` /
  ``credential_setup`` on the leader (unit 0), kept as secrets (0600) by stackha, and written to
  every unit.  :meth:`KeystoneOperator.rotate_keys` rotates the fernet keys on the leader and
  distributes them: the former primary key stays as a secondary key, so tokens issued before the
  rotation still validate (keystone's fernet key rotation, ``max_active_keys`` = 3).
- ``keystone-manage db_sync`` and ``bootstrap`` (admin user, project, role, region RegionOne and
  the identity endpoints public/internal/admin on the VIP) run once, on the leader.
- No memcached: the token cache is off, so there is no cache server to make highly available.
"""

from __future__ import annotations

import hashlib
import json

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from stackha.hosts.base import HostError
from stackha.services.base import (
    log_tail,
    AppContext,
    AppStatus,
    Frontend,
    RenderedFile,
    UnitStatus,
    WorkloadState,
    install_files,
    render_template,
)

PORT = 5000
DAEMON = "keystone"
CONF = "/etc/keystone/keystone.conf"
UWSGI_INI = "/srv/keystone/uwsgi.ini"
KEY_DIRS = {"fernet": "/etc/keystone/fernet-keys", "credential": "/etc/keystone/credential-keys"}
REGION = "RegionOne"
START_TIMEOUT_S = 90.0


class KeystoneError(HostError):
    """Keystone could not be deployed on a unit (``unit`` names it when known)."""

    def __init__(self, message: str, unit: str | None = None):
        super().__init__(message)
        self.unit = unit


class KeystoneOperator:
    """Operator for kind ``keystone`` (see the module docstring)."""

    kind = "keystone"

    # ----------------------------------------------------------------- relations
    def database(self, app: AppContext) -> tuple[AppContext, str]:
        """The related Galera application and the address clients reach it on (its VIP).

        Raises :class:`KeystoneError` if keystone has no database relation or the database no VIP."""
        dbs = app.related_of_kind("galera")
        if not dbs:
            raise KeystoneError(f"{app.name} needs a relation to a galera database (add `- [{app.name}, galera]`)")
        db = dbs[0]
        if db.vip is None:
            raise KeystoneError(f"database {db.name} has no VIP: relate it to haproxy so keystone reaches one writer")
        return db, str(db.vip.ip)

    def public_url(self, app: AppContext) -> str:
        """``http://<VIP>:5000/v3`` — the identity endpoint (public, internal and admin)."""
        if app.vip is None:
            raise KeystoneError(f"{app.name} has no VIP: relate it to haproxy (with keepalived) or give it `vip`")
        return f"http://{app.vip.ip}:{PORT}/v3"

    def admin_password(self, app: AppContext) -> str:
        """The bootstrap admin's password (a generated secret)."""
        return app.secrets.get("admin-password")

    # ----------------------------------------------------------------- render
    def render(self, app: AppContext) -> dict[str, dict[str, RenderedFile]]:
        """keystone.conf, the uwsgi ini and the key repositories for every unit."""
        db, db_host = self.database(app)
        values = dict(
            db_user="keystone", db_name="keystone", db_host=db_host,
            db_password=app.secrets.get("db-password"),
            token_expiration=int(app.options.get("token-expiration", 3600)),
            max_active_keys=int(app.options.get("fernet-max-active-keys", 3)),
        )
        keys = {kind: json.loads(app.secrets.read(f"{kind}-keys") or "{}") for kind in KEY_DIRS}
        out: dict[str, dict[str, RenderedFile]] = {}
        for unit in app.units:
            files = {
                CONF: RenderedFile(render_template("keystone/keystone.conf.j2", unit=unit.name, **values),
                                   mode=0o640, owner="root", group="keystone"),
                UWSGI_INI: RenderedFile(render_template("keystone/uwsgi.ini.j2", unit=unit.name, address=unit.address,
                                                        port=PORT, processes=int(app.options.get("worker-multiplier", 2))),
                                        mode=0o644),
            }
            for kind, directory in KEY_DIRS.items():
                for name, content in keys[kind].items():
                    files[f"{directory}/{name}"] = RenderedFile(content, mode=0o600, owner="keystone", group="keystone")
            out[unit.name] = files
        return out

    def frontends(self, app: AppContext) -> list[Frontend]:
        """VIP:5000 → every unit's :5000, HTTP check GET /v3, round robin (stateless API)."""
        return [Frontend(app=app.name, name=f"{app.name}-public", port=PORT, mode="http", check_path="/v3",
                         balance=str(app.options.get("balance", "roundrobin")),
                         servers=tuple((u.slug, str(u.address)) for u in app.units))]

    # ----------------------------------------------------------------- apply
    def _manage(self, unit, *args: str, timeout: float = 300) -> str:
        res = unit.host.run(["keystone-manage", *args], user="keystone", timeout=timeout)
        if not res.ok:
            tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
            raise KeystoneError(f"{unit.name}: keystone-manage {args[0]} failed (rc {res.rc}): {' | '.join(tail)}",
                                unit=unit.name)
        return res.stdout

    def _ensure_keys(self, app: AppContext) -> list[str]:
        """Make the fernet and credential keys once (on the leader) and keep them as secrets."""
        leader = app.units[0]
        changes = []
        for kind, directory in KEY_DIRS.items():
            if app.secrets.read(f"{kind}-keys") is not None:
                continue
            leader.host.run(["rm", "-rf", directory], check=True)
            self._manage(leader, f"{kind}_setup", "--keystone-user", "keystone", "--keystone-group", "keystone")
            app.secrets.put(f"{kind}-keys", json.dumps(self._read_keys(leader, directory)))
            changes.append(f"{kind} keys generated on {leader.name}")
        return changes

    def _read_keys(self, unit, directory: str) -> dict[str, str]:
        names = unit.host.run(["ls", directory], check=True).stdout.split()
        return {n: (unit.host.read_file(f"{directory}/{n}") or b"").decode() for n in names}

    def _install_keys(self, app: AppContext, unit, files) -> list[str]:
        """Make each key repository hold exactly the recorded keys (drop any stale ones)."""
        changed = []
        for kind, directory in KEY_DIRS.items():
            wanted = set(json.loads(app.secrets.read(f"{kind}-keys") or "{}"))
            unit.host.run(["install", "-d", "-m", "0700", "-o", "keystone", "-g", "keystone", directory], check=True)
            present = set(unit.host.run(["ls", directory], check=True).stdout.split())
            for stale in sorted(present - wanted):
                unit.host.run(["rm", "-f", f"{directory}/{stale}"], check=True)
                changed.append(f"{directory}/{stale} removed")
        return changed

    def apply(self, app: AppContext) -> list[str]:
        """Database, keys, config, db_sync + bootstrap once, uwsgi on every unit; wait for /v3.

        Returns what changed ([] when the cloud already matched).  Raises :class:`KeystoneError`
        naming the unit that failed."""
        from stackha.services import operator_for

        if not app.units:
            raise KeystoneError(f"{app.name} has no units")
        changes: list[str] = []
        db, db_host = self.database(app)
        galera = operator_for("galera")
        password = galera.ensure_database(db, "keystone", "keystone")
        if app.secrets.read("db-password") != password:
            app.secrets.put("db-password", password)
        leader = app.units[0]
        for unit in app.units:
            unit.host.run(["install", "-d", "-o", "keystone", "-g", "keystone", "/srv/keystone", "/srv/keystone/log"],
                          check=True)
        # The leader needs its config before keystone-manage can run there.
        rendered = self.render(app)
        changes += [f"{leader.name}: {p}" for p in install_files(leader.host, rendered[leader.name])]
        changes += self._ensure_keys(app)
        rendered = self.render(app)
        restart: set[str] = set()
        for unit in app.units:
            changed = install_files(unit.host, rendered[unit.name]) + self._install_keys(app, unit, rendered[unit.name])
            if any(p in (CONF, UWSGI_INI) for p in changed):
                restart.add(unit.name)
            changes += [f"{unit.name}: {p}" for p in changed]
        changes += self._sync_and_bootstrap(app, leader)
        for unit in app.units:
            running = unit.host.daemon(DAEMON)
            if running is not None and unit.name not in restart:
                continue
            if running is not None:
                unit.host.stop(DAEMON)
            unit.host.spawn(DAEMON, ["uwsgi", "--ini", UWSGI_INI], user="keystone")
            changes.append(f"{unit.name}: keystone {'restarted' if running else 'started'}")
        for unit in app.units:
            self._wait_ready(unit)
        return changes

    def _sync_and_bootstrap(self, app: AppContext, leader) -> list[str]:
        changes = []
        check = leader.host.run(["keystone-manage", "db_sync", "--check"], user="keystone", timeout=120)
        if check.rc != 0:
            self._manage(leader, "db_sync", timeout=600)
            changes.append(f"{leader.name}: keystone database schema synced")
        url = self.public_url(app)
        inputs = hashlib.sha256(json.dumps([url, REGION, self.admin_password(app)]).encode()).hexdigest()
        marker = "/srv/keystone/bootstrapped"
        if (leader.host.read_file(marker) or b"").decode() != inputs:
            self._manage(leader, "bootstrap", "--bootstrap-password", self.admin_password(app),
                         "--bootstrap-username", "admin", "--bootstrap-project-name", "admin",
                         "--bootstrap-role-name", "admin", "--bootstrap-service-name", "keystone",
                         "--bootstrap-region-id", REGION, "--bootstrap-admin-url", url,
                         "--bootstrap-internal-url", url, "--bootstrap-public-url", url)
            leader.host.write_file(marker, inputs, mode=0o600)
            changes.append(f"{leader.name}: bootstrap (admin, region {REGION}, identity endpoints on {url})")
        return changes

    def _probe(self, unit, timeout_s: float = 2.0) -> tuple[int, float]:
        """HTTP status of GET http://<unit>:5000/v3 from the unit's own host, and its time (s)."""
        res = unit.host.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                             "--max-time", str(timeout_s), f"http://{unit.address}:{PORT}/v3"], timeout=timeout_s + 5)
        try:
            code, secs = res.stdout.split()
            return int(code), float(secs)
        except ValueError:
            return 0, timeout_s

    def _wait_ready(self, unit) -> None:
        """Poll GET /v3 on ``unit`` every 0.5 s until 200; KeystoneError if uwsgi exits or after
        START_TIMEOUT_S seconds."""

        def attempt() -> int:
            if unit.host.daemon(DAEMON) is None:
                raise KeystoneError(f"{unit.name}: uwsgi exited: {log_tail(unit.host, DAEMON)}", unit=unit.name)
            return self._probe(unit)[0]

        try:
            Retrying(stop=stop_after_delay(START_TIMEOUT_S), wait=wait_fixed(0.5),
                     retry=retry_if_result(lambda code: code != 200))(attempt)
        except RetryError:
            raise KeystoneError(f"{unit.name}: /v3 not answering 200 after {START_TIMEOUT_S:.0f} s: "
                                f"{log_tail(unit.host, DAEMON)}", unit=unit.name) from None

    # ----------------------------------------------------------------- observe
    def observe(self, app: AppContext) -> AppStatus:
        """Per unit: active if uwsgi runs and GET /v3 answers 200 (facts: http code, latency ms)."""
        units = []
        for unit in app.units:
            if not unit.host.is_on():
                units.append(UnitStatus(unit.name, WorkloadState.ERROR, "host is powered off"))
                continue
            if unit.host.daemon(DAEMON) is None:
                units.append(UnitStatus(unit.name, WorkloadState.BLOCKED, "keystone (uwsgi) is not running"))
                continue
            code, secs = self._probe(unit)
            facts = {"http": code, "latency_ms": round(secs * 1000, 1)}
            if code == 200:
                units.append(UnitStatus(unit.name, WorkloadState.ACTIVE, "Unit is ready", facts))
            else:
                units.append(UnitStatus(unit.name, WorkloadState.BLOCKED, f"GET /v3 answered {code or 'nothing'}", facts))
        return AppStatus(app.name, units, {"endpoint": self.public_url(app)} if app.vip else {})

    def recover(self, app: AppContext) -> list[str]:
        """Start keystone again where it is not running (config and keys re-installed by apply)."""
        return self.apply(app)

    # ----------------------------------------------------------------- day 2
    def rotate_keys(self, app: AppContext) -> list[str]:
        """Rotate the fernet keys on the leader and distribute them to every unit.

        Tokens issued before the rotation stay valid: the old primary key becomes a secondary key
        (keystone's fernet rotation).  Returns what changed."""
        leader = app.units[0]
        self._manage(leader, "fernet_rotate", "--keystone-user", "keystone", "--keystone-group", "keystone")
        app.secrets.put("fernet-keys", json.dumps(self._read_keys(leader, KEY_DIRS["fernet"])))
        changes = [f"{leader.name}: fernet keys rotated"]
        rendered = self.render(app)
        for unit in app.units:
            changed = install_files(unit.host, rendered[unit.name]) + self._install_keys(app, unit, rendered[unit.name])
            changes += [f"{unit.name}: {p}" for p in changed]
        return changes

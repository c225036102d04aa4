"""What every service operator is given and returns.

An operator (one per component: Galera, RabbitMQ, HAProxy, keepalived, Keystone …) has:

- ``render(app) -> {unit name: {path: RenderedFile}}`` — pure: config files from the application's
  options, its units' addresses, its relations and recorded secrets (jinja2 templates in
  ``services/templates/<kind>/``);
- ``apply(app) -> list[str]`` — I/O, idempotent: install the files, start or reload the daemons, join
  the cluster; returns what it changed (empty when nothing did);
- ``observe(app) -> AppStatus`` — facts only, never changes anything: a workload status per unit
  (maintenance / waiting / active / blocked / error with a message, as Juju names them) plus
  component facts (``wsrep_cluster_size``, VIP holder, …);
- ``recover(app) -> list[str]`` where the component needs one (Galera cold start, RabbitMQ rejoin);
- ``frontends(app) -> list[Frontend]``: what the application offers on a load balancer's VIP;
- ``ha_resources(app) -> list[DaemonResource]``: daemons an ``hacluster`` related to it runs
  (active/passive workers, which must run on one node at a time).

These are declared by :class:`Operator` (a Protocol) and given defaults by :class:`BaseOperator`,
which every operator derives from: the engine calls them, it never asks ``hasattr``.  What one
application offers the others over a relation is a *relation protocol*, declared by the kind's
``provides`` in :data:`stackha.model.kinds.KINDS` (one registry) and typed here:
:class:`DatabaseProvider`, :class:`MessagingProvider`, :class:`VipProvider`,
:class:`IdentityProvider`.  :func:`provider` finds the related application offering one.

The engine builds an :class:`AppContext` for each application from the bundle, the placement and
the state store; operators never read the bundle or the state store directly.
"""

from __future__ import annotations

import ipaddress
import secrets as _secrets
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import jinja2

from stackha.hosts.base import Host

if TYPE_CHECKING:  # pragma: no cover
    from stackha.services.pacemaker import DaemonResource

TEMPLATES = Path(__file__).with_name("templates")


class WorkloadState(str, Enum):
    """Juju's workload states, as ``stackha status`` shows them."""

    MAINTENANCE = "maintenance"
    WAITING = "waiting"
    ACTIVE = "active"
    BLOCKED = "blocked"
    ERROR = "error"
    UNKNOWN = "unknown"


@dataclass
class UnitStatus:
    """One unit's observed state: workload ``state`` + human ``message`` + component ``facts``."""

    unit: str
    state: WorkloadState
    message: str = ""
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class AppStatus:
    """An application's observed state: per-unit status plus application-level facts
    (e.g. ``{"vip_holder": "demo-h4"}``)."""

    app: str
    units: list[UnitStatus] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


class Secrets(Protocol):
    """Generated secrets, stored 0600 by the engine; never printed or logged."""

    def get(self, name: str, *, length: int = 32) -> str:
        """The secret ``name``, generated (URL-safe, ``length`` characters) the first time."""
        ...

    def read(self, name: str) -> str | None:
        """The secret ``name`` if it was stored, else None (never generates)."""
        ...

    def put(self, name: str, value: str) -> None:
        """Store a secret made elsewhere (e.g. Keystone's fernet keys, made by keystone-manage)."""
        ...


class MemorySecrets:
    """A :class:`Secrets` held in memory (tests; the engine uses a 0600 file store)."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def get(self, name: str, *, length: int = 32) -> str:
        if name not in self._values:
            self._values[name] = generate_secret(length)
        return self._values[name]

    def read(self, name: str) -> str | None:
        return self._values.get(name)

    def put(self, name: str, value: str) -> None:
        self._values[name] = value


def select_tuning(table: dict[str, Any], tuning: str) -> Any:
    """``table[tuning]`` for a table of timer settings keyed by tuning ("stackha", "stock");
    :class:`stackha.errors.InvalidInput` naming the choices otherwise."""
    from stackha.errors import InvalidInput

    try:
        return table[tuning]
    except KeyError:
        raise InvalidInput(f"tuning {tuning!r}: use one of {', '.join(table)}") from None


def generate_secret(length: int = 32) -> str:
    """A random string of ``length`` characters from [A-Za-z0-9] (safe in every config syntax)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(_secrets.choice(alphabet) for _ in range(length))


@dataclass
class Unit:
    """A unit of an application, placed on a host.  ``name`` is Juju's ``app/N``."""

    name: str
    host: Host

    @property
    def address(self) -> ipaddress.IPv4Address:
        return self.host.address

    @property
    def number(self) -> int:
        return int(self.name.rsplit("/", 1)[1])

    @property
    def slug(self) -> str:
        """``app-N``: usable in file and daemon names."""
        return self.name.replace("/", "-")


@dataclass
class AppContext:
    """Everything an operator may use for one application.

    ``options``: the bundle's options for it; ``units``: its units in unit-number order;
    ``related``: related applications by name (each an AppContext, so an operator can read a
    peer's units and options — HAProxy derives its backends from them); ``secrets``: this
    application's secret store; ``vip``: its VIP (an interface such as 198.18.100.250/24) or None;
    ``tuning``: "stackha" (fast-failover timers) or "stock" (the defaults the anchors ship — the
    failover benchmark's baseline); ``frontends``: for a load balancer, what the applications
    related to it offer on the VIP (the engine fills it from each related operator's
    ``frontends()``).
    """

    name: str
    kind: str
    options: dict[str, Any]
    units: list[Unit]
    secrets: Secrets
    related: dict[str, "AppContext"] = field(default_factory=dict)
    vip: ipaddress.IPv4Interface | None = None
    tuning: str = "stackha"
    frontends: list["Frontend"] = field(default_factory=list)

    def related_of_kind(self, kind: str) -> list["AppContext"]:
        return [a for a in self.related.values() if a.kind == kind]

    def unit(self, name: str) -> Unit:
        for u in self.units:
            if u.name == name:
                return u
        raise KeyError(name)


@dataclass(frozen=True)
class RenderedFile:
    """A file an operator wants on a unit's host: text (or bytes: a Swift ring), mode (e.g.
    0o600), owner and group."""

    content: str | bytes
    mode: int = 0o644
    owner: str = "root"
    group: str | None = None


@dataclass(frozen=True)
class Frontend:
    """A service an application offers through the load balancer's VIP.

    ``port``: TCP port on the VIP and on each backend; ``mode``: "http" or "tcp";
    ``check_path``: the path of an HTTP health check (``option httpchk GET <path>``), None for a
    TCP connect check; ``check_port``: the port of that check when it is not ``port`` (Galera's
    clustercheck answers on 9200); ``single_writer``: one active server, the others ``backup``
    (Galera); ``balance``: roundrobin | leastconn | source | uri (seed 001);
    ``servers``: (server name, address) of each backend unit.
    """

    app: str
    name: str
    port: int
    mode: str = "tcp"
    check_path: str | None = None
    check_port: int | None = None
    single_writer: bool = False
    balance: str = "roundrobin"
    servers: tuple[tuple[str, str], ...] = ()  # (server name, address)


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_template(name: str, **values: Any) -> str:
    """Render ``services/templates/<name>`` with jinja2 (StrictUndefined: a missing value raises
    jinja2.UndefinedError rather than rendering an empty string)."""
    return _env.get_template(name).render(**values)


def log_tail(host: Host, daemon: str, lines: int = 3) -> str:
    """The last ``lines`` lines of daemon ``daemon``'s log on ``host``, joined by " | " (for error
    messages); "no log" when there is none or the host cannot be read."""
    from stackha.hosts.base import DAEMON_LOG_DIR, HostError

    try:
        data = host.read_file(f"{DAEMON_LOG_DIR}/{daemon}.log") or b""
    except HostError:
        return "no log"
    return " | ".join(data.decode(errors="replace").strip().splitlines()[-lines:]) or "no log"


def apply_where_on(app: AppContext, converge: Callable[[list[Unit]], list[str]]) -> list[str]:
    """``converge(units)`` on ``app``'s units whose host is on; then, when some host is off,
    :class:`~stackha.hosts.base.HostDown` naming those units.  Returns what ``converge`` changed
    (for per-host daemons whose apply is "the same on every host that is on")."""
    from stackha.hosts.base import HostDown

    up = [u for u in app.units if u.host.is_on()]
    changes = converge(up)
    down = [u for u in app.units if u not in up]
    if down:
        raise HostDown(f"{app.name}: cannot apply on powered-off host(s): "
                       f"{', '.join(f'{u.name} ({u.host.name})' for u in down)}")
    return changes


def install_files(host: Host, files: dict[str, RenderedFile]) -> list[str]:
    """Write rendered files on ``host``; returns the paths that changed."""
    changed = []
    for path, f in files.items():
        if host.write_file(path, f.content, mode=f.mode, owner=f.owner, group=f.group or (f.owner if f.owner != "root" else None)):
            changed.append(path)
    return changed


# --------------------------------------------------------------------------- operators
class Operator(Protocol):
    """What the engine calls on a component's operator (see the module docstring).

    ``render`` is pure; ``apply`` and ``recover`` are idempotent and return what they changed;
    ``observe`` changes nothing.  Errors: an operator raises an exception carrying ``unit`` (the
    unit that failed) where it knows one; the engine records it on that unit."""

    kind: str

    def render(self, app: AppContext) -> dict[str, dict[str, RenderedFile]]: ...

    def apply(self, app: AppContext) -> list[str]: ...

    def observe(self, app: AppContext) -> AppStatus: ...

    def recover(self, app: AppContext) -> list[str]: ...

    def frontends(self, app: AppContext) -> list[Frontend]: ...

    def ha_resources(self, app: AppContext) -> list["DaemonResource"]: ...


class BaseOperator:
    """Defaults for the optional parts of :class:`Operator`: ``recover`` is ``apply`` again,
    nothing is offered on a VIP, no daemon is handed to Pacemaker."""

    kind: str = ""

    def apply(self, app: AppContext) -> list[str]:  # pragma: no cover - every operator defines it
        raise NotImplementedError

    def recover(self, app: AppContext) -> list[str]:
        """Bring the application back to its deployed state (default: ``apply`` again)."""
        return self.apply(app)

    def frontends(self, app: AppContext) -> list[Frontend]:
        """What the application offers through a load balancer's VIP (default: nothing)."""
        return []

    def ha_resources(self, app: AppContext) -> list["DaemonResource"]:
        """Daemons an ``hacluster`` related to the application should run (default: none)."""
        return []


class DatabaseProvider(Protocol):
    """A SQL database cluster (kind ``galera``): relation ``shared-db``."""

    def ensure_database(self, app: AppContext, db_name: str, user: str) -> str:
        """Create database ``db_name`` and user ``user`` if missing; returns the user's password."""
        ...

    def client_address(self, app: AppContext) -> str:
        """The address clients connect to (the VIP that reaches one writer)."""
        ...


class MessagingProvider(Protocol):
    """A message broker cluster (kind ``rabbitmq``): relation ``amqp``."""

    def ensure_user(self, app: AppContext, user: str, vhost: str = "/", queue_type: str = "quorum") -> str:
        """Create ``user`` with all permissions on ``vhost`` (made with default queue type
        ``queue_type`` if missing); returns its password."""
        ...

    def transport_url(self, app: AppContext, user: str, password: str, vhost: str = "/") -> str:
        """An oslo.messaging transport URL listing every broker."""
        ...


class VipProvider(Protocol):
    """Whatever moves a VIP between hosts (keepalived VRRP, Pacemaker's IPaddr2)."""

    def vip_holders(self, app: AppContext) -> list[str]:
        """Names of the hosts holding the VIP right now (more than one: a duplicate VIP)."""
        ...


class IdentityProvider(Protocol):
    """The identity service (kind ``keystone``): relation ``identity-service``."""

    def ensure_service(self, app: AppContext, user: str, catalog: list[tuple[str, str, dict[str, str]]]
                       ) -> tuple[str, list[str]]:
        """Make service user ``user`` (admin role in project ``service``) and each catalog entry
        ``(service type, name, {"public"|"internal"|"admin": url})``; idempotent.  Returns the
        user's password and what changed."""
        ...

    def auth_url(self, app: AppContext) -> str:
        """The identity endpoint (``http://<VIP>:5000/v3``)."""
        ...


#: Relation capabilities a kind may declare in ``KindInfo.provides``, and their protocols.
CAPABILITIES: dict[str, type] = {
    "database": DatabaseProvider,
    "messaging": MessagingProvider,
    "vip": VipProvider,
    "identity": IdentityProvider,
}

def provider(app: AppContext, capability: str) -> tuple[AppContext, Any] | None:
    """The first related application (name order) whose kind declares ``capability``
    (``KindInfo.provides``), with its operator; None when no related application offers it."""
    from stackha.model.kinds import KINDS
    from stackha.services import operator_for

    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}")
    for name in sorted(app.related):
        other = app.related[name]
        info = KINDS.get(other.kind)
        if info is not None and capability in info.provides:
            op = operator_for(other.kind)
            if op is not None:
                return other, op
    return None

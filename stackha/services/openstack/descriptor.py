"""What an OpenStack service is made of, as data: the descriptor of one service kind.

Modelled on kolla-ansible's ``<service>_services`` map (one entry per container: its command, its
listening port, its health check, whether it is enabled): a :class:`Descriptor` names

- the **API daemons** (:class:`Api`): an HTTP server per unit, either a WSGI application run under
  uwsgi (``wsgi_file``) or a command that is its own server (``argv``: swift-proxy-server,
  neutron-server), with the port it listens on and the path of its health check — HAProxy checks
  that path on every unit and balances the VIP over the units that answer;
- the **workers** (:class:`Worker`): daemons without a port (nova-conductor, nova-scheduler,
  swift's replicators, masakari-engine), active/active (every unit runs one) or active/passive
  (one at a time: a Pacemaker resource where the bundle relates an ``hacluster``, else the
  leader's only);
- the **databases** (:class:`Database`) the service needs on the related Galera cluster, and the
  schema **sync** commands run once on the leader (``*-manage db sync``);
- the **catalog entries** (:class:`CatalogEntry`) registered in Keystone on the VIP;
- the **config files** rendered per unit from templates, which include the shared pieces in
  ``services/templates/openstack/`` (``[database]``, ``[keystone_authtoken]``,
  ``[oslo_messaging_rabbit]``).

Everything here is pure data: :class:`stackha.services.openstack.operator.OpenStackServiceOperator`
deploys it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ACTIVE_ACTIVE = "active/active"
ACTIVE_PASSIVE = "active/passive"


@dataclass(frozen=True)
class Api:
    """An HTTP API daemon run on every unit and offered on the VIP.

    ``name``: the daemon's name on the host (``nova-api``); ``port``: TCP port on the unit and on
    the VIP; ``health_path``: a GET answering one of ``health_codes`` while the daemon serves;
    ``wsgi_file``: run that WSGI script under uwsgi (``processes`` workers, ``env`` in the
    application's environment; ``threads`` per process: more than 1 only for an application that
    eventlet does not monkey-patch, and then a health check is answered while a long request
    runs), or ``argv``: run that command (an eventlet server of its own);
    ``frontend``: offered through the load balancer (False: reached on the unit only);
    ``user``: the account it runs as when not the service's.
    """

    name: str
    port: int
    health_path: str
    wsgi_file: str | None = None
    argv: tuple[str, ...] = ()
    health_codes: tuple[int, ...] = (200,)
    processes: int = 1
    threads: int = 1
    env: tuple[tuple[str, str], ...] = ()
    frontend: bool = True
    user: str | None = None

    def __post_init__(self) -> None:
        if bool(self.wsgi_file) == bool(self.argv):
            raise ValueError(f"api {self.name}: give exactly one of wsgi_file or argv")

    @property
    def uwsgi_ini(self) -> str:
        """Where its uwsgi ini is rendered (only for a WSGI daemon)."""
        return f"/srv/stackha/uwsgi/{self.name}.ini"


@dataclass(frozen=True)
class Worker:
    """A daemon without an API port: ``argv`` run as ``user`` (default: the service's);
    ``mode`` active/active (every unit) or active/passive (one unit at a time)."""

    name: str
    argv: tuple[str, ...]
    mode: str = ACTIVE_ACTIVE
    user: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in (ACTIVE_ACTIVE, ACTIVE_PASSIVE):
            raise ValueError(f"worker {self.name}: mode {self.mode!r}")


@dataclass(frozen=True)
class Database:
    """A database ``name`` on the related Galera cluster, used by ``user`` (one password per user);
    ``configured``: its URL is in the service's config (False: a database the service reaches
    another way — Nova's cell0, whose URL ``map_cell0`` derives from ``[database]``)."""

    name: str
    user: str
    configured: bool = True


@dataclass(frozen=True)
class CatalogEntry:
    """A Keystone catalog service (``type``, ``name``) with its public, internal and admin
    endpoints ``http://<VIP>:<port><path>`` (``path`` may hold Keystone's ``$(project_id)s``)."""

    type: str
    name: str
    port: int
    path: str = ""


@dataclass(frozen=True)
class Descriptor:
    """One OpenStack service kind (see the module docstring).

    ``kind``: the stackha kind; ``service``: the project's name (``nova``), used for the log and
    state directories; ``user``: the Unix account its daemons run as (made by Debian's package);
    ``config``: ``{path on the host: template}`` rendered for every unit (mode 0640, group
    ``user``); ``sync``: commands run on the leader, as ``user``, once per change of their inputs;
    ``service_user``: the Keystone user of the service (``[keystone_authtoken]``), None for a
    service that needs no identity relation; ``messaging``: it talks to RabbitMQ;
    ``vhost``: the RabbitMQ vhost of every OpenStack service (classic default queue type: oslo
    declares its reply and fanout queues transient, and its topic queues as quorum queues with
    ``rabbit_quorum_queue``); ``package``: the Debian package whose version is part of the sync
    inputs (an upgrade syncs again).
    """

    kind: str
    service: str
    user: str
    apis: tuple[Api, ...] = ()
    workers: tuple[Worker, ...] = ()
    config: dict[str, str] = field(default_factory=dict)
    databases: tuple[Database, ...] = ()
    sync: tuple[tuple[str, ...], ...] = ()
    catalog: tuple[CatalogEntry, ...] = ()
    service_user: str | None = None
    messaging: bool = False
    vhost: str = "openstack"
    package: str | None = None

    @property
    def daemons(self) -> tuple[str, ...]:
        """Every daemon name of the service (APIs then workers)."""
        return tuple(a.name for a in self.apis) + tuple(w.name for w in self.workers)

    @property
    def state_dir(self) -> str:
        """The service's own directory on a unit (sync markers, caches)."""
        return f"/srv/{self.service}"

    @property
    def log_dir(self) -> str:
        return f"/var/log/{self.service}"

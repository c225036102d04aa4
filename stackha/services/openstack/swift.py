"""Swift object storage: proxies active/active behind the VIP, storage nodes in zones, one ring.

As seed 000 deploys it (``swift-proxy`` ×3 with ``replicas: 3`` and a VIP, ``swift-storage`` on
their own machines with a ``zone``) and seed 003 explains it (data is kept as ``replicas`` copies
placed in distinct zones, so losing a zone loses no data; the proxy writes to a quorum of the
replicas and reads from any):

- **swift-storage** (:class:`SwiftStorageOperator`): each unit runs the account, container and
  object servers (ports 6202 / 6201 / 6200, ``healthcheck`` and ``recon`` in their pipelines), their
  replicators, auditors and updaters (account: no updater), and an rsync daemon (port 873, modules
  ``account``, ``container``, ``object``) the replicators push to.  Its device is the directory
  ``/srv/node/d1`` of the host's disk (``mount_check = false``).  Zone of a unit: with the proxy's
  ``zone-assignment: manual`` (the charm's default) the storage application's option ``zone``
  (default 1) — so a tier across zones is one application per zone (``swift-storage-z1`` …); with
  ``zone-assignment: auto`` units are dealt round-robin into ``replicas`` zones (seed 000).
- **swift-proxy** (:class:`SwiftProxyOperator`, an OpenStack service descriptor):
  ``swift-proxy-server`` on port 8080 on every unit, HAProxy on VIP:8080 checking
  ``/healthcheck``; ``authtoken`` + ``keystoneauth`` middleware (roles admin, member,
  swiftoperator); catalog entry ``object-store`` ``http://<VIP>:8080/v1/AUTH_$(project_id)s``.
  ``conn_timeout`` 0.25 s / ``node_timeout`` 3 s and ``sorting_method = timing`` with stackha's
  tuning (stock: 0.5 s / 10 s, shuffle), so a powered-off storage node costs a request a quarter
  of a second at most, and is soon asked last (:data:`TIMEOUTS`).
- **the rings** (:func:`ring_specs`, pure): account, container and object rings over every
  storage unit related to the proxy — one device per unit, ``r1z<zone>-<ip>:<port>/d1``, weight
  100 (option ``weight``), ``replicas`` (proxy option, default 3), partition power (proxy option
  ``partition-power``, default 8: 256 partitions, enough for a lab's handful of devices — Swift's
  guidance is about 100 partitions per device at the largest size the cluster will reach; real
  clouds use 16–22), ``min-hours`` (default 0: a lab adds nodes minutes apart).  They are built by
  Swift's own ``swift-ring-builder`` on a storage host with a fixed ``--seed``, which makes the build
  deterministic (LAB-NOTES: the same devices and seed give byte-identical rings); the builders and
  rings are kept in the proxy's secret store (0600) and the **same bytes** written to every proxy
  and storage node (a ``.ring.gz`` embeds a gzip timestamp, so rebuilding per node would differ).
  A later change of the storage units adds/removes devices in the kept builders and rebalances,
  as an operator would.  Swift's servers reload a changed ring by themselves.
- ``swift.conf`` (hash path prefix and suffix: generated secrets of the proxy application, the
  same on every node) and one storage policy.

``observe``: per node the daemons running and, for storage nodes, recon facts (last object
replication and its age, async pendings, quarantined objects); for the application the md5 of
each ring on every node and whether they all agree.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from dataclasses import asdict, dataclass
from typing import Any

from stackha.errors import InvalidInput
from stackha.services.base import AppContext, RenderedFile, Unit, UnitStatus, WorkloadState
from stackha.services.openstack.descriptor import Api, CatalogEntry, Descriptor, Worker
from stackha.services.openstack.operator import OpenStackServiceOperator, ServiceError

PROXY_PORT = 8080
PORTS = {"object": 6200, "container": 6201, "account": 6202}
RINGS = ("account", "container", "object")
SWIFT_CONF = "/etc/swift/swift.conf"
PROXY_CONF = "/etc/swift/proxy-server.conf"
RSYNC_CONF = "/etc/swift/rsyncd.conf"
DEVICES_DIR = "/srv/node"
DEVICE = "d1"
RING_SEED = 1
BUILD_DIR = "/srv/stackha/swift-ring"
RING_BUILDER = "swift-ring-builder"


def server_conf(kind: str) -> str:
    return f"/etc/swift/{kind}-server.conf"


def ring_path(name: str) -> str:
    return f"/etc/swift/{name}.ring.gz"


SWIFT_STORAGE = Descriptor(
    kind="swift-storage", service="swift", user="swift", package="swift-object",
    apis=tuple(Api(name=f"swift-{k}-server", port=PORTS[k], health_path="/healthcheck",
                   argv=(f"swift-{k}-server", server_conf(k)), frontend=False) for k in RINGS),
    workers=tuple(Worker(f"swift-{k}-{w}", (f"swift-{k}-{w}", server_conf(k)))
                  for k in RINGS for w in ("replicator", "auditor", "updater") if (k, w) != ("account", "updater"))
    + (Worker("swift-rsync", ("rsync", "--daemon", "--no-detach", f"--config={RSYNC_CONF}"), user="root"),),
    config={SWIFT_CONF: "swift/swift.conf.j2", RSYNC_CONF: "swift/rsyncd.conf.j2",
            **{server_conf(k): f"swift/{k}-server.conf.j2" for k in RINGS}},
)

SWIFT_PROXY = Descriptor(
    kind="swift-proxy", service="swift", user="swift", package="swift-proxy",
    apis=(Api(name="swift-proxy", port=PROXY_PORT, health_path="/healthcheck",
              argv=("swift-proxy-server", PROXY_CONF)),),
    config={SWIFT_CONF: "swift/swift.conf.j2", PROXY_CONF: "swift/proxy-server.conf.j2"},
    catalog=(CatalogEntry("object-store", "swift", PROXY_PORT, "/v1/AUTH_$(project_id)s"),),
    service_user="swift",
)

#: Swift's timeouts (s) per tuning.  Stock: Swift 2.30's defaults.  stackha: a TCP connect on a
#: LAN takes well under a millisecond, so 0.25 s only ever expires for a node that is down;
#: ``timing`` sorts the nodes a proxy asks by their recent answers, so a dead node is asked last.
TIMEOUTS = {"stackha": {"conn_timeout": 0.25, "node_timeout": 3, "sorting_method": "timing"},
            "stock": {"conn_timeout": 0.5, "node_timeout": 10, "sorting_method": "shuffle"}}


# --------------------------------------------------------------------------- rings (pure)
@dataclass(frozen=True)
class RingDevice:
    """One device of a ring: ``r<region>z<zone>-<ip>:<port>/<device>`` with ``weight``."""

    region: int
    zone: int
    ip: str
    port: int
    device: str
    weight: float

    @property
    def search(self) -> str:
        """swift-ring-builder's device notation (also its search value)."""
        return f"r{self.region}z{self.zone}-{self.ip}:{self.port}/{self.device}"


@dataclass(frozen=True)
class RingSpec:
    """What one ring is built from.  Same spec → same ring (fixed ``seed``)."""

    name: str
    part_power: int
    replicas: int
    min_part_hours: int
    devices: tuple[RingDevice, ...]
    seed: int = RING_SEED

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def commands(self, builder: str, previous: "RingSpec | None" = None) -> list[list[str]]:
        """swift-ring-builder invocations that turn ``previous`` (None: nothing) into this ring.

        A change of partition power or replica count starts again from ``create`` (a cloud in use
        would rather use ``set_replicas``; stackha builds new rings only before data arrives);
        otherwise devices are added, removed and re-weighted in the kept builder."""
        cmds: list[list[str]] = []
        if previous is None or (previous.part_power, previous.replicas) != (self.part_power, self.replicas):
            cmds.append([RING_BUILDER, builder, "create", str(self.part_power), str(self.replicas),
                         str(self.min_part_hours)])
            before: dict[str, RingDevice] = {}
        else:
            before = {d.search: d for d in previous.devices}
            if previous.min_part_hours != self.min_part_hours:
                cmds.append([RING_BUILDER, builder, "set_min_part_hours", str(self.min_part_hours)])
        now = {d.search: d for d in self.devices}
        for key in sorted(set(before) - set(now)):
            cmds.append([RING_BUILDER, builder, "remove", key])
        for key in sorted(now):
            dev = now[key]
            if key not in before:
                cmds.append([RING_BUILDER, builder, "add", key, f"{dev.weight:g}"])
            elif before[key].weight != dev.weight:
                cmds.append([RING_BUILDER, builder, "set_weight", key, f"{dev.weight:g}"])
        cmds.append([RING_BUILDER, builder, "rebalance", "--seed", str(self.seed)])
        return cmds


def storage_apps(proxy: AppContext) -> list[AppContext]:
    """The swift-storage applications related to ``proxy``, by name."""
    return sorted(proxy.related_of_kind("swift-storage"), key=lambda a: a.name)


def unit_zones(proxy: AppContext) -> dict[str, int]:
    """Zone of every storage unit (see the module docstring): ``{unit name: zone}``.

    Raises :class:`InvalidInput` for a zone that is not a positive integer or an unknown
    ``zone-assignment``."""
    mode = str(proxy.options.get("zone-assignment", "manual"))
    if mode not in ("manual", "auto"):
        raise InvalidInput(f"applications.{proxy.name}.options.zone-assignment: {mode!r}; use manual or auto")
    replicas = replica_count(proxy)
    out: dict[str, int] = {}
    i = 0
    for app in storage_apps(proxy):
        raw = app.options.get("zone", 1)
        try:
            zone = int(raw)
            if zone < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise InvalidInput(f"applications.{app.name}.options.zone: {raw!r}; give a zone number ≥ 1") from None
        for u in app.units:
            out[u.name] = zone if mode == "manual" else (i % replicas) + 1
            i += 1
    return out


def replica_count(proxy: AppContext) -> int:
    try:
        n = int(proxy.options.get("replicas", 3))
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= 6:
        raise InvalidInput(f"applications.{proxy.name}.options.replicas: {proxy.options.get('replicas')!r}; give 1 to 6")
    return n


def ring_specs(proxy: AppContext) -> dict[str, RingSpec]:
    """The account, container and object rings of the Swift cluster behind ``proxy`` (pure)."""
    zones = unit_zones(proxy)
    part_power = int(proxy.options.get("partition-power", 8))
    if not 1 <= part_power <= 24:
        raise InvalidInput(f"applications.{proxy.name}.options.partition-power: {part_power}; give 1 to 24")
    min_hours = int(proxy.options.get("min-hours", 0))
    specs = {}
    for name in RINGS:
        devices = tuple(RingDevice(1, zones[u.name], str(u.address), PORTS[name], DEVICE,
                                   float(app.options.get("weight", 100)))
                        for app in storage_apps(proxy) for u in app.units)
        specs[name] = RingSpec(name, part_power, replica_count(proxy), min_hours, devices)
    return specs


# --------------------------------------------------------------------------- rings (I/O)
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def stored_rings(proxy: AppContext) -> dict[str, bytes]:
    """``{ring name: .ring.gz bytes}`` as kept in the proxy's secret store (empty before a build)."""
    out = {}
    for name in RINGS:
        raw = proxy.secrets.read(f"ring-{name}-gz")
        if raw:
            out[name] = base64.b64decode(raw)
    return out


def ensure_rings(proxy: AppContext, build_host) -> list[str]:
    """Build the rings whose spec changed, on ``build_host`` with swift-ring-builder, and keep
    builder and ring in the proxy's secret store.  Returns what changed.  Raises
    :class:`ServiceError` when a swift-ring-builder call fails."""
    changes = []
    for name, spec in ring_specs(proxy).items():
        prev_raw = proxy.secrets.read(f"ring-{name}-spec")
        if prev_raw and json.loads(prev_raw).get("digest") == spec.digest() and proxy.secrets.read(f"ring-{name}-gz"):
            continue
        previous = None
        builder = f"{BUILD_DIR}/{name}.builder"
        build_host.run(["rm", "-rf", BUILD_DIR], check=True)
        build_host.run(["mkdir", "-p", BUILD_DIR], check=True)
        kept = proxy.secrets.read(f"ring-{name}-builder")
        if prev_raw and kept:
            prev = json.loads(prev_raw)["spec"]
            previous = RingSpec(**{**prev, "devices": tuple(RingDevice(**d) for d in prev["devices"])})
            build_host.write_file(builder, base64.b64decode(kept), mode=0o600)
        for argv in spec.commands(builder, previous):
            res = build_host.run(argv, timeout=120)
            # swift-ring-builder: 0 ok, 1 warning (e.g. min_part_hours kept parts in place), 2 error
            if res.rc not in (0, 1):
                tail = (res.stdout + res.stderr).strip().splitlines()[-2:]
                raise ServiceError(f"{proxy.name}: `{' '.join(argv[2:4])}` on the {name} ring failed: {' | '.join(tail)}")
        ring = build_host.read_file(f"{BUILD_DIR}/{name}.ring.gz")
        if not ring:
            raise ServiceError(f"{proxy.name}: swift-ring-builder wrote no {name}.ring.gz")
        proxy.secrets.put(f"ring-{name}-builder", _b64(build_host.read_file(builder) or b""))
        proxy.secrets.put(f"ring-{name}-gz", _b64(ring))
        proxy.secrets.put(f"ring-{name}-spec", json.dumps({"digest": spec.digest(), "spec": asdict(spec)}))
        changes.append(f"{name} ring built ({len(spec.devices)} devices, {spec.replicas} replicas, "
                       f"2^{spec.part_power} partitions, md5 {hashlib.md5(ring).hexdigest()[:8]})")
    build_host.run(["rm", "-rf", BUILD_DIR])
    return changes


def ring_files(proxy: AppContext) -> dict[str, RenderedFile]:
    return {ring_path(n): RenderedFile(data, mode=0o644) for n, data in stored_rings(proxy).items()}


def ring_md5s(unit: Unit) -> dict[str, str | None]:
    """md5 of each ring file on ``unit``'s host (None where it is missing)."""
    res = unit.host.run(["md5sum", *(ring_path(n) for n in RINGS)], timeout=20)
    sums = {line.split()[1]: line.split()[0] for line in res.stdout.splitlines() if len(line.split()) == 2}
    return {n: sums.get(ring_path(n)) for n in RINGS}


def rings_agree(units: list[Unit]) -> dict[str, Any]:
    """``{"ring_md5": {unit: {ring: md5}}, "rings_agree": bool}`` over the units that are on."""
    seen = {}
    for u in units:
        try:
            if u.host.is_on():
                seen[u.name] = ring_md5s(u)
        except Exception as exc:  # a host that dies while being read
            seen[u.name] = {"error": str(exc)}
    distinct = {json.dumps(v, sort_keys=True) for v in seen.values()}
    return {"ring_md5": seen, "rings_agree": len(distinct) == 1 and None not in next(iter(seen.values()), {}).values()}


# --------------------------------------------------------------------------- operators
class _SwiftMixin:
    """What proxies and storage nodes share: swift.conf, the rings, the proxy they belong to."""

    def proxy_of(self, app: AppContext) -> AppContext:
        raise NotImplementedError

    def swift_values(self, app: AppContext) -> dict[str, Any]:
        proxy = self.proxy_of(app)
        return {"hash_prefix": proxy.secrets.get("hash-path-prefix"), "hash_suffix": proxy.secrets.get("hash-path-suffix"),
                "ports": PORTS, "devices_dir": DEVICES_DIR,
                **TIMEOUTS.get(app.tuning, TIMEOUTS["stackha"])}


class SwiftStorageOperator(_SwiftMixin, OpenStackServiceOperator):
    """Operator for kind ``swift-storage`` (see the module docstring)."""

    descriptor = SWIFT_STORAGE

    def proxy_of(self, app: AppContext) -> AppContext:
        proxies = sorted(app.related_of_kind("swift-proxy"), key=lambda a: a.name)
        if not proxies:
            raise ServiceError(f"{app.name} needs a relation to swift-proxy (add `- [swift-proxy, {app.name}]`)")
        return proxies[0]

    def values(self, app: AppContext) -> dict[str, Any]:
        return {**super().values(app), **self.swift_values(app),
                "workers": int(app.options.get("workers", 0)),
                "replicator_interval": int(app.options.get("replicator-interval", 30)),
                "auditor_interval": int(app.options.get("auditor-interval", 1800)),
                "updater_interval": int(app.options.get("updater-interval", 30))}

    def unit_files(self, app: AppContext, unit: Unit, values: dict[str, Any]) -> dict[str, RenderedFile]:
        return ring_files(self.proxy_of(app))

    def prepare(self, app: AppContext, leader: Unit) -> list[str]:
        """The device directory on every unit, then the rings (built on the leader's host)."""
        for unit in app.units:
            unit.host.run(["install", "-d", "-o", "swift", "-g", "swift", DEVICES_DIR, f"{DEVICES_DIR}/{DEVICE}",
                           "/var/cache/swift"], check=True)
        return ensure_rings(self.proxy_of(app), leader.host)

    def observe_unit(self, app: AppContext, unit: Unit) -> UnitStatus:
        """The base checks, then recon facts from the object server."""
        status = super().observe_unit(app, unit)
        if status.state != WorkloadState.ACTIVE:
            return status
        status.facts.update(recon_facts(unit))
        return status

    def app_facts(self, app: AppContext) -> dict[str, Any]:
        return rings_agree(app.units)


def recon_facts(unit: Unit) -> dict[str, Any]:
    """Recon (the object server's ``/recon``): last object replication (time, age s, failures),
    async pendings, quarantined objects.  Missing answers are left out."""
    facts: dict[str, Any] = {}
    base = f"http://{unit.address}:{PORTS['object']}/recon"
    for what in ("replication/object", "async", "quarantined"):
        res = unit.host.run(["curl", "-s", "--max-time", "2", f"{base}/{what}"], timeout=10)
        try:
            data = json.loads(res.stdout)
        except ValueError:
            continue
        if what == "replication/object":
            last = data.get("object_replication_last")
            facts["replication_last"] = last
            facts["replication_age_s"] = round(time.time() - last, 1) if last else None
            facts["replication_failures"] = (data.get("replication_stats") or {}).get("failure")
        elif what == "async":
            facts["async_pending"] = data.get("async_pending")
        else:
            facts["quarantined"] = data.get("objects")
    return facts


class SwiftProxyOperator(_SwiftMixin, OpenStackServiceOperator):
    """Operator for kind ``swift-proxy`` (see the module docstring)."""

    descriptor = SWIFT_PROXY

    def proxy_of(self, app: AppContext) -> AppContext:
        return app

    def values(self, app: AppContext) -> dict[str, Any]:
        v = {**super().values(app), **self.swift_values(app),
             "port": PROXY_PORT, "workers": int(app.options.get("workers", 0))}
        return v

    def unit_files(self, app: AppContext, unit: Unit, values: dict[str, Any]) -> dict[str, RenderedFile]:
        return ring_files(app)

    def prepare(self, app: AppContext, leader: Unit) -> list[str]:
        """The rings, if the storage tier has not built them yet (built on the first storage host
        that is on, else on the leader's host)."""
        if not storage_apps(app):
            raise ServiceError(f"{app.name} needs a relation to swift-storage (add `- [{app.name}, swift-storage]`)")
        build = next((u.host for s in storage_apps(app) for u in s.units if u.host.is_on()), leader.host)
        return ensure_rings(app, build)

    def app_facts(self, app: AppContext) -> dict[str, Any]:
        return {**super().app_facts(app), **rings_agree(app.units),
                "replicas": replica_count(app), "zones": sorted(set(unit_zones(app).values()))}


REPLICAS_SCRIPT = Path(__file__).with_name("swift_replicas.py")
REPLICAS_PATH = "/srv/stackha/swift_replicas.py"


def object_replicas(proxy: AppContext, account: str, container: str, objects: list[str]) -> dict[str, Any]:
    """How many of their ``replicas`` copies each object has on its primary nodes, asked of the
    storage servers directly from a proxy unit that is on (:mod:`.swift_replicas`):
    ``{"replicas": 3, "found": {object: copies}, "etags": {object: [md5, …]}}``.
    Raises :class:`ServiceError` when no proxy is on or the check fails."""
    unit = next((u for u in proxy.units if u.host.is_on()), None)
    if unit is None:
        raise ServiceError(f"{proxy.name}: no unit is on to count replicas from")
    unit.host.write_file(REPLICAS_PATH, REPLICAS_SCRIPT.read_text(), mode=0o644)
    res = unit.host.run(["/usr/bin/python3", REPLICAS_PATH], timeout=120,
                        input=json.dumps({"account": account, "container": container, "objects": objects}))
    if not res.ok:
        raise ServiceError(f"{unit.name}: counting replicas failed: {(res.stderr or res.stdout).strip()[-300:]}")
    return json.loads(res.stdout)

"""Nova (26, Zed): the controller services behind the VIP, and compute hosts.

**nova-cloud-controller** (the charm name seed 000 uses; :class:`NovaControllerOperator`): on every
unit ``nova-api`` (osapi_compute, port 8774) and the metadata API (port 8775), both under uwsgi and
both offered on the VIP (HAProxy checks ``GET /``, the version document), plus ``nova-conductor``
and ``nova-scheduler`` — active/active, each takes work from RabbitMQ (every broker in
``transport_url``, quorum queues).  Cells v2 as Nova documents the set-up: databases ``nova_api``,
``nova`` (cell1) and ``nova_cell0`` on the Galera VIP; ``api_db sync``, ``cell_v2 map_cell0``
(cell0's URL is derived from ``[database]``, so no password is ever on a command line),
``cell_v2 create_cell --name cell1`` (skipped when it exists), ``db sync``.  Catalog ``compute``
on ``http://<VIP>:8774/v2.1``.  ``stackha status`` shows the compute services as Nova sees them
(up/down, enabled/disabled, forced down).

**nova-compute** (:class:`NovaComputeOperator`): a compute host per unit running Debian's
nova-compute code (python3-nova, through a wrapper script: the nova-compute package drags a
hypervisor) with ``compute_driver`` from the option ``compute-driver`` — ``fake.FakeDriver`` by
default, so the lab's instances are real Nova objects (scheduled, placed in Placement, migrated,
evacuated) without a hypervisor; a real machine sets ``libvirt.LibvirtDriver`` unchanged.  Each
unit's Nova host name is its machine's host name (Pacemaker, Nova and Masakari must agree on it:
LAB-NOTES "Masakari").  After the computes start, ``nova-manage cell_v2 discover_hosts`` runs on
the controller, so new hosts are mapped into cell1 at once (the scheduler also discovers every
30 s).  Messaging through the related RabbitMQ; identity and the controller through the related
nova-cloud-controller (as Juju's ``cloud-compute`` relation gives them).
"""

from __future__ import annotations

from typing import Any

from stackha.hosts.base import HostError
from stackha.services.base import AppContext, RenderedFile, Unit, provider
from stackha.services.openstack.descriptor import Api, CatalogEntry, Database, Descriptor, Worker
from stackha.services.openstack.operator import OpenStackServiceOperator, ServiceError

API_PORT = 8774
METADATA_PORT = 8775
CONF = "/etc/nova/nova.conf"
COMPUTE_CONF = "/etc/nova/nova-compute.conf"
COMPUTE_BIN = "/srv/nova/bin/nova-compute"

NOVA = Descriptor(
    kind="nova-cloud-controller", service="nova", user="nova", package="nova-api", messaging=True,
    # nova-api is monkey-patched by eventlet (nova.monkey_patch): no uwsgi threads; two processes,
    # so one long request does not hold up HAProxy's health check.
    apis=(Api(name="nova-api", port=API_PORT, health_path="/", wsgi_file="/usr/bin/nova-api-wsgi", processes=2),
          Api(name="nova-metadata", port=METADATA_PORT, health_path="/", wsgi_file="/usr/bin/nova-metadata-wsgi",
              processes=1)),
    workers=(Worker("nova-conductor", ("nova-conductor", f"--config-file={CONF}")),
             Worker("nova-scheduler", ("nova-scheduler", f"--config-file={CONF}"))),
    config={CONF: "nova/nova.conf.j2"},
    databases=(Database("nova_api", "nova"), Database("nova", "nova"), Database("nova_cell0", "nova", configured=False)),
    sync=(("nova-manage", "api_db", "sync"), ("nova-manage", "cell_v2", "map_cell0"),
          ("nova-manage", "cell_v2", "create_cell", "--name", "cell1"), ("nova-manage", "db", "sync")),
    catalog=(CatalogEntry("compute", "nova", API_PORT, "/v2.1"),),
    service_user="nova",
)

NOVA_COMPUTE = Descriptor(
    kind="nova-compute", service="nova", user="nova", package="python3-nova", messaging=True,
    workers=(Worker("nova-compute", (COMPUTE_BIN, f"--config-file={COMPUTE_CONF}")),),
    config={COMPUTE_CONF: "nova/nova-compute.conf.j2"},
    service_user="nova",
)

#: Nova's heartbeat timers (s) per tuning: how often a service reports, and after how long without
#: a report Nova calls it down.  Stock: Nova's defaults (10 / 60).  stackha keeps Nova's 60 s
#: service_down_time: a compute's report goes to a conductor over RabbitMQ, and after a controller
#: power-off it stalled 27 s (nova-compute: "_report_state run outlasted interval by 24.88 sec",
#: tests/lab/test_cloud.py::test_compute_after_a_controller_power_off) while its broker connection
#: failed over — with the 10 s tried before, Nova then called every compute down and the
#: scheduler answered NoValidHost.  A dead compute is found by instance HA (the host monitor,
#: then a forced down: :mod:`stackha.instanceha`), not by this timer; reporting every 5 s only
#: makes ``openstack compute service list`` fresher.
HEARTBEAT = {"stackha": {"report_interval": 5, "service_down_time": 60},
             "stock": {"report_interval": 10, "service_down_time": 60}}


#: Seconds the Nova controller waits for Placement's endpoint before its workers start.
PLACEMENT_WAIT_S = 300.0


def _heartbeat(app: AppContext) -> dict[str, int]:
    return HEARTBEAT.get(app.tuning, HEARTBEAT["stackha"])


class NovaControllerOperator(OpenStackServiceOperator):
    """Operator for kind ``nova-cloud-controller`` (see the module docstring)."""

    descriptor = NOVA

    def values(self, app: AppContext) -> dict[str, Any]:
        return {**super().values(app), **_heartbeat(app), "workers": int(app.options.get("workers", 1)),
                "metadata_secret": app.secrets.get("metadata-secret")}

    def cells_setup(self, app: AppContext, leader: Unit) -> list[str]:
        """The cells v2 set-up (module docstring), once per change of its inputs."""
        d = self.descriptor
        marker = f"{d.state_dir}/synced"
        inputs = self.sync_inputs(app, leader)
        if (leader.host.read_file(marker) or b"").decode() == inputs:
            return []
        for argv in d.sync:
            if argv[1:3] == ("cell_v2", "create_cell"):
                cells = self.run_as_service(leader, ["nova-manage", "cell_v2", "list_cells"])
                if any(line.split("|")[1].strip() == "cell1" for line in cells.splitlines() if line.count("|") > 2):
                    continue
            self.run_as_service(leader, argv, timeout=900)
        leader.host.write_file(marker, inputs, mode=0o600)
        return [f"{leader.name}: nova api_db sync, cell0 and cell1 mapped, db sync"]

    def sync(self, app: AppContext, leader: Unit) -> list[str]:
        """The cells v2 set-up, then wait for Placement to serve through the VIP: nova-scheduler
        exits at start when Placement has no endpoint, or one that does not answer (stackha
        deploys Placement beside Nova, not before it)."""
        changes = self.cells_setup(app, leader)
        if app.related_of_kind("placement"):
            self.wait_for_placement(app)
        return changes

    def wait_for_placement(self, app: AppContext, deadline_s: float = PLACEMENT_WAIT_S) -> None:
        """Poll until Placement answers through its catalog endpoint (:mod:`.query`'s
        ``placement_ready``); :class:`ServiceError` after ``deadline_s`` (s)."""
        from stackha.polling import WaitTimeout, wait_until

        id_app, id_op = self.identity(app)
        try:
            wait_until(lambda: id_op.query(id_app, "placement_ready") is True, deadline_s, 2.0,
                       what="Placement answering through the VIP", ignore=(HostError,))
        except WaitTimeout as exc:
            raise ServiceError(f"{app.name}: {exc}") from None

    def discover_hosts(self, app: AppContext) -> list[str]:
        """``nova-manage cell_v2 discover_hosts`` on the first unit that is on; what it mapped."""
        unit = next((u for u in app.units if u.host.is_on()), None)
        if unit is None:
            raise ServiceError(f"{app.name}: no unit is on to discover compute hosts")
        out = self.run_as_service(unit, ["nova-manage", "cell_v2", "discover_hosts", "--verbose"], timeout=300)
        mapped = [line for line in out.splitlines() if "Creating host mapping" in line]
        return [f"{unit.name}: {line.strip()}" for line in mapped]

    def compute_services(self, app: AppContext) -> list[dict]:
        """Nova's view of its compute services (``GET /os-services``) through the VIP."""
        id_app, id_op = self.identity(app)
        return [s for s in id_op.query(id_app, "compute_services") if s["binary"] == "nova-compute"]

    def app_facts(self, app: AppContext) -> dict[str, Any]:
        facts = super().app_facts(app)
        try:
            facts["compute_services"] = {s["host"]: f"{s['state']}/{s['status']}" + ("/forced-down" if s["forced_down"] else "")
                                         for s in self.compute_services(app)}
        except (HostError, KeyError) as exc:
            facts["compute_services"] = f"unknown: {exc}"
        return facts


class NovaComputeOperator(OpenStackServiceOperator):
    """Operator for kind ``nova-compute`` (see the module docstring)."""

    descriptor = NOVA_COMPUTE

    def controller(self, app: AppContext) -> AppContext:
        ctls = sorted(app.related_of_kind("nova-cloud-controller"), key=lambda a: a.name)
        if not ctls:
            raise ServiceError(f"{app.name} needs a relation to nova-cloud-controller "
                               f"(add `- [{app.name}, nova-cloud-controller]`)")
        return ctls[0]

    def identity(self, app: AppContext):
        found = provider(app, "identity") or provider(self.controller(app), "identity")
        if found is None:
            raise ServiceError(f"{self.controller(app).name} needs a relation to keystone")
        return found

    def values(self, app: AppContext) -> dict[str, Any]:
        self.controller(app)
        return {**super().values(app), **_heartbeat(app),
                "compute_driver": str(app.options.get("compute-driver", "fake.FakeDriver"))}

    def unit_files(self, app: AppContext, unit: Unit, values: dict[str, Any]) -> dict[str, RenderedFile]:
        from stackha.services.base import render_template

        return {COMPUTE_BIN: RenderedFile(render_template("nova/nova-compute.py.j2"), mode=0o755)}

    def prepare(self, app: AppContext, leader: Unit) -> list[str]:
        for unit in app.units:
            unit.host.run(["install", "-d", "-o", "nova", "-g", "nova", "/var/lib/nova/instances"], check=True)
        return []

    def after_start(self, app: AppContext) -> list[str]:
        """Map the new hosts into cell1 (on the controller), once Nova sees them up."""
        from stackha.polling import wait_until

        ctl = self.controller(app)
        op = NovaControllerOperator()
        wanted = {u.host.name for u in app.units if u.host.is_on()}

        def registered() -> bool:
            return wanted <= {s["host"] for s in op.compute_services(ctl)}

        # ServiceError: the API is not reachable through the VIP yet (HAProxy marks a new backend
        # UP after its `rise` checks) — not yet, not a failure.
        wait_until(registered, 180, 2, what=f"{app.name}: compute services registered in Nova",
                   ignore=(ServiceError,), error=lambda msg: ServiceError(msg))
        return op.discover_hosts(ctl)

    def app_facts(self, app: AppContext) -> dict[str, Any]:
        try:
            services = NovaControllerOperator().compute_services(self.controller(app))
        except (HostError, KeyError) as exc:
            return {"compute_services": f"unknown: {exc}"}
        mine = {u.host.name for u in app.units}
        return {"compute_services": {s["host"]: f"{s['state']}/{s['status']}" + ("/forced-down" if s["forced_down"] else "")
                                     for s in services if s["host"] in mine}}

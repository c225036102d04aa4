"""Neutron (neutron-server 21, Zed) active/active behind the VIP: ML2, no agents yet.

Each unit runs ``neutron-server`` (API and RPC workers; ``workers`` option, default 1 each) on
port 9696; HAProxy checks ``/healthcheck``.  ML2 with type drivers flat (provider network
``physnet1``) and vxlan (project networks); no mechanism driver and no L2 agent in the lab, so
ports are created and stored but not bound (servers boot without ports: LAB-NOTES).  The ``router``
service plugin is loaded.  Catalog: ``network`` on ``http://<VIP>:9696``.
"""

from __future__ import annotations

from typing import Any

from stackha.services.base import AppContext
from stackha.services.openstack.descriptor import Api, CatalogEntry, Database, Descriptor
from stackha.services.openstack.operator import OpenStackServiceOperator

PORT = 9696
CONF = "/etc/neutron/neutron.conf"
ML2 = "/etc/neutron/plugins/ml2/ml2_conf.ini"
ARGS = (f"--config-file={CONF}", f"--config-file={ML2}")

NEUTRON = Descriptor(
    kind="neutron-api", service="neutron", user="neutron", package="neutron-server", messaging=True,
    apis=(Api(name="neutron-server", port=PORT, health_path="/healthcheck", argv=("neutron-server", *ARGS)),),
    config={CONF: "neutron/neutron.conf.j2", ML2: "neutron/ml2_conf.ini.j2"},
    databases=(Database("neutron", "neutron"),),
    sync=(("neutron-db-manage", *ARGS, "upgrade", "heads"),),
    catalog=(CatalogEntry("network", "neutron", PORT),),
    service_user="neutron",
)


class NeutronOperator(OpenStackServiceOperator):
    """Operator for kind ``neutron-api`` (see the module docstring)."""

    descriptor = NEUTRON

    def values(self, app: AppContext) -> dict[str, Any]:
        return {**super().values(app), "port": PORT, "workers": int(app.options.get("workers", 1)),
                "physnet": str(app.options.get("flat-network-providers", "physnet1")).split()[0]}

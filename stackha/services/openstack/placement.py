"""Placement (placement-api 8, Zed) active/active behind the VIP.

Each unit runs ``placement-api`` under uwsgi on port 8778 (HAProxy checks ``GET /``, the version
document, which needs no token); its database ``placement`` is on the Galera VIP.  Catalog:
``placement`` on ``http://<VIP>:8778``.
"""

from __future__ import annotations

from stackha.services.openstack.descriptor import Api, CatalogEntry, Database, Descriptor
from stackha.services.openstack.operator import OpenStackServiceOperator

PORT = 8778
CONF = "/etc/placement/placement.conf"

PLACEMENT = Descriptor(
    kind="placement", service="placement", user="placement", package="placement-api",
    apis=(Api(name="placement-api", port=PORT, health_path="/", wsgi_file="/usr/bin/placement-api",
              threads=4),),
    config={CONF: "placement/placement.conf.j2"},
    databases=(Database("placement", "placement"),),
    sync=(("placement-manage", "db", "sync"),),
    catalog=(CatalogEntry("placement", "placement", PORT),),
    service_user="placement",
)


class PlacementOperator(OpenStackServiceOperator):
    """Operator for kind ``placement`` (see the module docstring)."""

    descriptor = PLACEMENT

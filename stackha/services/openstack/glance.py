"""Glance (glance-api 25, Zed) active/active behind the VIP, images stored in Swift.

Each unit runs ``glance-api`` (its own eventlet server: image uploads stream through it, which
uwsgi's http-socket handles poorly) on port 9292, one process with a pool of green threads
(``workers = 0``; option ``workers``); HAProxy checks ``/healthcheck``.  Images live in
Swift (seed 000 relates glance to swift-proxy), in container ``glance`` of the ``service`` project
as the glance service user, so any unit serves any image and losing a unit loses no image.
Catalog: ``image`` on ``http://<VIP>:9292``.
"""

from __future__ import annotations

from typing import Any

from stackha.services.base import AppContext
from stackha.services.openstack.descriptor import Api, CatalogEntry, Database, Descriptor
from stackha.services.openstack.operator import OpenStackServiceOperator, ServiceError

PORT = 9292
CONF = "/etc/glance/glance-api.conf"

GLANCE = Descriptor(
    kind="glance", service="glance", user="glance", package="glance-api",
    apis=(Api(name="glance-api", port=PORT, health_path="/healthcheck",
              argv=("glance-api", f"--config-file={CONF}")),),
    config={CONF: "glance/glance-api.conf.j2", "/etc/glance/glance-swift.conf": "glance/glance-swift.conf.j2"},
    databases=(Database("glance", "glance"),),
    # db_load_metadefs: the metadata definitions of /etc/glance/metadefs (Debian ships 33), which
    # the package's own set-up loads and a bare db_sync does not — without them Horizon's and
    # Tempest's metadefs calls find no resource type (tempest.api.image.v2.admin.test_images_metadefs_*
    # failed on examples/lab-cloud.yaml).  Idempotent: existing namespaces are skipped.
    sync=(("glance-manage", f"--config-file={CONF}", "db_sync"),
          ("glance-manage", f"--config-file={CONF}", "db_load_metadefs")),
    catalog=(CatalogEntry("image", "glance", PORT),),
    service_user="glance",
)


class GlanceOperator(OpenStackServiceOperator):
    """Operator for kind ``glance`` (see the module docstring)."""

    descriptor = GLANCE

    def values(self, app: AppContext) -> dict[str, Any]:
        if not app.related_of_kind("swift-proxy"):
            raise ServiceError(f"{app.name} stores images in Swift: relate it to swift-proxy "
                               f"(add `- [{app.name}, swift-proxy]`)")
        return {**super().values(app), "port": PORT, "workers": int(app.options.get("workers", 0))}

    def prepare(self, app: AppContext, leader) -> list[str]:
        for unit in app.units:
            unit.host.run(["install", "-d", "-o", "glance", "-g", "glance", "/var/lib/glance/staging",
                           "/var/lib/glance/tasks"], check=True)
        return []

"""Instance HA: what stackha adds to the real Masakari (DESIGN.md, "instance HA").

Masakari itself (Debian's masakari-api and masakari-engine) is deployed by
:mod:`stackha.services.openstack.masakari` like any other OpenStack service.  This package is
stackha's own part:

- :mod:`.segments` — failover segments declared in the bundle (the masakari application's
  ``segments`` option) resolved to Nova host names;
- :mod:`.masakari_api` — a self-contained openstacksdk script run on a cloud host: segments
  created idempotently through Masakari's API, a failed host forced down in Nova and reported to
  Masakari, a repaired host re-admitted;
- :mod:`.recovery` — the glue: fence a compute host, force its compute service down, post the
  COMPUTE_HOST notification, follow it; re-admit a host.
"""

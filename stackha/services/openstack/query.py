"""Read facts from the OpenStack APIs through the VIP: a self-contained openstacksdk script.

Run ON A LAB (or real) HOST with Debian's interpreter (python3-openstacksdk), one JSON document on
stdin (credentials never on the command line)::

    {"auth": {...keystoneauth password values...}, "region": "RegionOne", "query": "compute_services"}

and one JSON document on stdout.  Queries:

- ``compute_services``: ``[{"host", "binary", "state" (up/down as Nova sees the heartbeats),
  "status" (enabled/disabled), "forced_down", "zone"}]`` (Nova ``GET /os-services``, microversion
  2.11 for ``forced_down``);
- ``service_types``: the service types in Keystone's catalog (``["compute", "identity", …]``);
- ``placement_ready``: true when Placement answers ``GET /`` through its catalog endpoint (an
  error — no endpoint, or nothing serving behind it yet — exits 1).

Exit 1 with a one-line message on stderr on failure.  Imports nothing from stackha.
"""

from __future__ import annotations

import json
import sys


def compute_services(conn) -> list[dict]:
    out = []
    for s in conn.compute.services():
        out.append({"host": s.host, "binary": s.binary, "state": s.state, "status": s.status,
                    "forced_down": bool(getattr(s, "is_forced_down", False)), "zone": s.availability_zone})
    return out


def service_types(conn) -> list[str]:
    return sorted({s.type for s in conn.identity.services()})


def placement_ready(conn) -> bool:
    """Placement answers its version document through its catalog endpoint (the VIP)."""
    return conn.placement.get("/").status_code == 200


QUERIES = {"compute_services": compute_services, "service_types": service_types,
           "placement_ready": placement_ready}


def main() -> int:
    import openstack

    req = json.load(sys.stdin)
    conn = openstack.connect(auth=req["auth"], region_name=req["region"], auth_type="password",
                             compute_api_version="2.11", api_timeout=30)
    json.dump(QUERIES[req["query"]](conn), sys.stdout)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}".splitlines()[0][:300], file=sys.stderr)
        sys.exit(1)

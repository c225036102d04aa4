"""Count the replicas of Swift objects on their primary nodes: a self-contained script.

Run ON A SWIFT NODE (it reads ``/etc/swift/object.ring.gz`` and ``swift.conf``) with Debian's
interpreter, which has python3-swift; input on stdin, output on stdout, both JSON::

    {"account": "AUTH_…", "container": "c", "objects": ["o1", "o2", …]}
    → {"replicas": 3, "found": {"o1": 3, "o2": 2, …}, "etags": {"o1": ["<md5>", …], …}}

For each object it asks Swift's own ring for the partition and the primary nodes
(``Ring.get_nodes``) and sends each of them a HEAD with ``swift.common.direct_client`` — the
storage servers' backend API, as ``swift-get-nodes`` prints it — so a copy counts only if that
node really holds it.  A node that does not answer counts as not holding it.  Imports nothing from
stackha.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    from swift.common.direct_client import ClientException, direct_head_object
    from swift.common.ring import Ring

    req = json.load(sys.stdin)
    ring = Ring("/etc/swift", ring_name="object")
    found: dict[str, int] = {}
    etags: dict[str, list[str]] = {}
    for obj in req["objects"]:
        part, nodes = ring.get_nodes(req["account"], req["container"], obj)
        found[obj] = 0
        etags[obj] = []
        for node in nodes:
            try:
                headers = direct_head_object(node, part, req["account"], req["container"], obj,
                                             conn_timeout=1.0, response_timeout=3.0)
            except (ClientException, OSError, Exception):  # 404, refused, timeout: no copy there
                continue
            found[obj] += 1
            etags[obj].append(headers.get("Etag") or headers.get("ETag") or "")
    json.dump({"replicas": ring.replica_count, "found": found, "etags": etags}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

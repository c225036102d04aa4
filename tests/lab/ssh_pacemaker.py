"""Run on the workstation by tests/lab/test_ssh.py: a Pacemaker cluster on three SSH machines whose
STONITH devices come from the inventory's BMCs (fence_redfish), then a node failure Pacemaker must
fence.  Prints one JSON line: the victim, the fence agents of the CIB's devices, whether the
victim went off, and Pacemaker's fence history for it.

Usage: python ssh_pacemaker.py INVENTORY STATE_DIR VIP/PREFIXLEN
"""

from __future__ import annotations

import ipaddress
import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from stackha.hosts.ssh import SshProvider
from stackha.polling import wait_until
from stackha.services.base import AppContext, MemorySecrets, Unit
from stackha.services.pacemaker import COROSYNC_DAEMON, PACEMAKER_DAEMON, HAClusterOperator

WEB = {"command": "/usr/bin/python3 -m http.server 8080 --directory /srv/web", "dirs": ["/srv/web"],
       "check_url": "http://127.0.0.1:8080/"}


def main() -> int:
    inventory, state, vip_text = sys.argv[1:4]
    p = SshProvider.from_file(inventory, Path(state))
    nodes = [p.host(k) for k in ("0", "1", "2")]
    vip = ipaddress.IPv4Interface(vip_text)
    web = AppContext("web", "webtest", {"vip": str(vip.ip)}, [Unit(f"web/{i}", h) for i, h in enumerate(nodes)],
                     MemorySecrets(), vip=vip)
    app = AppContext("hacluster", "hacluster", {"resources": {"web": dict(WEB)}},
                     [Unit(f"hacluster/{i}", h) for i, h in enumerate(nodes)], MemorySecrets(),
                     related={"web": web}, vip=vip)
    web.related = {"hacluster": app}
    for h in nodes:
        h.write_file("/srv/web/index.html", h.name + "\n")
    op = HAClusterOperator()
    out: dict = {"apply": op.apply(app)}
    cib = nodes[0].run(["cibadmin", "--query", "--scope", "resources"], check=True).stdout
    out["fence_agents"] = sorted({e.get("type") for e in ET.fromstring(cib).iter("primitive")
                                  if e.get("class") == "stonith"})
    holder = wait_until(lambda: next((h for h in nodes if any(a.ip == vip.ip for a in h.addresses())), None), 60,
                        what="the VIP on a node")
    out["victim"] = holder.name
    t0 = time.monotonic()
    holder.signal(COROSYNC_DAEMON, "KILL")  # the node drops out of the ring: the others must fence it
    went_off = wait_until(lambda: not holder.is_on(), 90, what=f"{holder.name} fenced (off)")
    out["fenced_after_s"] = round(time.monotonic() - t0, 1)
    out["went_off"] = bool(went_off)
    survivor = next(h for h in nodes if h is not holder)
    out["stonith_history"] = survivor.run(["stonith_admin", "--history", holder.name, "--verbose"],
                                          timeout=30).stdout.strip()
    holder.power_on()
    for h in nodes:  # leave the machines as they were: no cluster stack running
        for d in (PACEMAKER_DAEMON, COROSYNC_DAEMON):
            if h.is_on() and h.daemon(d) is not None:
                h.stop(d, timeout=20)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

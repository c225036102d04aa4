#!/usr/bin/python3
"""fence_stackha_nova — the second device of a compute host's fencing level: Nova's force-down.

Seed 004 and Masakari need the failed compute host *fenced*, then its ``nova-compute`` service
*down* in Nova before an evacuation may start (Nova refuses to evacuate from a host whose service
is up: HTTP 400).  Masakari itself only disables the service and sleeps 180 s to outwait Nova's
heartbeat window (LAB-NOTES "Masakari").  Red Hat's instance HA puts ``fence_compute`` in the
same fencing-topology level as the power fence; Debian's fence_compute (fence-agents 4.12.1)
fails on Python 3.11 (``inspect.getargspec``), so stackha renders this agent instead:

- level 1 of a remote (compute) node = ``fence-<node>`` (power) **then** this device: Pacemaker
  runs the devices of a level in order and the level succeeds only when both did, so the service
  is forced down only after the power fence succeeded, and the fence is not complete until it is;
- ``off``: ``PUT /os-services/{id} {"forced_down": true}`` (compute API microversion 2.53) for the
  ``nova-compute`` service of the target host; ``on``: ``forced_down`` false (what
  ``stackha instance-ha readmit`` also does); ``status``: forced down → OFF (exit 2), else ON;
  ``monitor``: the credentials file reads — local only: a check through Keystone failed while the
  control plane was slow (beside another lab), Pacemaker then kept the device stopped beyond a
  90 s recovery, and a stopped device cannot fence; ``off`` does its own connect retries; ``list``: the nova-compute hosts;
  ``metadata``; ``validate-all``;
- options on stdin as Pacemaker's fencer passes them (``action``, ``port``/``plug``, …; unknown
  names ignored) or ``-o ACTION [-n HOST]`` on the command line;
- credentials from :data:`DEFAULT_CONFIG` (JSON, mode 0600: ``auth`` = keystoneauth password
  options, ``region``), never from the CIB or the command line;
- each off/on is appended as one JSON line (``time`` in UTC ISO 8601 with ms, ``action``,
  ``host``, ``ok``, ``seconds``) to ``log`` (default :data:`DEFAULT_LOG`): the evidence that the
  force-down came after the power fence.

Runs under Debian's /usr/bin/python3 on the cluster nodes with python3-keystoneauth1; it imports
nothing from stackha.
"""

import argparse
import datetime
import json
import sys
import time

DEFAULT_CONFIG = "/srv/pacemaker/nova-fence.json"
DEFAULT_LOG = "/srv/pacemaker/nova-fence.log"
MICROVERSION = "2.53"
REQUEST_TIMEOUT_S = 20
EXIT_OK, EXIT_FAIL, EXIT_OFF = 0, 1, 2

METADATA = """<?xml version="1.0" ?>
<resource-agent name="fence_stackha_nova" shortdesc="Marks a fenced compute host's nova-compute service forced down">
<longdesc>fence_stackha_nova is the second device of a compute host's fencing level, after its power fence: it marks the host's nova-compute service forced_down in Nova, so instances can be evacuated at once.</longdesc>
<vendor-url>https://github.com/stackha</vendor-url>
<parameters>
	<parameter name="action" unique="0" required="1">
		<getopt mixed="-o, --action=[action]" />
		<content type="string" default="off"  />
		<shortdesc lang="en">Fencing action</shortdesc>
	</parameter>
	<parameter name="plug" unique="0" required="1" obsoletes="port">
		<getopt mixed="-n, --plug=[host]" />
		<content type="string"  />
		<shortdesc lang="en">Compute host (its nova-compute service's host name)</shortdesc>
	</parameter>
	<parameter name="port" unique="0" required="1" deprecated="1">
		<getopt mixed="-n, --plug=[host]" />
		<content type="string"  />
		<shortdesc lang="en">Compute host (deprecated name of plug)</shortdesc>
	</parameter>
	<parameter name="config" unique="0" required="0">
		<getopt mixed="--config=[path]" />
		<content type="string" default="/srv/pacemaker/nova-fence.json"  />
		<shortdesc lang="en">JSON file (0600) with the Keystone credentials</shortdesc>
	</parameter>
</parameters>
<actions>
	<action name="on" automatic="0"/>
	<action name="off" />
	<action name="reboot" />
	<action name="status" />
	<action name="list" />
	<action name="monitor" />
	<action name="metadata" />
	<action name="validate-all" />
</actions>
</resource-agent>
"""


def parse_options(argv, stdin):
    """``{action, plug, config}`` from ``argv`` (``-o``, ``-n``, ``--config``) or, when argv is
    empty, from ``name=value`` lines on ``stdin`` (Pacemaker's fencer)."""
    opts = {"action": "off", "config": DEFAULT_CONFIG}
    if argv:
        p = argparse.ArgumentParser(prog="fence_stackha_nova", add_help=True)
        p.add_argument("-o", "--action", default="off")
        p.add_argument("-n", "--plug", "--port", dest="plug")
        p.add_argument("--config", default=DEFAULT_CONFIG)
        ns = p.parse_args(argv)
        return {k: v for k, v in vars(ns).items() if v is not None}
    for line in stdin.read().splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        key, value = key.strip(), value.strip()
        if key in ("action", "option"):
            opts["action"] = value
        elif key in ("plug", "port"):
            opts["plug"] = value
        elif key == "config":
            opts["config"] = value
    return opts


class Nova:
    """The compute API through Keystone's catalog, as the user of ``config``."""

    def __init__(self, config_path):
        from keystoneauth1 import session
        from keystoneauth1.identity import v3

        with open(config_path) as f:
            cfg = json.load(f)
        self.log_path = cfg.get("log", DEFAULT_LOG)
        sess = session.Session(auth=v3.Password(**cfg["auth"]), timeout=REQUEST_TIMEOUT_S)
        self.api = sess  # keystoneauth adds the token and finds the endpoint in the catalog
        self.filter = {"service_type": "compute", "interface": "public", "region_name": cfg.get("region")}

    def _call(self, method, path, **kw):
        resp = self.api.request(path, method, endpoint_filter=self.filter, connect_retries=2,
                                headers={"OpenStack-API-Version": f"compute {MICROVERSION}"},
                                raise_exc=True, **kw)
        return resp.json() if resp.content else {}

    def services(self, host=None):
        q = "?binary=nova-compute" + (f"&host={host}" if host else "")
        return self._call("GET", f"/os-services{q}")["services"]

    def force_down(self, host, down):
        found = self.services(host)
        if not found:
            raise LookupError(f"no nova-compute service on host {host!r}")
        for svc in found:
            self._call("PUT", f"/os-services/{svc['id']}", json={"forced_down": down})

    def record(self, action, host, ok, seconds):
        line = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                "action": action, "host": host, "ok": ok, "seconds": round(seconds, 3)}
        try:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(line) + "\n")
        except OSError:
            pass


def main(argv=None, stdin=None):
    argv = sys.argv[1:] if argv is None else argv
    opts = parse_options(argv, stdin or sys.stdin)
    action = opts["action"]
    if action == "metadata":
        sys.stdout.write(METADATA)
        return EXIT_OK
    plug = opts.get("plug")
    if action == "validate-all":
        return EXIT_OK if plug else EXIT_FAIL
    if action not in ("on", "off", "reboot", "status", "list", "monitor"):
        print(f"fence_stackha_nova: unsupported action {action!r}", file=sys.stderr)
        return EXIT_FAIL
    if action in ("on", "off", "reboot", "status") and not plug:
        print("fence_stackha_nova: no plug (the compute host) given", file=sys.stderr)
        return EXIT_FAIL
    try:
        nova = Nova(opts["config"])
        if action == "monitor":  # local only: the credentials file parses (module docstring)
            return EXIT_OK
        if action == "list":
            for svc in nova.services():
                print(f"{svc['host']},{svc['host']}")
            return EXIT_OK
        if action == "status":
            found = nova.services(plug)
            down = bool(found) and all(s.get("forced_down") for s in found)
            print(f"Status: {'OFF' if down else 'ON'}")
            return EXIT_OFF if down else EXIT_OK
        t0 = time.monotonic()
        ok = False
        try:
            nova.force_down(plug, action != "on")  # reboot = off: the host stays down for Nova
            ok = True
        finally:
            nova.record(action, plug, ok, time.monotonic() - t0)
        return EXIT_OK
    except Exception as exc:  # any failure is a failed fence: Pacemaker retries the level
        print(f"fence_stackha_nova: {action} {plug or ''}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())

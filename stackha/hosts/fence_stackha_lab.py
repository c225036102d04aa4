#!/usr/bin/python3
"""fence_stackha_lab — an RHCS-style fence agent that powers a stackha lab host off.

Installed in lab hosts as ``/usr/sbin/fence_stackha_lab`` (Pacemaker's fencer runs RHCS agents
``fence_*`` from /usr/sbin) and configured as ``stonith:fence_stackha_lab``.  It asks the lab's
fence gateway (:mod:`stackha.hosts.labfence`, a UNIX socket bind-mounted into every host at
``/srv/stackha/fence/fence.sock``) to power a host off, on or reboot it, exactly as
``LabHost.power_off()`` does (cgroup.kill, link down, address flush).  ``fence_dummy`` cannot do
this: it kills nothing.

Interface (as fence-agents' fencing library defines it, so Pacemaker and ``stonith_admin`` work):

- options from the command line (``-o/--action``, ``-n/--plug`` (``--port``), ``--socket``,
  ``--timeout``) or, with no arguments, from stdin ``name=value`` lines (Pacemaker's way; ``port``,
  ``plug``, ``nodename``, ``option`` are accepted, unknown names ignored);
- actions: ``off``, ``on``, ``reboot`` (exit 0 on success, 1 on failure), ``status`` (exit 0 = on,
  2 = off, 1 = failure), ``list`` / ``list-status`` (every host of the lab), ``monitor`` (exit 0
  when the gateway answers), ``metadata`` (XML on stdout), ``validate-all``.

Standard library only: it runs under Debian's /usr/bin/python3 inside the host.
"""

import getopt
import socket
import sys

DEFAULT_SOCKET = "/srv/stackha/fence/fence.sock"
DEFAULT_TIMEOUT_S = 20.0
EXIT_OK, EXIT_FAIL, EXIT_OFF = 0, 1, 2

METADATA = """<?xml version="1.0" ?>
<resource-agent name="fence_stackha_lab" shortdesc="Fence agent for stackha lab hosts">
<longdesc>fence_stackha_lab powers a host of a stackha lab off, on or reboots it through the lab's fence gateway (a UNIX socket bind-mounted into every host). Power off is real: every process of the host is killed at once (cgroup.kill), its link goes down and its addresses, a VIP included, are flushed.</longdesc>
<vendor-url>https://github.com/stackha</vendor-url>
<parameters>
	<parameter name="action" unique="0" required="1">
		<getopt mixed="-o, --action=[action]" />
		<content type="string" default="reboot"  />
		<shortdesc lang="en">Fencing action</shortdesc>
	</parameter>
	<parameter name="plug" unique="0" required="1" obsoletes="port">
		<getopt mixed="-n, --plug=[host]" />
		<content type="string"  />
		<shortdesc lang="en">Lab host to fence (its full name, e.g. demo-h1)</shortdesc>
	</parameter>
	<parameter name="port" unique="0" required="1" deprecated="1">
		<getopt mixed="-n, --plug=[host]" />
		<content type="string"  />
		<shortdesc lang="en">Lab host to fence (deprecated name of plug)</shortdesc>
	</parameter>
	<parameter name="socket" unique="0" required="0">
		<getopt mixed="--socket=[path]" />
		<content type="string" default="/srv/stackha/fence/fence.sock"  />
		<shortdesc lang="en">Path of the lab fence gateway's socket inside the host</shortdesc>
	</parameter>
	<parameter name="timeout" unique="0" required="0">
		<getopt mixed="--timeout=[seconds]" />
		<content type="second" default="20"  />
		<shortdesc lang="en">Seconds to wait for the gateway's answer</shortdesc>
	</parameter>
	<parameter name="verbose" unique="0" required="0">
		<getopt mixed="-v, --verbose" />
		<content type="boolean"  />
		<shortdesc lang="en">Verbose mode</shortdesc>
	</parameter>
</parameters>
<actions>
	<action name="on" automatic="0"/>
	<action name="off" />
	<action name="reboot" />
	<action name="status" />
	<action name="list" />
	<action name="list-status" />
	<action name="monitor" />
	<action name="metadata" />
	<action name="validate-all" />
</actions>
</resource-agent>
"""


def parse_options(argv, stdin):
    """Options as a dict (``action``, ``plug``, ``socket``, ``timeout``, ``verbose``)."""
    opts = {"action": "reboot", "socket": DEFAULT_SOCKET, "timeout": str(DEFAULT_TIMEOUT_S)}
    if argv:
        pairs, _ = getopt.gnu_getopt(argv, "o:n:vh", ["action=", "plug=", "port=", "socket=", "timeout=",
                                                      "verbose", "help"])
        for k, v in pairs:
            if k in ("-o", "--action"):
                opts["action"] = v
            elif k in ("-n", "--plug", "--port"):
                opts["plug"] = v
            elif k == "--socket":
                opts["socket"] = v
            elif k == "--timeout":
                opts["timeout"] = v
            elif k in ("-v", "--verbose"):
                opts["verbose"] = "1"
            elif k in ("-h", "--help"):
                opts["action"] = "help"
        return opts
    for line in stdin.read().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = (x.strip() for x in line.split("=", 1))
        if key in ("action", "option"):
            opts["action"] = value
        elif key in ("plug", "port"):
            opts["plug"] = value
        elif key in ("socket", "timeout", "verbose"):
            opts[key] = value
    return opts


def ask(opts, line):
    """Send ``line`` to the gateway; returns (ok, words)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(float(opts["timeout"]))
            s.connect(opts["socket"])
            s.sendall(line.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except (OSError, ValueError) as exc:
        return False, ["gateway", opts["socket"], "unreachable:", str(exc)]
    words = data.decode(errors="replace").split()
    if not words:
        return False, ["no", "answer", "from", "the", "gateway"]
    return words[0] == "ok", words[1:]


def main(argv=None, stdin=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_options(argv, stdin or sys.stdin)
    except getopt.GetoptError as exc:
        print(f"fence_stackha_lab: {exc}", file=sys.stderr)
        return EXIT_FAIL
    action = opts["action"]
    if action == "metadata":
        sys.stdout.write(METADATA)
        return EXIT_OK
    if action == "help":
        print(__doc__)
        return EXIT_OK
    if action == "monitor":
        ok, words = ask(opts, "ping")
        if not ok:
            print("fence_stackha_lab: " + " ".join(words), file=sys.stderr)
        return EXIT_OK if ok else EXIT_FAIL
    if action in ("list", "list-status"):
        ok, words = ask(opts, "list")
        if not ok:
            print("fence_stackha_lab: " + " ".join(words), file=sys.stderr)
            return EXIT_FAIL
        for name in words:
            if action == "list":
                print(f"{name},{name}")
            else:
                ok_s, state = ask(opts, f"status {name}")
                print(f"{name},{name},{state[0] if ok_s and state else 'unknown'}")
        return EXIT_OK
    plug = opts.get("plug")
    if action == "validate-all":
        return EXIT_OK if plug else EXIT_FAIL
    if action not in ("on", "off", "reboot", "status"):
        print(f"fence_stackha_lab: unsupported action {action!r}", file=sys.stderr)
        return EXIT_FAIL
    if not plug:
        print("fence_stackha_lab: no plug (the host to fence) given", file=sys.stderr)
        return EXIT_FAIL
    ok, words = ask(opts, f"{action} {plug}")
    if not ok:
        print(f"fence_stackha_lab: {action} {plug}: " + " ".join(words), file=sys.stderr)
        return EXIT_FAIL
    state = words[0] if words else ""
    if action == "status":
        print(f"Status: {state.upper()}")
        return EXIT_OK if state == "on" else EXIT_OFF
    if opts.get("verbose"):
        print(f"{action} {plug}: {state}", file=sys.stderr)
    expected = "off" if action == "off" else "on"
    return EXIT_OK if state == expected else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())

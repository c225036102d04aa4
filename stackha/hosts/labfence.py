"""The lab's fence gateway: lets a STONITH agent running *inside* a lab host power another host of
the same lab off, exactly as :meth:`stackha.hosts.lab.LabHost.power_off` does.

Why a gateway: a lab host has its own net, mount and pid namespaces, a fresh sysfs (the root cgroup2
tree is not visible) and a private /run (the root's /run/netns is not visible), so nothing inside a
host can reach another host's cgroup or network namespace.  Fencing must happen in the root
namespaces.  The gateway is a small stdlib ``socketserver`` on a UNIX socket, one per lab:

- it runs in the root namespaces, in the cgroup ``<lab cgroup>/fence-gw`` (so ``teardown`` kills
  it with the lab), started lazily by :func:`ensure_gateway` (``Lab.fence_gateway()``);
- its socket is ``<lab dir>/fence/fence.sock``; every host of the lab sees that directory at
  :data:`HOST_FENCE_DIR` (a bind mount made by the host's PID 1 at boot, over a directory of the
  host's own disk, so nothing is mounted on a path of the shared root filesystem);
- protocol: one request line ``<action> [<host>]``, one answer line ``ok [<words>]`` or
  ``error <message>``.  Actions: ``ping``; ``list`` (the lab's host names); ``status <host>``
  (``ok on`` / ``ok off``); ``off``, ``on``, ``reboot <host>`` (``ok off`` / ``ok on``).  Only hosts
  of this lab are accepted (full name ``<prefix>-<suffix>`` or the bare suffix); anything else is
  refused;
- every power action is appended to ``<lab dir>/fence-history.jsonl`` (time, action, target, the
  requesting host found from the peer's cgroup via SO_PEERCRED, result, seconds) and to
  ``<lab dir>/fence-gateway.log``.

Requests are served one at a time (a fence takes 5–35 ms, LAB-NOTES "Hosts"); each connection has a
:data:`REQUEST_TIMEOUT_S` deadline so a stuck client cannot block fencing.

The agent that speaks to it from inside a host is :mod:`stackha.hosts.fence_stackha_lab`
(installed as ``/usr/sbin/fence_stackha_lab``, where Pacemaker's fencer looks for RHCS agents).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import socketserver
import struct
import subprocess
import sys
import time
from pathlib import Path

from stackha.hosts.base import FenceDevice
from stackha.polling import WaitTimeout, wait_until

HOST_FENCE_DIR = "/srv/stackha/fence"
SOCKET_NAME = "fence.sock"
HOST_SOCKET = f"{HOST_FENCE_DIR}/{SOCKET_NAME}"
AGENT_NAME = "fence_stackha_lab"
AGENT_PATH = f"/usr/sbin/{AGENT_NAME}"
AGENT_SOURCE = Path(__file__).with_name("fence_stackha_lab.py")
CGROUP_NAME = "fence-gw"
REQUEST_TIMEOUT_S = 10.0
START_TIMEOUT_S = 10.0
ACTIONS = ("ping", "list", "status", "off", "on", "reboot")


def device_for(host_name: str) -> FenceDevice:
    """The lab fence device for host ``host_name`` (the gateway must be running: see
    :func:`ensure_gateway`)."""
    return FenceDevice(agent=AGENT_NAME, params={"plug": host_name, "socket": HOST_SOCKET},
                       files={AGENT_PATH: (agent_source(), 0o755)})


class FenceError(Exception):
    """The gateway refused or failed a request (message from the gateway), or cannot be reached."""


# --------------------------------------------------------------------------- paths
def fence_dir(lab) -> Path:
    """The directory holding the gateway's socket, as seen from the root namespace."""
    return lab.dir / "fence"


def socket_path(lab) -> Path:
    return fence_dir(lab) / SOCKET_NAME


def gateway_cgroup(lab) -> Path:
    return lab.cgroup / CGROUP_NAME


def history_path(lab) -> Path:
    return lab.dir / "fence-history.jsonl"


def agent_source() -> str:
    """The text of the fence agent script (stdlib only, run by Debian's /usr/bin/python3)."""
    return AGENT_SOURCE.read_text()


# --------------------------------------------------------------------------- client
def request(sock_path: str | Path, line: str, timeout_s: float = REQUEST_TIMEOUT_S) -> list[str]:
    """Send one request line to the gateway at ``sock_path``; returns the words after ``ok``.

    Raises :class:`FenceError` for an ``error`` answer or when the gateway cannot be reached
    within ``timeout_s`` seconds."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(str(sock_path))
            s.sendall(line.strip().encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise FenceError(f"fence gateway {sock_path} unreachable: {exc}") from None
    words = data.decode(errors="replace").split()
    if not words:
        raise FenceError(f"fence gateway {sock_path} closed the connection without an answer")
    if words[0] != "ok":
        raise FenceError(" ".join(words[1:]) or "refused")
    return words[1:]


def history(lab) -> list[dict]:
    """Every power action the lab's gateway did, oldest first (see the module docstring)."""
    try:
        text = history_path(lab).read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def gateway_running(lab) -> bool:
    """True if the lab's gateway answers ``ping``."""
    if not socket_path(lab).exists():
        return False
    try:
        request(socket_path(lab), "ping", timeout_s=2.0)
    except FenceError:
        return False
    return True


def ensure_gateway(lab) -> Path:
    """Start the lab's fence gateway unless it answers already; returns its socket path (root view).

    The gateway runs ``<this python> -m stackha.hosts.labfence serve <prefix> --state-dir <dir>``
    detached (``setsid -f``) in the cgroup ``<lab cgroup>/fence-gw``.  Raises :class:`FenceError`
    if it does not answer within :data:`START_TIMEOUT_S` seconds (its log is quoted)."""
    if gateway_running(lab):
        return socket_path(lab)
    fence_dir(lab).mkdir(parents=True, exist_ok=True)
    cg = gateway_cgroup(lab)
    cg.mkdir(parents=True, exist_ok=True)
    log = lab.dir / "fence-gateway.log"
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cg / "cgroup.procs"),
            "setsid", "-f", sys.executable, "-m", "stackha.hosts.labfence", "serve", lab.prefix,
            "--state-dir", str(lab.state_dir)]
    with open(log, "ab") as out:
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                       check=True, timeout=15)
    try:
        wait_until(lambda: gateway_running(lab), START_TIMEOUT_S, 0.05, what="fence gateway running")
        return socket_path(lab)
    except WaitTimeout:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:]) if log.exists() else ""
        raise FenceError(f"fence gateway of lab {lab.prefix} did not start in {START_TIMEOUT_S:.0f} s: {tail}") from None


# --------------------------------------------------------------------------- server
def _peer_host(conn: socket.socket, prefix: str) -> str:
    """The lab host a connection comes from (from the peer's cgroup), or ``root``/``?``."""
    try:
        pid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            path = line.split(":", 2)[2]
            marker = f"/stackha/{prefix}/"
            if marker in path:
                return path.split(marker, 1)[1].split("/")[0]
        return "root"
    except (OSError, IndexError, struct.error):
        return "?"


class _Handler(socketserver.StreamRequestHandler):
    timeout = REQUEST_TIMEOUT_S

    def handle(self) -> None:
        server: GatewayServer = self.server  # type: ignore[assignment]
        try:
            line = self.rfile.readline(512).decode(errors="replace")
        except OSError:
            return
        answer = server.answer(line, _peer_host(self.connection, server.prefix))
        with contextlib.suppress(OSError):
            self.wfile.write(answer.encode() + b"\n")


class GatewayServer(socketserver.UnixStreamServer):
    """The gateway of lab ``prefix`` (see the module docstring).  One request at a time."""

    def __init__(self, prefix: str, state_dir: Path):
        from stackha.hosts.lab import Lab

        self.prefix = prefix
        self.state_dir = Path(state_dir)
        self.lab_dir = Lab.load(prefix, self.state_dir).dir
        sock = self.lab_dir / "fence" / SOCKET_NAME
        sock.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        # Bind by a relative name: the absolute path of a pytest state dir can exceed sun_path.
        os.chdir(sock.parent)
        super().__init__(SOCKET_NAME, _Handler)
        os.chmod(SOCKET_NAME, 0o600)

    def service_actions(self) -> None:
        # power_on boots a host through a child process that is later killed with the host: reap.
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass

    def _log(self, text: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}", flush=True)

    def answer(self, line: str, peer: str) -> str:
        """The answer line for request ``line`` from host ``peer``."""
        from stackha.hosts.lab import Lab

        words = line.split()
        if not words or words[0] not in ACTIONS:
            return f"error unknown request {line.strip()[:60]!r}; actions: {' '.join(ACTIONS)}"
        action = words[0]
        if action == "ping":
            return "ok pong"
        try:
            lab = Lab.load(self.prefix, self.state_dir)
        except Exception as exc:  # the lab is being torn down
            return f"error lab {self.prefix} unavailable: {exc}"
        if action == "list":
            return "ok " + " ".join(sorted(lab.hosts))
        if len(words) != 2:
            return f"error {action} needs exactly one host name"
        target = words[1]
        host = lab.hosts.get(target) or lab.hosts.get(f"{self.prefix}-{target}")
        if host is None:
            return f"error {target!r} is not a host of lab {self.prefix}"
        if action == "status":
            return "ok " + ("on" if host.is_on() else "off")
        t0 = time.monotonic()
        try:
            if action in ("off", "reboot"):
                host.power_off()
            if action in ("on", "reboot"):
                host.power_on()
            result = "ok " + ("on" if host.is_on() else "off")
        except Exception as exc:
            result = f"error {type(exc).__name__}: {exc}"
        secs = time.monotonic() - t0
        record = {"t": time.time(), "action": action, "target": host.name, "by": peer,
                  "result": result, "seconds": round(secs, 4)}
        with open(self.lab_dir / "fence-history.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        self._log(f"{action} {host.name} requested by {peer}: {result} ({secs * 1000:.1f} ms)")
        return result


def serve(prefix: str, state_dir: Path) -> None:
    """Run the gateway of lab ``prefix`` until killed."""
    server = GatewayServer(prefix, state_dir)
    server._log(f"fence gateway of lab {prefix} listening on {server.lab_dir / 'fence' / SOCKET_NAME}")
    server.serve_forever(poll_interval=0.5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stackha.hosts.labfence", description="The lab's fence gateway.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve the fence gateway of a lab (started by Lab.fence_gateway)")
    s.add_argument("prefix")
    s.add_argument("--state-dir", required=True)
    args = p.parse_args(argv)
    if args.cmd == "serve":
        serve(args.prefix, Path(args.state_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Real machines over SSH: :class:`SshHost` and :class:`SshProvider` (asyncssh).

**Connections.**  One asyncssh connection per machine, opened on first use and reused by every
command (each command is a channel of it; at most :data:`MAX_CHANNELS` at once, below OpenSSH's
``MaxSessions`` 10), reopened after it dropped.  The asyncio loop runs in one background thread;
the :class:`~stackha.hosts.base.Host` methods are synchronous, like the lab's.  Timeouts: connect
and login ``connect_timeout`` (inventory, default 10 s), keepalive every 5 s (3 misses drop the
connection), each command its own ``timeout``.  Authentication is by the inventory's private key
only (no agent, no password, no ``~/.ssh/config``), and the server's host key must be in the
inventory's known_hosts file (checking cannot be turned off): a missing or changed key refuses
the machine.

**Commands** run as root: a non-root login runs them through ``sudo -n`` (the login needs
passwordless sudo); ``user=`` switches to that account with ``setpriv`` (uid, primary gid,
supplementary groups), as in the lab.  Every command runs under ``timeout -s KILL`` (which kills its
whole process group) with ``env -i`` and the same environment the lab gives
(:data:`stackha.hosts.base.HOST_ENV`).  Files are written atomically and idempotently in one round
trip (temporary file, compared with the old one — content, mode, owner — then renamed).

**Daemons**: stackha's own supervision, the same as in the lab, on hosts with or without systemd
(stackha never installs systemd units): ``setsid -f`` detaches the daemon with its output appended
to ``/srv/stackha/log/<name>.log``; its PID and start time (``/proc/<pid>/stat`` field 22) are
recorded in ``/run/stackha/<name>.json``, so a recycled PID is never taken for the daemon and a
reboot (fresh ``/run``) forgets every daemon, as the lab's power cycle does.

**Power** goes through the machine's BMC with the real fence agents (:mod:`stackha.hosts.bmc`):
``power_off`` = ``fence_redfish``/``fence_ipmilan`` off, ``power_on`` = on, then waits until SSH
answers again.  ``is_on`` is "a command succeeded in the last 2 s or succeeds now", else the BMC's
power state.  Pacemaker fences these machines through the same agent
(:meth:`SshHost.fence_device`).

**Partition** (``partition``/``heal``): an nftables table ``inet stackha_partition`` dropping every
packet in and out except loopback and stackha's own SSH session.  It is installed by a command
that holds a channel open and deletes the table when that channel's input ends — ``heal`` closes
it, and so does the end of stackha's process or of its connection — or after
:data:`PARTITION_MAX_S` at the latest, so the rules are always removed.
"""

from __future__ import annotations

import asyncio
import atexit
import ipaddress
import json
import os
import shlex
import signal as _signal
import threading
import time
from pathlib import Path
import warnings
from typing import Callable, Mapping, Sequence

# cryptography ≥ 46 warns (CryptographyDeprecationWarning) that DSA support will go when asyncssh
# imports its DSA module; the warning went to stderr and broke stackha's one-line errors.  stackha
# never offers or accepts DSA keys, so the warning says nothing about what it does.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*DSA.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", module="asyncssh")
    try:
        from cryptography.utils import CryptographyDeprecationWarning
        warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
    except ImportError:  # pragma: no cover - older cryptography
        pass
    import asyncssh

from stackha.errors import UserError
from stackha.hosts import bmc as bmcs
from stackha.hosts.base import (
    DAEMON_LOG_DIR,
    DAEMON_RUN_DIR,
    SUPERVISE_SCRIPT,
    HOST_ENV,
    CommandError,
    CommandResult,
    CommandTimeout,
    DAEMON_NAME_RE,
    Daemon,
    FenceDevice,
    Host,
    HostDown,
    HostError,
    ProcessInfo,
    describe,
    host_path,
    parse_ps,
    to_argv,
)
from stackha.hosts.inventory import Inventory, InventoryError, Target, parse_inventory
from stackha.hosts.provider import MachineSpec, Provider
from stackha.model.problems import Problem
from stackha.polling import WaitTimeout, wait_until

MAX_CHANNELS = 8
KEEPALIVE_S = 5.0
PROBE_TIMEOUT_S = 3.0
ALIVE_CACHE_S = 2.0
OFF_CACHE_S = 5.0
BOOT_TIMEOUT_S = 180.0
PARTITION_MAX_S = 900
PARTITION_TABLE = "stackha_partition"
_ABSENT = 44  # exit code of the remote scripts for "no such file / daemon"


class HostUnreachable(HostError):
    """The machine does not answer over SSH (or refuses stackha's key or host key).

    Attributes: ``reason`` and ``fix`` (one phrase each)."""

    def __init__(self, where: str, reason: str, fix: str):
        super().__init__(f"{where}: {reason} (fix: {fix})")
        self.reason, self.fix = reason, fix


# --------------------------------------------------------------------------- the event loop
class _Loop:
    """One asyncio loop in a daemon thread, shared by every SSH host of the process."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="stackha-ssh", daemon=True).start()
                cls._loop = loop
            return cls._loop

    @classmethod
    def run(cls, coro, timeout: float):
        fut = asyncio.run_coroutine_threadsafe(coro, cls.get())
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise


class _Client(asyncssh.SSHClient):
    def __init__(self) -> None:
        self.lost = False

    def connection_lost(self, exc) -> None:
        self.lost = True


def _connect_error(target: Target, exc: BaseException) -> tuple[str, str]:
    """Why ``target`` could not be reached, and the fix: ``(message, fix)``."""
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return (f"host key not trusted: it is not in {target.known_hosts} or it changed",
                f"check the machine's key, then add it (ssh-keyscan -p {target.port} {target.address})")
    if isinstance(exc, asyncssh.PermissionDenied):
        return (f"user {target.user} was refused with key {target.key_file}",
                "add its public key to the machine's authorized_keys")
    if isinstance(exc, asyncssh.KeyImportError):
        return f"cannot use key {target.key_file}: {exc}", "give an unencrypted OpenSSH private key"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer within {target.connect_timeout:g} s", "check the address and that sshd listens there"
    if isinstance(exc, OSError):
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return f"unreachable: {reason}", "check the address, the port and the network"
    return f"SSH failed: {type(exc).__name__}: {exc}", "check the machine's sshd"


# --------------------------------------------------------------------------- remote scripts
#: Idempotent atomic write: $1 path, $2 mode (octal), $3 owner, $4 group (empty: the owner's).
_WRITE = r'''set -e
p=$1; mode=$2; owner=$3; group=$4
[ -n "$group" ] || group=$(id -gn "$owner")
d=$(dirname -- "$p"); mkdir -p -- "$d"
t="$d/.$(basename -- "$p").stackha-tmp"
umask 077
cat > "$t"
if [ -f "$p" ] && cmp -s -- "$t" "$p" && [ "$(stat -c %a:%U:%G -- "$p")" = "$mode:$owner:$group" ]; then
  rm -f -- "$t"; echo same
else
  chown -- "$owner:$group" "$t"; chmod -- "$mode" "$t"; mv -f -- "$t" "$p"; echo changed
fi'''
_READ = f'if [ -e "$1" ]; then exec cat -- "$1"; fi; exit {_ABSENT}'
#: Supervision (see the module docstring).  $1 action: spawn META PID LOG CWD ARGVJSON CMD… |
#: check META | signal META SIG | stop META SIG TIMEOUT.
_SUPERVISE = SUPERVISE_SCRIPT


def _as_user(user: str, argv: list[str]) -> list[str]:
    """``argv`` run as ``user`` (uid, primary gid, supplementary groups) with setpriv."""
    return ["/bin/sh", "-c", 'exec setpriv --reuid="$0" --regid="$(id -g "$0")" --init-groups "$@"', user, *argv]


# --------------------------------------------------------------------------- the host
class SshHost(Host):
    """A machine reached over SSH (see the module docstring).  Obtain from :class:`SshProvider`.

    ``target``: how to reach it (:class:`~stackha.hosts.inventory.Target`); ``failure_domain``: the
    machine whose loss takes it down (its own name, or the machine a container key sits on);
    ``history``: where BMC power actions are recorded (JSON lines), or None."""

    def __init__(self, target: Target, *, failure_domain: str | None = None, history: Path | None = None,
                 provider: "SshProvider | None" = None):
        self.target = target
        self.name = target.name
        self.failure_domain = failure_domain or target.name
        self.vip_interface = target.interface
        self.history = history
        self._provider = provider
        self._conn: asyncssh.SSHClientConnection | None = None
        self._client: _Client | None = None
        self._sem: asyncio.Semaphore | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._last_ok = 0.0
        self._power: tuple[str, float] | None = None  # BMC state and when it was read
        self._probe_lock = threading.Lock()
        self._partition: asyncssh.SSHClientProcess | None = None

    # ----------------------------------------------------------------- identity
    @property
    def address(self) -> ipaddress.IPv4Address:
        return self.target.address

    @property
    def bmc(self):
        return self.target.bmc

    def machine(self) -> Host:
        if self._provider is not None:
            return self._provider.machine_of(self)
        return self

    def containers(self) -> list[Host]:
        return self._provider.containers_of(self) if self._provider is not None else []

    # ----------------------------------------------------------------- connection
    async def _connection(self, connect_timeout: float | None = None) -> asyncssh.SSHClientConnection:
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
            self._sem = asyncio.Semaphore(MAX_CHANNELS)
        async with self._connect_lock:
            if self._conn is not None and self._client is not None and not self._client.lost:
                return self._conn
            t = self.target
            timeout = connect_timeout or t.connect_timeout
            try:
                conn, client = await asyncssh.create_connection(
                    _Client, str(t.address), t.port, username=t.user, client_keys=[t.key_file],
                    known_hosts=t.known_hosts, config=None, agent_path=None, preferred_auth="publickey",
                    password_auth=False, kbdint_auth=False, connect_timeout=timeout, login_timeout=timeout,
                    keepalive_interval=KEEPALIVE_S, keepalive_count_max=3)
            except (OSError, asyncssh.Error, asyncio.TimeoutError, TimeoutError) as exc:
                raise HostUnreachable(t.where(), *_connect_error(t, exc)) from None
            self._conn, self._client = conn, client
            return conn

    def _drop(self) -> None:
        conn, self._conn, self._client = self._conn, None, None
        if conn is not None:
            _Loop.get().call_soon_threadsafe(conn.abort)

    def close(self) -> None:
        """Close the connection (it is reopened on the next command)."""
        self._drop()

    def local_address(self) -> str:
        """The address this machine sees stackha's connection come from."""
        async def go():
            conn = await self._connection()
            return conn.get_extra_info("sockname")[0]
        return _Loop.run(go(), self.target.connect_timeout + 5)

    def _command(self, argv: Sequence[str] | str, env: Mapping[str, str] | None, user: str | None,
                 timeout: float) -> str:
        cmd = to_argv(argv)
        if user and user != "root":
            cmd = _as_user(user, cmd)
        envs = [f"{k}={v}" for k, v in {**HOST_ENV, **(env or {})}.items()]
        full = ["timeout", "-s", "KILL", f"{max(timeout, 0.1):.1f}", "env", "-i", *envs, *cmd]
        if self.target.user != "root":
            full = ["sudo", "-n", "--", *full]
        return shlex.join(full)

    def _exec(self, command: str, data: bytes | None, timeout: float,
              connect_timeout: float | None = None) -> tuple[int, bytes, bytes]:
        """Run ``command`` (a shell command line) on the machine: ``(rc, stdout, stderr)``.
        Raises :class:`HostUnreachable` or :class:`CommandTimeout`."""
        async def go():
            conn = await self._connection(connect_timeout)
            assert self._sem is not None
            async with self._sem:
                res = await conn.run(command, input=data, encoding=None, check=False, timeout=timeout + 5)
            rc = res.exit_status
            if rc is None or rc < 0:
                name = res.exit_signal[0] if res.exit_signal else "KILL"
                rc = -int(getattr(_signal, f"SIG{name}", _signal.SIGKILL))
            return rc, res.stdout or b"", res.stderr or b""

        try:
            out = _Loop.run(go(), timeout + (connect_timeout or self.target.connect_timeout) + 10)
        except HostUnreachable:
            raise
        except (asyncssh.TimeoutError, asyncio.TimeoutError, TimeoutError):
            self._drop()
            raise CommandTimeout(f"{self.name}: `{describe(command)}` did not finish in {timeout:g} s") from None
        except (asyncssh.Error, OSError) as exc:
            self._drop()
            raise HostUnreachable(self.target.where(), f"connection lost: {exc}",
                                  "check the machine and the network") from None
        self._last_ok = time.monotonic()
        return out

    def _run_bytes(self, argv, *, timeout: float, input: bytes | None = None, env=None, user=None):
        """:meth:`run` without decoding: ``(rc, stdout, stderr, seconds)``; HostDown when off."""
        t0 = time.monotonic()
        try:
            rc, out, err = self._exec(self._command(argv, env, user, timeout), input, timeout)
        except HostUnreachable:
            if not self.is_on():
                raise HostDown(f"{self.name} is powered off") from None
            raise
        secs = time.monotonic() - t0
        if rc in (137, -9) and secs >= timeout * 0.95:
            raise CommandTimeout(f"{self.name}: `{describe(argv)}` did not finish in {timeout:g} s")
        return rc, out, err, secs

    def check_access(self) -> tuple[str, str] | None:
        """Why the machine cannot be used, ``(message, fix)``, or None: connects (address, key,
        host key), runs a command through sudo -n, looks for the VIP interface.  Changes nothing."""
        t = self.target
        script = (f'cat /sys/class/net/{shlex.quote(t.interface)}/operstate 2>/dev/null '
                  f'|| {{ echo no-interface; ls /sys/class/net; }}')
        try:
            rc, out, err = self._exec(self._command(["/bin/sh", "-c", script], None, None, 30), None, 30)
        except HostUnreachable as exc:
            return exc.reason, exc.fix
        except CommandTimeout:
            return "a test command did not finish in 30 s", "check the machine's load and sshd"
        text = (err or out).decode(errors="replace").strip().splitlines()
        if rc != 0:
            if t.user != "root" and any("sudo" in line for line in text):
                return (f"sudo -n failed for user {t.user}: {text[-1]}",
                        f"give {t.user} passwordless sudo (NOPASSWD) on the machine")
            return f"a test command failed (exit {rc}): {text[-1] if text else ''}", "check the machine"
        words = out.decode(errors="replace").split()
        if words and words[0] == "no-interface":
            return (f"interface {t.interface} does not exist (its interfaces: {', '.join(words[1:])})",
                    f"set {t.path}.interface to the interface VIPs go on")
        return None

    # ----------------------------------------------------------------- commands and files
    def run(self, argv, *, timeout=60.0, input=None, env=None, user=None, check=False) -> CommandResult:
        data = input.encode() if isinstance(input, str) else input
        rc, out, err, secs = self._run_bytes(argv, timeout=timeout, input=data, env=env, user=user)
        result = CommandResult(describe(argv), rc, out.decode(errors="replace"), err.decode(errors="replace"), secs)
        if check and not result.ok:
            raise CommandError(self.name, result)
        return result

    def _script(self, script: str, *args: str, input: bytes | None = None, timeout: float = 60.0) -> CommandResult:
        return self.run(["/bin/sh", "-c", script, "sh", *map(str, args)], input=input, timeout=timeout)

    def write_file(self, path, content, *, mode=0o644, owner=None, group=None) -> bool:
        data = content.encode() if isinstance(content, str) else content
        res = self._script(_WRITE, str(host_path(path)), format(mode, "o"), owner or "root", group or "", input=data)
        if not res.ok:
            raise CommandError(self.name, res)
        return res.stdout.strip() == "changed"

    def read_file(self, path) -> bytes | None:
        rc, out, err, secs = self._run_bytes(["/bin/sh", "-c", _READ, "sh", str(host_path(path))], timeout=60)
        if rc == _ABSENT:
            return None
        if rc != 0:
            raise CommandError(self.name, CommandResult(f"cat {path}", rc, "", err.decode(errors="replace"), secs))
        return out

    # ----------------------------------------------------------------- addresses
    def addresses(self) -> list[ipaddress.IPv4Interface]:
        res = self.run(["ip", "-4", "-o", "addr", "show"], check=True, timeout=15)
        out = []
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[1] != "lo" and parts[2] == "inet":
                out.append(ipaddress.IPv4Interface(parts[3]))
        return out

    # ----------------------------------------------------------------- daemons
    @staticmethod
    def _files(name: str) -> tuple[str, str, str]:
        if not DAEMON_NAME_RE.match(name):
            raise ValueError(f"daemon name {name!r}: a lower-case letter, then letters, digits, '-' and '_' (≤ 64)")
        return f"{DAEMON_RUN_DIR}/{name}.json", f"{DAEMON_RUN_DIR}/{name}.pid", f"{DAEMON_LOG_DIR}/{name}.log"

    def daemon(self, name: str) -> Daemon | None:
        meta, _, log = self._files(name)
        try:
            res = self._script(_SUPERVISE, "check", meta, timeout=20)
        except (HostDown, HostUnreachable):
            return None
        if res.rc == _ABSENT or not res.ok:
            return None
        info = json.loads(res.stdout)
        return Daemon(name=name, pid=info["pid"], log_path=log, argv=tuple(info["argv"]))

    def spawn(self, name, argv, *, env=None, user=None, cwd="/") -> Daemon:
        running = self.daemon(name)
        if running is not None:
            return running
        meta, pidfile, log = self._files(name)
        cmd = to_argv(argv)
        if user and user != "root":
            cmd = _as_user(user, cmd)
        shown = [str(a) for a in argv] if not isinstance(argv, str) else to_argv(argv)
        res = self.run(["/bin/sh", "-c", _SUPERVISE, "sh", "spawn", meta, pidfile, log, cwd, json.dumps(shown), *cmd],
                       env=env, timeout=30)
        if res.ok:
            return Daemon(name=name, pid=int(res.stdout.split()[-1]), log_path=log, argv=tuple(shown))
        tail = (self.read_file(log) or b"").decode(errors="replace").strip().splitlines()[-5:]
        raise HostError(f"{self.name}: daemon {name} (`{describe(argv)}`) exited at once: {' | '.join(tail)}")

    def signal(self, name: str, sig: str = "TERM") -> bool:
        """Send signal ``sig`` (TERM, KILL, HUP …) to daemon ``name``; True if it was running."""
        meta, _, _ = self._files(name)
        return self._script(_SUPERVISE, "signal", meta, sig.upper().removeprefix("SIG"), timeout=20).ok

    def stop(self, name, *, timeout=15.0, sig="TERM") -> bool:
        meta, _, _ = self._files(name)
        res = self._script(_SUPERVISE, "stop", meta, sig.upper().removeprefix("SIG"), str(int(max(timeout, 0) + 0.999)),
                           timeout=timeout + 30)
        return res.ok

    def daemons(self) -> list[str]:
        """Names of the daemons stackha started that are running now."""
        res = self._script(_SUPERVISE, "list", DAEMON_RUN_DIR, timeout=30)
        return res.stdout.split() if res.ok else []

    def processes(self) -> list[ProcessInfo]:
        if not self.is_on():
            return []
        return parse_ps(self.run(["ps", "-eo", "pid=,comm=,args="], check=True).stdout)

    # ----------------------------------------------------------------- power (through the BMC)
    def _bmc_state(self) -> str:
        state, _ = bmcs.power(self._need_bmc(), "status", host=self.name)
        self._power = (state, time.monotonic())
        return state

    def _need_bmc(self):
        if self.bmc is None:
            raise HostError(f"{self.target.where()}: no BMC in the inventory: cannot power it off or on "
                            f"(fix: give {self.target.path}.bmc)")
        return self.bmc

    def is_on(self) -> bool:
        now = time.monotonic()
        if now - self._last_ok < ALIVE_CACHE_S:
            return True
        with self._probe_lock:
            if time.monotonic() - self._last_ok < ALIVE_CACHE_S:
                return True
            if self._power is not None and self._power[0] == "off" and now - self._power[1] < OFF_CACHE_S:
                return False
            if self._power is not None and self._power[0] == "off" and self.bmc is not None:
                try:
                    if self._bmc_state() == "off":
                        return False
                except HostError:
                    pass
            try:
                self._exec(self._command(["true"], None, None, PROBE_TIMEOUT_S), None, PROBE_TIMEOUT_S,
                           connect_timeout=min(PROBE_TIMEOUT_S, self.target.connect_timeout))
                self._power = None
                return True
            except (HostError, CommandTimeout):
                pass
            if self.bmc is None:
                return False
            try:
                return self._bmc_state() == "on"
            except HostError:
                return False

    def power_off(self) -> float:
        t0 = time.monotonic()
        bmcs.power(self._need_bmc(), "off", host=self.name, history=self.history)
        self._power = ("off", time.monotonic())
        self._last_ok = 0.0
        self._partition = None  # the machine and its rules are gone
        self._drop()
        return time.monotonic() - t0

    def power_on(self) -> float:
        t0 = time.monotonic()
        bmcs.power(self._need_bmc(), "on", host=self.name, history=self.history)
        self._power = None
        self._last_ok = 0.0
        self._drop()

        def answers() -> bool:
            self._exec(self._command(["true"], None, None, PROBE_TIMEOUT_S), None, PROBE_TIMEOUT_S,
                       connect_timeout=PROBE_TIMEOUT_S)
            return True

        try:
            wait_until(answers, max(0.0, t0 + BOOT_TIMEOUT_S - time.monotonic()), 0.5,
                       what="SSH answering", ignore=(HostError, CommandTimeout))
        except WaitTimeout as exc:
            raise HostError(f"{self.name}: powered on but SSH did not answer within {BOOT_TIMEOUT_S:g} s: "
                            f"{exc.last}") from None
        return time.monotonic() - t0

    def fence_device(self) -> FenceDevice:
        """The STONITH device fencing this machine: ``fence_redfish`` / ``fence_ipmilan`` against
        its BMC.  Raises :class:`UserError` when the inventory gives it no BMC."""
        if self.bmc is None:
            raise UserError(f"{self.target.where()}: no BMC in the inventory: Pacemaker cannot fence it "
                            f"(fix: give {self.target.path}.bmc)")
        return bmcs.fence_device(self.bmc, self.name)

    def ensure_fencing(self) -> None:
        """Nothing to start: the BMC is the machine's own."""

    # ----------------------------------------------------------------- network faults
    def partition(self) -> None:
        """Drop every packet in and out except loopback and stackha's own SSH session (see the
        module docstring); idempotent."""
        if self._partition is not None:
            return
        me, port = self.local_address(), self.target.port
        rules = (f"table inet {PARTITION_TABLE} {{\n"
                 f" chain stackha_in {{ type filter hook input priority -300; policy drop;\n"
                 f"  iif \"lo\" accept\n  ip saddr {me} tcp dport {port} accept\n }}\n"
                 f" chain stackha_out {{ type filter hook output priority -300; policy drop;\n"
                 f"  oif \"lo\" accept\n  ip daddr {me} tcp sport {port} accept\n }}\n}}\n")
        self.write_file(f"{DAEMON_RUN_DIR}/partition.nft", rules, mode=0o600)
        guard = (f"nft delete table inet {PARTITION_TABLE} 2>/dev/null; "
                 f"nft -f {DAEMON_RUN_DIR}/partition.nft || exit 1; echo installed; "
                 f"timeout {PARTITION_MAX_S} cat > /dev/null; nft delete table inet {PARTITION_TABLE}; echo removed")
        command = self._command(["/bin/sh", "-c", guard], None, None, PARTITION_MAX_S + 30)

        async def go():
            conn = await self._connection()
            proc = await conn.create_process(command, encoding=None)
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            if line.strip() != b"installed":
                err = await asyncio.wait_for(proc.stderr.read(4096), 5)
                proc.close()
                raise HostError(f"{self.name}: partition rules refused: {(line + err).decode(errors='replace').strip()}")
            return proc

        self._partition = _Loop.run(go(), 40)
        _PARTITIONED.add(self)

    def heal(self) -> None:
        """Remove the partition rules (close the guard's input; the table is then deleted) and
        check they are gone.  Idempotent."""
        proc, self._partition = self._partition, None
        _PARTITIONED.discard(self)
        if proc is not None:
            async def go():
                proc.stdin.write_eof()
                await asyncio.wait_for(proc.wait(), 20)
            try:
                _Loop.run(go(), 30)
            except Exception:  # the check below removes the table if the guard did not
                pass
        res = self.run(["nft", "list", "table", "inet", PARTITION_TABLE], timeout=20)
        if res.ok:
            self.run(["nft", "delete", "table", "inet", PARTITION_TABLE], check=True, timeout=20)


_PARTITIONED: set[SshHost] = set()


@atexit.register
def _heal_all() -> None:  # pragma: no cover - exit path
    for h in list(_PARTITIONED):
        try:
            h.heal()
        except Exception:
            pass


# --------------------------------------------------------------------------- the provider
class SshProvider(Provider):
    """Deployment ``name`` on the machines of ``inventory`` (see :mod:`stackha.hosts.inventory`).

    ``text``/``base_dir``: the inventory as read, recorded so ``status`` and ``verify`` rebuild the
    same provider (the inventory holds no secret: BMC passwords stay in their files)."""

    kind = "ssh"

    def __init__(self, name: str, state_dir: Path, inventory: Inventory, text: str, base_dir: str):
        self.name = name
        self.state_dir = Path(state_dir)
        self.inventory = inventory
        self.text = text
        self.base_dir = base_dir
        self._hosts: dict[str, SshHost] = {}

    @classmethod
    def from_file(cls, path: str | Path, state_dir: Path, name: str | None = None) -> "SshProvider":
        """The provider of inventory file ``path`` (:class:`InventoryError` if invalid)."""
        from stackha.hosts.inventory import load_inventory

        inv = load_inventory(path)
        p = Path(path)
        return cls(name or inv.name, state_dir, inv, p.read_text(), str(p.resolve().parent))

    @classmethod
    def from_record(cls, record: dict, name: str, state_dir: Path) -> "SshProvider":
        inv = parse_inventory(record["text"], source=record.get("source", "<recorded inventory>"),
                              base_dir=Path(record["base_dir"]), default_name=name)
        return cls(name, state_dir, inv, record["text"], record["base_dir"])

    def record(self) -> dict:
        return {"kind": self.kind, "text": self.text, "base_dir": self.base_dir, "source": self.inventory.source}

    def describe(self) -> str:
        return f"{len(self.inventory.machines)} machines over SSH ({self.inventory.source})"

    @property
    def history_path(self) -> Path:
        """Where power actions through the BMCs are recorded (JSON lines, :func:`bmcs.history`)."""
        return self.state_dir / "ssh" / self.name / "power-history.jsonl"

    # ----------------------------------------------------------------- hosts
    def _host(self, key: str) -> SshHost:
        if key not in self._hosts:
            t = self.inventory.client if key == "client" else self.inventory.machines[key]
            parent = key.split("/lxd/")[0] if "/lxd/" in key else None
            domain = self.inventory.machines[parent].name if parent in self.inventory.machines else None
            self._hosts[key] = SshHost(t, failure_domain=domain, history=self.history_path, provider=self)
        return self._hosts[key]

    def host_name(self, key: str) -> str:
        t = self.inventory.machines.get(key)
        if t is None:
            raise UserError(f"{self.inventory.source}: machines.{key}: not in the inventory")
        return t.name

    def host(self, key: str) -> SshHost:
        self.host_name(key)
        return self._host(key)

    def client(self) -> SshHost:
        return self._host("client")

    def hosts(self) -> dict[str, Host]:
        out: dict[str, Host] = {self._host(k).name: self._host(k) for k in self.inventory.machines}
        out[self.client().name] = self.client()
        return out

    def machine_of(self, host: SshHost) -> Host:
        key = host.target.key
        if "/lxd/" in key and key.split("/lxd/")[0] in self.inventory.machines:
            return self._host(key.split("/lxd/")[0])
        return host

    def containers_of(self, host: SshHost) -> list[Host]:
        return [self._host(k) for k in self.inventory.machines if k.startswith(f"{host.target.key}/lxd/")]

    # ----------------------------------------------------------------- checks
    def check(self, machines: Sequence[MachineSpec], vips) -> None:
        """Refuse (one :class:`InventoryError` line per problem, naming the machine) a bundle
        machine the inventory lacks, an inventory machine the bundle lacks, and every machine that
        does not answer over SSH (address, key, host key), cannot run ``sudo -n``, lacks its VIP
        interface, or whose BMC does not answer.  Runs no command that changes anything."""
        src = self.inventory.source
        problems: list[Problem] = []
        wanted = {m.key for m in machines}
        for key in sorted(wanted - set(self.inventory.machines)):
            problems.append(Problem(path=f"machines.{key}", message=f"bundle machine {key} is not in the inventory",
                                    fix=f"map machine {key} to a host: machines: {{'{key}': {{name: …, address: …}}}}",
                                    source=src))
        for key in sorted(set(self.inventory.machines) - wanted):
            problems.append(Problem(path=f"machines.{key}", message=f"the bundle has no machine {key} "
                                    f"(its machines: {', '.join(sorted(wanted)) or 'none'})",
                                    fix="remove it or correct the machine id", source=src))
        if problems:
            raise InventoryError(problems)
        keys = [*sorted(wanted), "client"]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(16, len(keys))) as pool:
            found = list(pool.map(self._check_one, keys))
        problems = [Problem(path=t.path, message=f"{t.name} ({t.address}:{t.port}): {issue[0]}", fix=issue[1],
                            source=src)
                    for t, issue in zip([self._host(k).target for k in keys], found) if issue]
        if problems:
            self.close()
            raise InventoryError(problems)

    def _check_one(self, key: str) -> tuple[str, str] | None:
        h = self._host(key)
        issue = h.check_access()
        if issue is None and h.bmc is not None:
            try:
                bmcs.power(h.bmc, "status", host=h.name, timeout_s=30)
            except HostError as exc:
                return (f"BMC does not answer: {str(exc).split(': ', 1)[-1]}",
                        f"check {h.target.path}.bmc (address, port, username, password)")
        return issue

    def ensure(self, machines: Sequence[MachineSpec], vips, progress: Callable[[str], None] = lambda s: None) -> list[str]:
        """Nothing is created: :meth:`check` has proved every machine answers."""
        progress(f"{len(self.inventory.machines)} machines answer over SSH")
        return []

    def teardown(self) -> list[str]:
        """Stop every daemon stackha started on the machines that answer (their disks keep their
        data) and remove partition rules; returns what it stopped."""
        removed = []
        for key in [*self.inventory.machines, "client"]:
            h = self._host(key)
            try:
                if not h.is_on():
                    continue
                h.heal()
                for name in h.daemons():
                    h.stop(name, timeout=15)
                    removed.append(f"{h.name}: daemon {name}")
            except HostError as exc:
                removed.append(f"{h.name}: not cleaned ({exc})")
        return removed

    def close(self) -> None:
        for h in self._hosts.values():
            h.close()

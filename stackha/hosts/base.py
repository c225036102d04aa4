"""The Host interface: where things run.

Every machine provider (the embedded ``lab`` of Linux namespaces, ``ssh`` for real machines)
implements :class:`Host`.  Nothing above ``stackha.hosts`` knows which provider it runs on: services
render files and start daemons through this interface, and ``verify`` injects faults through it
(kill a daemon, power a host off, partition it, flap its link).
"""

from __future__ import annotations

import abc
import ipaddress
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Mapping, Sequence


#: Where every provider keeps a daemon's combined stdout/stderr: ``<DAEMON_LOG_DIR>/<name>.log``.
DAEMON_LOG_DIR = "/srv/stackha/log"
#: Where every provider keeps its daemon records (pid, start time, argv): RAM, gone at power-off.
DAEMON_RUN_DIR = "/run/stackha"
#: What a daemon name may be (it names the daemon's files).
DAEMON_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
#: The environment every provider runs commands with (plus the caller's ``env``).
HOST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "TERM": "dumb",
}


class HostError(Exception):
    """Base of every error a host raises."""


class HostDown(HostError):
    """The host is powered off (or fenced): nothing can run on it until ``power_on``."""


class CommandError(HostError):
    """A command exited non-zero where success was required.

    Attributes: ``result`` — the :class:`CommandResult` (exit code, stdout, stderr).
    """

    def __init__(self, host: str, result: "CommandResult"):
        self.host = host
        self.result = result
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        super().__init__(
            f"{host}: `{result.command}` exited {result.rc}" + (f": {' | '.join(tail)}" if tail else "")
        )


class CommandTimeout(HostError):
    """A command did not finish within its timeout (s); it was killed."""


@dataclass(frozen=True)
class CommandResult:
    """Outcome of :meth:`Host.run`.

    ``rc`` is the exit code (negative: killed by that signal), ``stdout``/``stderr`` are decoded
    text, ``duration_s`` the wall time in seconds.
    """

    command: str
    rc: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.rc == 0


@dataclass(frozen=True)
class Daemon:
    """A long-running process started by :meth:`Host.spawn`.

    ``pid`` is the PID as seen inside the host (for the lab: in the host's own pid namespace),
    ``log_path`` the path of its combined stdout/stderr log inside the host.
    """

    name: str
    pid: int
    log_path: str
    argv: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class FenceDevice:
    """A STONITH device as a host provider describes it: the RHCS ``agent`` name (Pacemaker class
    ``stonith:<agent>``, e.g. ``fence_redfish``), its instance ``params`` (may hold a BMC password:
    render them only into 0600 files), and ``files`` to install on every cluster node
    ``{path: (content, mode)}`` (an agent the packages do not ship)."""

    agent: str
    params: dict[str, str]
    files: dict[str, tuple[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessInfo:
    """One process of a host as ``ps`` inside it shows it: PID (host view), command name, arguments."""

    pid: int
    comm: str
    args: str


class Host(abc.ABC):
    """A machine stackha deploys to.

    Attributes every provider sets: ``name`` (unique in its cloud, e.g. ``demo-h1``) and
    ``failure_domain`` (the physical machine whose loss takes this host down; a container host
    placed ``lxd:N`` shares machine N's domain).
    """

    name: str
    failure_domain: str
    #: The network interface VIPs are configured on (keepalived, Pacemaker's IPaddr2).
    vip_interface: str = "eth0"

    # ----------------------------------------------------------------- addresses
    @property
    @abc.abstractmethod
    def address(self) -> ipaddress.IPv4Address:
        """The host's primary (boot) address: the one its services bind to."""

    @abc.abstractmethod
    def addresses(self) -> list[ipaddress.IPv4Interface]:
        """Every IPv4 address configured on the host right now (primary plus any VIP it holds).

        Empty when the host is off.  Raises :class:`HostError` if the provider cannot read them.
        """

    # ----------------------------------------------------------------- commands and files
    @abc.abstractmethod
    def run(
        self,
        argv: Sequence[str] | str,
        *,
        timeout: float = 60.0,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        check: bool = False,
    ) -> CommandResult:
        """Run a command on the host and wait for it.

        ``argv`` is a list, or a string run by ``/bin/sh -c``; ``timeout`` in seconds; ``user``
        runs it as that account.  Returns the exit code, stdout and stderr.  Raises
        :class:`HostDown` if the host is off, :class:`CommandTimeout` after ``timeout`` s (the
        command's whole process group is killed), :class:`CommandError` if ``check`` and rc ≠ 0.
        """

    @abc.abstractmethod
    def write_file(
        self,
        path: str,
        content: str | bytes,
        *,
        mode: int = 0o644,
        owner: str | None = None,
        group: str | None = None,
    ) -> bool:
        """Write ``content`` to ``path`` on the host with ``mode`` (e.g. 0o600) and owner.

        The write is atomic (temporary file + rename) and parent directories are created.
        Returns True if the file changed (content, mode or owner), False if it was already so —
        so callers can tell whether a daemon needs a reload.  Raises :class:`HostDown`.
        """

    @abc.abstractmethod
    def read_file(self, path: str) -> bytes | None:
        """The file's bytes, or None if it does not exist.  Raises :class:`HostDown`."""

    # ----------------------------------------------------------------- daemons
    @abc.abstractmethod
    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str = "/",
    ) -> Daemon:
        """Start a long-running daemon tracked under ``name`` (one per name per host).

        It runs in its own session, detached from the caller, with stdout and stderr appended to
        a per-daemon log file.  If a daemon of that name is already running it is returned as is
        (idempotent).  Raises :class:`HostDown`, :class:`HostError` if it exits at once.
        """

    @abc.abstractmethod
    def daemon(self, name: str) -> Daemon | None:
        """The running daemon called ``name``, or None (never started, exited, or host off)."""

    @abc.abstractmethod
    def stop(self, name: str, *, timeout: float = 15.0, sig: str = "TERM") -> bool:
        """Stop daemon ``name`` with signal ``sig`` (TERM, INT, KILL …), escalating to KILL after
        ``timeout`` s.  Returns True if it was running.  Raises :class:`HostDown`."""

    def signal(self, name: str, sig: str = "TERM") -> bool:
        """Send signal ``sig`` (TERM, KILL, STOP, CONT, HUP …) to daemon ``name``; True if it was
        running.  Providers implement it (verify's kill -9 and freeze faults use it); raises
        :class:`HostError` where a provider cannot."""
        raise HostError(f"{self.name}: this provider cannot signal daemons")

    @abc.abstractmethod
    def processes(self) -> list[ProcessInfo]:
        """Every process of the host (as ``ps`` inside it sees them).  Empty when off."""

    # ----------------------------------------------------------------- power and network faults
    @abc.abstractmethod
    def is_on(self) -> bool:
        """True while the host is powered on."""

    @abc.abstractmethod
    def power_off(self) -> float:
        """Fence the host: its link goes down, every process dies at once and its addresses
        (including any VIP it held) are flushed, as with a pulled power cord: peers get no FIN or
        RST from it and find out by their own timeouts.  Persistent disk
        state survives; RAM state (/run, /dev/shm, /tmp) does not.  Idempotent.
        Returns the time it took in seconds."""

    @abc.abstractmethod
    def power_on(self) -> float:
        """Boot the host again: link up, boot address only (no VIP), fresh /run and /tmp, no
        daemon running.  Idempotent.  Returns the time it took in seconds."""

    @abc.abstractmethod
    def partition(self) -> None:
        """Cut the host off the network (every peer, both directions) while it keeps running."""

    @abc.abstractmethod
    def heal(self) -> None:
        """Undo :meth:`partition`."""

    # ----------------------------------------------------------------- placement
    def machine(self) -> "Host":
        """The physical machine this host runs on (its failure domain): itself, or for a
        container host the machine it is placed on."""
        return self

    def containers(self) -> list["Host"]:
        """Container hosts placed on this machine, which go down with it (default: none)."""
        return []

    # ----------------------------------------------------------------- helpers shared by providers
    def sh(self, script: str, **kw) -> CommandResult:
        """Run a shell script (``/bin/sh -c``) with :meth:`run`'s keywords."""
        return self.run(script, **kw)

    def exists(self, path: str) -> bool:
        """True if ``path`` exists on the host."""
        return self.run(["test", "-e", path]).ok

    def ensure_volume(self, path: str, size_bytes: int) -> bool:
        """Give ``path`` a file system of its own of ``size_bytes`` (bytes) if the provider can and
        ``path`` does not exist yet; True if ``path`` is on a file system of its own afterwards
        (:meth:`own_filesystem`).

        A directory on its own volume can fill up without filling the machine's root file system
        (the Galera disk-full fault needs that, see :class:`stackha.verify.faults.DiskFull`).  The
        default (real machines over SSH) creates nothing: the operator partitions the disks; it
        only reports whether ``path`` already is on a file system of its own."""
        return self.own_filesystem(path)

    def own_filesystem(self, path: str) -> bool:
        """True if ``path`` exists on another file system than the host's ``/`` (its device
        differs).  A bind mount of a directory of the root file system is *not* one: filling it
        fills ``/``."""
        return self.run(["sh", "-c", 'd=$(stat -c %d "$1") && [ "$d" != "$(stat -c %d /)" ]', "sh", path]).ok

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.address}>"


def parse_ps(stdout: str) -> list[ProcessInfo]:
    """Processes from ``ps -eo pid=,comm=,args=`` output, without the ``ps`` that listed them."""
    out = []
    for line in stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) > 2 and parts[2] == "ps -eo pid=,comm=,args=":
            continue
        if len(parts) >= 2:
            out.append(ProcessInfo(int(parts[0]), parts[1], parts[2] if len(parts) > 2 else ""))
    return out


def to_argv(argv: Sequence[str] | str) -> list[str]:
    """Normalise a command: a string becomes ``/bin/sh -c STRING``; a sequence is copied."""
    if isinstance(argv, str):
        return ["/bin/sh", "-c", argv]
    return [str(a) for a in argv]


def describe(argv: Sequence[str] | str) -> str:
    """A short printable form of a command, for messages."""
    text = argv if isinstance(argv, str) else shlex.join(str(a) for a in argv)
    return text if len(text) <= 120 else text[:117] + "..."


def host_path(path: str) -> PurePosixPath:
    """Validate an absolute path on a host (ValueError if relative or with '..')."""
    p = PurePosixPath(path)
    if not p.is_absolute() or ".." in p.parts:
        raise ValueError(f"host path must be absolute without '..': {path!r}")
    return p


#: The POSIX-shell daemon supervisor every provider uses on a host (``sh -c SCRIPT sh ACTION …``):
#: ``spawn META PIDFILE LOG CWD ARGVJSON CMD…`` starts CMD in its own session (log appended,
#: stdin /dev/null), waits for its PID and writes META ``{"pid": N, "start": "TICKS", "argv": […]}``
#: — the start time (clock ticks, /proc/PID/stat field 22) tells a live daemon from a reused PID;
#: ``check META`` (exit 44: not running), ``signal META SIG``, ``stop META SIG SECONDS`` (then
#: KILL), ``list DIR``.  The lab's ``spawn`` writes the same META from Python.
SUPERVISE_SCRIPT = r'''
start_of() { s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [ "$(echo "$s" | cut -d' ' -f1)" != Z ] || return 1; echo "$s" | cut -d' ' -f20; }
alive() { [ -n "$pid" ] && [ "$(start_of "$pid")" = "$start" ]; }
load() { [ -f "$1" ] || exit 44; m=$(cat -- "$1")
  pid=$(echo "$m" | sed -n 's/^{"pid": \([0-9]*\), "start": "\([0-9]*\)".*/\1/p')
  start=$(echo "$m" | sed -n 's/^{"pid": \([0-9]*\), "start": "\([0-9]*\)".*/\2/p'); }
action=$1; shift
case $action in
spawn)
  meta=$1 pidfile=$2 log=$3 cwd=$4 argvjson=$5; shift 5
  mkdir -p "$(dirname -- "$log")" "$(dirname -- "$meta")"
  rm -f -- "$pidfile" "$meta"
  setsid -f /bin/sh -c 'cd "$3" || exit 1; echo $$ > "$1"; log=$2; shift 3; exec "$@" >> "$log" 2>&1 < /dev/null' \
    sh "$pidfile" "$log" "$cwd" "$@"
  i=0
  while [ $i -lt 500 ]; do
    if [ -s "$pidfile" ]; then
      pid=$(cat -- "$pidfile"); start=$(start_of "$pid") || exit 3
      printf '{"pid": %s, "start": "%s", "argv": %s}\n' "$pid" "$start" "$argvjson" > "$meta.tmp"
      mv -f -- "$meta.tmp" "$meta"; echo "$pid"; exit 0
    fi
    sleep 0.01; i=$((i+1))
  done
  exit 3 ;;
check) load "$1"; alive || exit 44; echo "$m" ;;
signal) load "$1"; alive || exit 44; kill -s "$2" "$pid" 2>/dev/null || exit 44 ;;
stop)
  load "$1"; alive || exit 44; kill -s "$2" "$pid" 2>/dev/null || exit 44
  end=$(( $(date +%s%N) / 1000000 + $3 * 1000 ))
  while alive && [ $(( $(date +%s%N) / 1000000 )) -lt $end ]; do sleep 0.02; done
  if alive; then kill -s KILL "$pid" 2>/dev/null; i=0; while alive && [ $i -lt 250 ]; do sleep 0.02; i=$((i+1)); done; fi ;;
list) for f in "$1"/*.json; do [ -f "$f" ] || continue; load "$f"; alive && basename "$f" .json; done; exit 0 ;;
esac'''


def launcher_script(name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                    user: str | None = None, cwd: str = "/") -> str:
    """A ``/bin/sh`` script that starts daemon ``name`` exactly as :meth:`Host.spawn` does (same
    pidfile, META and log under :data:`DAEMON_RUN_DIR` / :data:`DAEMON_LOG_DIR`, so stackha's
    :meth:`Host.daemon` finds it), and does nothing when it already runs — for a supervisor inside
    the host that restarts it (masakari-processmonitor's start and restart commands).  Pure."""
    if not DAEMON_NAME_RE.match(name):
        raise ValueError(f"daemon name {name!r}: a lower-case letter, then letters, digits, '-' and '_' (≤ 64)")
    meta, pidfile, log = (f"{DAEMON_RUN_DIR}/{name}.json", f"{DAEMON_RUN_DIR}/{name}.pid",
                          f"{DAEMON_LOG_DIR}/{name}.log")
    cmd = [str(a) for a in argv]
    if user and user != "root":
        cmd = ["/bin/sh", "-c", 'exec setpriv --reuid="$0" --regid="$(id -g "$0")" --init-groups "$@"', user, *cmd]
    lines = ["#!/bin/sh", f"# Rendered by stackha: start daemon {name} as stackha does, unless it runs.",
             f"SUPERVISE={shlex.quote(SUPERVISE_SCRIPT)}",
             f'/bin/sh -c "$SUPERVISE" sh check {shlex.quote(meta)} >/dev/null 2>&1 && exit 0']
    lines += [f"export {k}={shlex.quote(str(v))}" for k, v in (env or {}).items()]
    lines.append(f'exec /bin/sh -c "$SUPERVISE" sh spawn {shlex.quote(meta)} {shlex.quote(pidfile)} '
                 f"{shlex.quote(log)} {shlex.quote(cwd)} {shlex.quote(json.dumps([str(a) for a in argv]))} "
                 + " ".join(shlex.quote(a) for a in cmd))
    return "\n".join(lines) + "\n"

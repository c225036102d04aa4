"""Faults, applied through the Host interface (so they work on any machine provider), and the
measurement of stackha's recovery after them.

A :class:`Fault` has ``inject()`` (break something) and ``restore()`` (the outside world puts the
broken thing back: power the host on, heal the cable); both return :class:`FaultEvent` records
with wall-clock times, which the report and the timeline show next to the probes' operations.
Neither restarts a daemon: that is stackha's job, measured by :func:`recover_until_active`.

Faults (seed 001 "Measuring HA"; DESIGN.md "verify"):

- :class:`KillDaemon` — ``kill -9`` of a unit's daemon (``host.signal(name, "KILL")``);
- :class:`PowerOff` — power one or several hosts off (the lab's real fencing: cgroup.kill, link
  down, addresses flushed — LAB-NOTES "Hosts"), power them on again in ``restore``; a cold start is
  a PowerOff of every controller at once (:func:`cold_start`);
- :class:`Partition` — cut a host off the network while it keeps running, heal in ``restore``;
- :class:`LinkFlap` — a bounded number of short partitions (down ``down_s``, up ``up_s``);
- gray failures, which a liveness check does not see (issue 10): :class:`Freeze` — a daemon stopped
  with SIGSTOP (its process and listening sockets stay, nothing answers), SIGCONT in ``restore``;
  :class:`PacketLoss` — a share of every packet in and out of a host dropped (an nftables table with
  ``numgen random``, removed in ``restore``).  Delay (tc netem) is not offered: the lab machine's
  kernel has no ``sch_netem`` (``tc qdisc add … netem`` answers "Specified qdisc kind is unknown");
  :class:`DiskFull` — the file system of a daemon's data filled until writes fail with ENOSPC.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from stackha.hosts.base import Host, HostError
from stackha.services.base import WorkloadState

MAX_FLAPS = 20


@dataclass
class FaultEvent:
    """Something a fault did: ``t`` wall-clock seconds, ``what`` a short description,
    ``host`` the host it was done to, ``seconds`` how long the action took."""

    t: float
    what: str
    host: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class Fault:
    """Base class: ``inject()`` then, later, ``restore()`` (idempotent; safe after a failed inject)."""

    name = "fault"

    def describe(self) -> str:
        return self.name

    def inject(self) -> list[FaultEvent]:
        raise NotImplementedError

    def restore(self) -> list[FaultEvent]:
        return []


class KillDaemon(Fault):
    """kill -9 of daemon ``daemon`` on ``host``.  Raises :class:`HostError` if it was not running
    (a fault that hits nothing would measure nothing)."""

    name = "kill -9"

    def __init__(self, host: Host, daemon: str):
        self.host, self.daemon = host, daemon

    def describe(self) -> str:
        return f"kill -9 {self.daemon} on {self.host.name}"

    def inject(self) -> list[FaultEvent]:
        t = time.time()
        t0 = time.monotonic()
        hit = self.host.signal(self.daemon, "KILL")
        if not hit:
            raise HostError(f"{self.host.name}: daemon {self.daemon} is not running; nothing to kill")
        return [FaultEvent(t, f"kill -9 {self.daemon}", self.host.name, time.monotonic() - t0)]


def _children(host: Host) -> list[Host]:
    return list(host.containers())


class PowerOff(Fault):
    """Power ``hosts`` off (one after the other, a few ms each), power them on in ``restore``
    (parents first; container hosts that were on come back with their machine)."""

    name = "power off"

    def __init__(self, hosts: Sequence[Host]):
        if not hosts:
            raise ValueError("PowerOff needs at least one host")
        self.hosts = list(hosts)
        self._off: list[Host] = []

    def describe(self) -> str:
        return "power off " + ", ".join(h.name for h in self.hosts)

    def inject(self) -> list[FaultEvent]:
        events = []
        for h in self.hosts:
            # Containers on this machine go down with it; remember them to bring them back.
            for c in [h, *_children(h)]:
                if c.is_on() and c not in self._off:
                    self._off.append(c)
            t = time.time()
            secs = h.power_off()
            events.append(FaultEvent(t, "power off", h.name, secs))
        return events

    def restore(self) -> list[FaultEvent]:
        events = []
        for h in self._off:  # parents were appended before their children
            if h.is_on():
                continue
            t = time.time()
            secs = h.power_on()
            events.append(FaultEvent(t, "power on", h.name, secs))
        self._off = []
        return events


class Partition(Fault):
    """Cut ``host`` off the network (both directions) while it keeps running; heal in ``restore``."""

    name = "partition"

    def __init__(self, host: Host):
        self.host = host
        self._cut = False

    def describe(self) -> str:
        return f"partition {self.host.name}"

    def inject(self) -> list[FaultEvent]:
        t = time.time()
        self.host.partition()
        self._cut = True
        return [FaultEvent(t, "partition", self.host.name)]

    def restore(self) -> list[FaultEvent]:
        if not self._cut:
            return []
        t = time.time()
        self.host.heal()
        self._cut = False
        return [FaultEvent(t, "heal", self.host.name)]


class LinkFlap(Fault):
    """``count`` (≤ :data:`MAX_FLAPS`) cycles of link down ``down_s`` s / up ``up_s`` s on ``host``,
    all inside ``inject`` (bounded: count × (down_s + up_s) seconds); ``restore`` makes sure the
    link is up."""

    name = "link flap"

    def __init__(self, host: Host, count: int = 3, down_s: float = 1.0, up_s: float = 2.0):
        if not 1 <= count <= MAX_FLAPS:
            raise ValueError(f"link flap count must be 1..{MAX_FLAPS}, not {count}")
        self.host, self.count, self.down_s, self.up_s = host, count, down_s, up_s
        self._part = Partition(host)

    def describe(self) -> str:
        return f"flap {self.host.name}'s link {self.count}× ({self.down_s:g} s down, {self.up_s:g} s up)"

    def inject(self) -> list[FaultEvent]:
        events: list[FaultEvent] = []
        for i in range(self.count):
            events += self._part.inject()
            time.sleep(self.down_s)
            events += self._part.restore()
            if i < self.count - 1:
                time.sleep(self.up_s)
        return events

    def restore(self) -> list[FaultEvent]:
        return self._part.restore()


class Freeze(Fault):
    """SIGSTOP daemon ``daemon`` on ``host`` (a hung process: it keeps its PID, its sockets and its
    TCP connections, the kernel still completes handshakes on its listening ports, but nothing is
    ever answered); SIGCONT in ``restore``.  Raises :class:`HostError` if the daemon is not running."""

    name = "freeze"

    def __init__(self, host: Host, daemon: str):
        self.host, self.daemon = host, daemon
        self._stopped = False

    def describe(self) -> str:
        return f"SIGSTOP {self.daemon} on {self.host.name}"

    def inject(self) -> list[FaultEvent]:
        t = time.time()
        if not self.host.signal(self.daemon, "STOP"):
            raise HostError(f"{self.host.name}: daemon {self.daemon} is not running; nothing to freeze")
        self._stopped = True
        return [FaultEvent(t, f"SIGSTOP {self.daemon}", self.host.name)]

    def restore(self) -> list[FaultEvent]:
        if not self._stopped:
            return []
        t = time.time()
        if self.host.is_on():
            self.host.signal(self.daemon, "CONT")
        self._stopped = False
        return [FaultEvent(t, f"SIGCONT {self.daemon}", self.host.name)]


LOSS_TABLE = "stackha_loss"


class PacketLoss(Fault):
    """Drop ``percent`` % of the packets entering and leaving ``host`` (nftables ``numgen random``
    in a table of its own inside the host; SSH on port 22 is spared so a provider's own session
    survives).  ``restore`` deletes the table.  Raises :class:`HostError` if nft refuses it."""

    name = "packet loss"

    def __init__(self, host: Host, percent: int = 30):
        if not 1 <= percent <= 100:
            raise ValueError(f"packet loss must be 1..100 %, not {percent}")
        self.host, self.percent = host, percent
        self._on = False

    def describe(self) -> str:
        return f"drop {self.percent} % of {self.host.name}'s packets"

    def rules(self) -> str:
        """The nftables script (``nft -f -``) that makes the loss."""
        chains = []
        for chain, hook, port in (("in", "input", "dport"), ("out", "output", "sport")):
            chains.append(f"  chain {chain} {{\n    type filter hook {hook} priority 0; policy accept;\n"
                          f"    tcp {port} 22 accept\n    numgen random mod 100 < {self.percent} drop\n  }}")
        return f"table inet {LOSS_TABLE} {{\n" + "\n".join(chains) + "\n}\n"

    def inject(self) -> list[FaultEvent]:
        t = time.time()
        self.host.run(["nft", "delete", "table", "inet", LOSS_TABLE], timeout=20)
        res = self.host.run(["nft", "-f", "-"], input=self.rules(), timeout=20)
        if not res.ok:
            raise HostError(f"{self.host.name}: nft refused the packet-loss table: {res.stderr.strip()[-200:]}")
        self._on = True
        return [FaultEvent(t, f"{self.percent} % packet loss", self.host.name)]

    def restore(self) -> list[FaultEvent]:
        if not self._on:
            return []
        t = time.time()
        if self.host.is_on():
            self.host.run(["nft", "delete", "table", "inet", LOSS_TABLE], timeout=20)
        self._on = False
        return [FaultEvent(t, "packet loss removed", self.host.name)]


BALLAST = ".stackha-ballast"


class DiskFull(Fault):
    """Fill the file system holding ``path`` on ``host`` until writes fail with ENOSPC (a ballast
    file, ``fallocate`` then ``dd`` to the last block), and check that an unprivileged write there
    really fails; ``restore`` deletes the ballast.  Refuses (:class:`HostError`) unless ``path`` is
    on a file system of its own (:meth:`Host.own_filesystem`, :meth:`Host.ensure_volume`): filling a shared or root file system
    would break the machine, not the one daemon.  ``user``: who must see ENOSPC (the daemon's
    user, e.g. ``mysql``)."""

    name = "disk full"

    def __init__(self, host: Host, path: str, user: str = "nobody"):
        if not re.fullmatch(r"/[A-Za-z0-9/_.-]*", path) or not re.fullmatch(r"[a-z_][a-z0-9_-]*", user):
            raise ValueError(f"disk full: give an absolute plain path and a user name, not {path!r} / {user!r}")
        self.host, self.path, self.user = host, path.rstrip("/") or "/", user
        self._ballast = f"{self.path}/{BALLAST}"
        self._on = False

    def describe(self) -> str:
        return f"fill {self.path} on {self.host.name} (ENOSPC)"

    def script(self) -> str:
        """The shell script that fills the file system and proves ENOSPC (exit 3: not a file
        system of its own; 4: a write still succeeds; 5: it failed, but not with ENOSPC)."""
        p, b = self.path, self._ballast
        return (f'[ "$(stat -c %d {p})" != "$(stat -c %d /)" ] || exit 3\n'  # Host.own_filesystem
                f"mkdir -p {p}/.stackha-probe && chmod 1777 {p}/.stackha-probe || exit 5\n"
                f"avail=$(df --output=avail -B1 {p} | tail -n 1)\n"
                f"fallocate -l $(( avail > 1048576 ? avail - 1048576 : 4096 )) {b} || true\n"
                f"dd if=/dev/zero of={b}.tail bs=4096 status=none 2>/dev/null || true\n"
                f"out=$(su -s /bin/sh {self.user} -c 'head -c 65536 /dev/zero > {p}/.stackha-probe/w' 2>&1)"
                f" && exit 4\n"
                f"rm -f {p}/.stackha-probe/w\n"
                f'case "$out" in *"No space left"*) exit 0;; esac\n'
                f'echo "$out" >&2; exit 5\n')

    def inject(self) -> list[FaultEvent]:
        t = time.time()
        res = self.host.run(["/bin/sh", "-c", self.script()], timeout=120)
        self._on = res.rc != 3
        if res.rc == 3:
            raise HostError(f"{self.host.name}: {self.path} is not a volume of its own; refusing to fill it")
        if not res.ok:
            self.restore()
            why = "still takes writes" if res.rc == 4 else f"refused a write but not with ENOSPC: {res.stderr.strip()[-200:]}"
            raise HostError(f"{self.host.name}: {self.path} {why} after filling it (exit {res.rc})")
        return [FaultEvent(t, f"{self.path} full (ENOSPC)", self.host.name, time.time() - t)]

    def restore(self) -> list[FaultEvent]:
        if not self._on:
            return []
        t = time.time()
        if self.host.is_on():
            self.host.run(["rm", "-rf", self._ballast, f"{self._ballast}.tail", f"{self.path}/.stackha-probe"],
                          timeout=60)
        self._on = False
        return [FaultEvent(t, f"{self.path} freed", self.host.name)]


class Together(Fault):
    """Several faults injected one right after the other (a double fault) and restored in reverse."""

    name = "double fault"

    def __init__(self, faults: Sequence[Fault]):
        if len(faults) < 2:
            raise ValueError("Together needs at least two faults")
        self.faults = list(faults)

    def describe(self) -> str:
        return " + ".join(f.describe() for f in self.faults)

    def inject(self) -> list[FaultEvent]:
        return [e for f in self.faults for e in f.inject()]

    def restore(self) -> list[FaultEvent]:
        return [e for f in reversed(self.faults) for e in f.restore()]


def cold_start(controllers: Sequence[Host]) -> PowerOff:
    """Every controller powered off at once, then all powered on (``restore``): the fault a
    datacenter power loss makes; Galera must then bootstrap from the highest seqno."""
    f = PowerOff(controllers)
    f.name = "cold start"
    return f


# --------------------------------------------------------------------------- recovery
@dataclass
class Recovery:
    """stackha's recovery after a fault: ``seconds`` from the start of :func:`recover_until_active`
    until every unit was active (None: not within the deadline), ``rounds`` of recover + observe,
    ``actions`` what the operators did, ``not_active`` the units still not active at the end
    (``"unit: state message"``)."""

    seconds: float | None
    rounds: int = 0
    actions: dict[str, list[str]] = field(default_factory=dict)
    not_active: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def not_active_units(statuses) -> list[str]:
    """``"unit: state message"`` for every unit of ``statuses`` (AppStatus list) that is not active."""
    return [f"{u.unit}: {u.state.value} {u.message}".strip()
            for st in statuses for u in st.units if u.state != WorkloadState.ACTIVE]


def recover_until_active(deployment, deadline_s: float = 240.0, poll_s: float = 1.0,
                         progress: Callable[[str], None] = lambda s: None) -> Recovery:
    """Run ``deployment.recover()`` (stackha's automatic recovery: operators restart daemons,
    rejoin clusters, bootstrap Galera from the highest seqno) and observe, until every unit is
    active or ``deadline_s`` seconds pass.  Never raises for a unit that stays down: the result
    says which."""
    t0 = time.monotonic()
    rec = Recovery(seconds=None)
    while True:
        statuses = deployment.status()
        rec.not_active = not_active_units(statuses)
        if not rec.not_active:
            rec.seconds = round(time.monotonic() - t0, 2)
            return rec
        if time.monotonic() - t0 > deadline_s:
            return rec
        rec.rounds += 1
        progress(f"recovering ({len(rec.not_active)} unit(s) not active)")
        done = deployment.recover(progress=lambda app, msg: progress(f"{app}: {msg}"))
        for app, actions in done.items():
            rec.actions.setdefault(app, []).extend(actions)
        time.sleep(poll_s)

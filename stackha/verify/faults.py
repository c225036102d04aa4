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
- :class:`LinkFlap` — a bounded number of short partitions (down ``down_s``, up ``up_s``).
"""

from __future__ import annotations

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
        signal = getattr(self.host, "signal", None)
        if signal is not None:
            hit = signal(self.daemon, "KILL")
        else:  # a provider without signal(): stop() with KILL is the same fault
            hit = self.host.stop(self.daemon, sig="KILL", timeout=0.1)
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

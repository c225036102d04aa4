"""Scenarios: a named fault + the probes + expectations, run against a deployed cloud.

One run of a scenario (:func:`run_scenario`):

1. every unit must be active (else stackha's recovery is run first, and the run is refused if
   that does not work);
2. the probes start on the client host and must each succeed ``WARM_OK`` times;
3. ``BASELINE_S`` of steady traffic, then the fault is injected; it is held ``hold_s`` seconds
   (the HA mechanisms fail over on their own meanwhile — this is what the gaps measure);
4. the fault is lifted (power on, heal) and stackha's automatic recovery (``Deployment.recover``:
   daemons restarted, clusters rejoined, Galera bootstrapped from the highest seqno) runs until
   every unit is active: ``recovery_s`` is that time;
5. ``POST_S`` more of traffic, the probes stop, the AMQP consumer drains the queue, the MySQL ids
   are read back through the VIP, and the checker (:mod:`stackha.verify.check`) gives per probe the
   longest gap, failures, acknowledged-but-lost, failed-but-committed and duplicates.

Each run writes ``<run_id>.json`` (the report), ``<run_id>.png`` (the timeline) and the probe logs
(``<run_id>/``) under the deployment's ``verify/`` directory.

The Pacemaker scenarios (``pacemaker-*``, for clouds with an ``hacluster`` application) have a flow
of their own (power off the VIP node and check the fence, kill a resource and check the restart in
place, lose quorum and check the survivor stops): :attr:`Scenario.runner` runs them, with an HTTP
probe through the Pacemaker VIP (:class:`HttpProbe`), and reports the same :class:`RunReport`.

Expectations are the targets of issue 6 for stackha's tuning (VIP failover gap ≤ 1 s, Galera
writer loss ≤ 2 s, RabbitMQ node loss ≤ 2 s confirm gap, Keystone controller loss 0 failed
requests, token issue ≤ 60 s after a cold start): they are reported as met or missed.  Only the
checker's verdicts (an acknowledged operation lost, a final state that could not be read, a probe
that never succeeded) fail a run.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from stackha.errors import UserError
from stackha.hosts.base import Host, HostError
from stackha.polling import WaitTimeout, wait_until
from stackha.services.base import AppContext, WorkloadState
from stackha.services.galera import BASE as GALERA_BASE
from stackha.services.pacemaker import HAClusterOperator, node_name, with_vip
from stackha.verify import check
from stackha.verify.faults import (
    DiskFull,
    Fault,
    FaultEvent,
    Freeze,
    KillDaemon,
    LinkFlap,
    PacketLoss,
    Partition,
    PowerOff,
    Together,
    cold_start,
    not_active_units,
    recover_until_active,
)
from stackha.verify.probes import ProbeError, Probes
from stackha.verify.check import longest_gap, operations, parse_jsonl

WARM_OK = 5
BASELINE_S = 3.0
POST_S = 5.0
RECOVERY_DEADLINE_S = 300.0
PRECONDITION_DEADLINE_S = 180.0
LB_KINDS = ("haproxy", "keepalived", "hacluster")


# --------------------------------------------------------------------------- targets
def _ctx(d, kind: str):
    for c in d.contexts().values():
        if c.kind == kind:
            return c
    raise UserError(f"the cloud on lab {d.name} has no {kind} application")


def _daemon(kind: str) -> str:
    """The daemon name an operator spawns (its module's ``DAEMON``)."""
    import importlib

    return getattr(importlib.import_module(f"stackha.services.{kind}"), "DAEMON", kind)


def machine_of(d, host: Host) -> Host:
    """The machine a (container) host runs on: itself, or the machine it is placed on."""
    return host.machine()


def galera_writer(d, probes: Probes) -> Host:
    """The host of the Galera node that writes: the ``@@hostname`` the MySQL probe saw on its
    last acknowledged INSERT through the VIP, else asked with the mariadb client (as the demo)."""
    g = _ctx(d, "galera")
    node = probes.last_node("mysql") if "mysql" in probes.probes else None
    if node is None:
        from stackha.cli.demo import _galera_writer

        node = _galera_writer(d)
    for u in g.units:
        if u.host.name == node:
            return u.host
    raise UserError(f"the database VIP answered from {node!r}, which is no unit of {g.name}")


def vip_holder(d, probes: Probes) -> Host:
    """The load balancer holding the VIP now."""
    lb = _ctx(d, "haproxy")
    for u in lb.units:
        if u.host.is_on() and any(a.ip == lb.vip.ip for a in u.host.addresses()):
            return u.host
    raise UserError(f"no load balancer holds the VIP {lb.vip.ip}")


def rabbit_leader(d, probes: Probes) -> Host:
    """The RabbitMQ node leading the probe's quorum queue (``rabbitmqctl list_queues name
    leader``), else the broker the publisher is connected to."""
    from stackha.services import rabbitmq as rmq

    r = _ctx(d, "rabbitmq")
    queue = f"stackha-verify-{probes.run_id}"
    by_addr = {str(u.address): u for u in r.units}
    for u in r.units:
        if not u.host.is_on() or u.host.daemon(rmq.DAEMON) is None:
            continue
        try:
            res = u.host.run([rmq.CTL, "-q", "list_queues", "name", "leader", "--formatter", "json"],
                             env=rmq.node_env(u), user=rmq.USER, timeout=20)
        except HostError:
            continue
        if not res.ok:
            continue
        try:
            rows = json.loads(res.stdout)
        except json.JSONDecodeError:
            continue
        for row in rows:
            if row.get("name") == queue and row.get("leader"):
                addr = str(row["leader"]).split("@", 1)[-1]
                if addr in by_addr:
                    return by_addr[addr].host
        break
    node = probes.last_node("amqp-publish")
    if node and node.split(":")[0] in by_addr:
        return by_addr[node.split(":")[0]].host
    return r.units[0].host


def unit_machines(d, skip_kinds: tuple[str, ...] = ()) -> list[Host]:
    """The machine of every unit of the deployment (but those of ``skip_kinds``), once each."""
    out: list[Host] = []
    for c in d.contexts().values():
        if c.kind in skip_kinds:
            continue
        for u in c.units:
            m = machine_of(d, u.host)
            if m not in out:
                out.append(m)
    return out


def power_on_fenced(hosts: list[Host]) -> list[FaultEvent]:
    """Power on every host of ``hosts`` (those that were on before the fault) that is off now:
    STONITH fenced it during the fault (stackha's default ``stonith_action`` is ``off``, which
    leaves a fenced node off until someone powers it on), and the operator — played here by the
    scenario, after the fault — powers it on, as ``_FencedPowerOn`` does for the Pacemaker
    scenarios.  Returns the power-on events."""
    events = []
    for h in hosts:
        if not h.is_on():
            t = time.time()
            h.power_on()
            events.append(FaultEvent(t, "powered on after being fenced during the fault", h.name, time.time() - t))
    return events


def controllers(d) -> list[Host]:
    """The machines of every unit that is not a load balancer (Galera, RabbitMQ, Keystone …)."""
    return unit_machines(d, LB_KINDS)


# --------------------------------------------------------------------------- scenarios
@dataclass(frozen=True)
class Expectation:
    """A target: ``probe``'s ``metric`` (a :class:`~stackha.verify.check.ProbeResult` field, or
    ``first_success_s``) must be ≤ ``limit``."""

    probe: str
    metric: str
    limit: float
    text: str

    def evaluate(self, results: dict[str, check.ProbeResult], extra: dict) -> dict:
        """``{"target", "probe", "metric", "limit", "value", "met", "why"}``: not met when the value
        is missing or over the limit, or when the probe's log does not cover the window (verdict
        no-evidence, no-success, truncated or not-back: its figures prove nothing)."""
        res = results.get(self.probe)
        if self.metric == "first_success_s":
            value = extra.get("first_success_s", {}).get(self.probe)
        else:
            value = getattr(res, self.metric) if res is not None else None
        why = ""
        if value is None:
            why = "no value"
        elif res is not None and res.incomplete:
            why = f"probe {res.verdict}"
        elif value > self.limit:
            why = f"{value:g} > {self.limit:g}"
        return {"target": self.text, "probe": self.probe, "metric": self.metric, "limit": self.limit,
                "value": value, "met": not why, "why": why}


@dataclass(frozen=True)
class Scenario:
    """A named fault with its hold time (s) and expectations; ``fault(d, probes)`` picks the
    target (from the live cloud and what the probes saw) and builds the :class:`Fault`."""

    name: str
    description: str
    fault: Callable[..., Fault]
    hold_s: float
    expectations: tuple[Expectation, ...] = ()
    needs: tuple[str, ...] = ()  # application kinds the scenario needs
    #: probes beyond the data path's (mysql, amqp, keystone) that the scenario runs where the
    #: cloud has them (:func:`stackha.verify.probes.available_probes`)
    probes: tuple[str, ...] = ()
    #: A scenario with a flow of its own (the Pacemaker ones): ``runner(d, s, run, out_dir, say)
    #: -> RunReport`` replaces the generic run (fault → hold → restore → recover → check).
    runner: Callable[..., "RunReport"] | None = None
    #: A check made while the fault is held: ``during(d, fault, until) -> {"ok": bool, "problem":
    #: str, "facts": dict}`` (``until`` the wall-clock end of the hold); not ok fails the run.
    during: Callable[..., dict] | None = None


BASE_PROBES = ("mysql", "amqp", "keystone")


def scenario_probes(d, s: Scenario) -> list[str]:
    """The probes scenario ``s`` runs on ``d``: the data path's and its own, where available."""
    from stackha.verify.probes import available_probes

    return [p for p in available_probes(d) if p in BASE_PROBES or p in s.probes]


def _kill(kind: str, pick: Callable, daemon: str | None = None) -> Callable[..., Fault]:
    return lambda d, probes: KillDaemon(pick(d, probes), daemon or _daemon(kind))


def first_unit(kind: str) -> Callable[..., Host]:
    """A picker: the host of the first unit of ``kind`` that is on."""
    def pick(d, probes) -> Host:
        ctx = _ctx(d, kind)
        for u in ctx.units:
            if u.host.is_on():
                return u.host
        raise UserError(f"no unit of {ctx.name} is on")
    return pick


def minority_stops_writes(d, fault: Fault, until: float, poll_s: float = 0.5) -> dict:
    """During a partition of a Galera node's machine (the 1 of a 2|1 split): that node must leave
    the Primary component and refuse a write (asked on the node itself, through its local socket —
    the partition cuts the network, not the host).  ``{"ok", "problem", "facts": {"non_primary_after_s",
    "write_refused", "error"}}``; not ok when the node stayed Primary or accepted the write before
    ``until`` (wall clock).  Source: Galera's quorum rule (a minority component is non-Primary and
    refuses queries: LAB-NOTES "Galera")."""
    from stackha.services.galera import ROOT_CNF

    host = getattr(fault, "host", None)
    facts: dict[str, Any] = {}
    if host is None:
        return {"ok": False, "problem": "minority check: the fault names no host", "facts": facts}
    t0 = time.time()
    argv = ["mariadb", f"--defaults-file={ROOT_CNF}", "-N", "-B", "-e"]
    status = ""
    while time.time() < until:
        try:
            r = host.run([*argv, "SHOW GLOBAL STATUS LIKE 'wsrep_cluster_status'"], timeout=5)
            status = r.stdout.split("\t")[-1].strip() if r.ok else f"error: {r.stderr.strip()[-120:]}"
        except HostError as exc:
            status = f"error: {exc}"
        if status and status != "Primary":
            facts["non_primary_after_s"] = round(time.time() - t0, 2)
            facts["status"] = status
            break
        time.sleep(poll_s)
    else:
        return {"ok": False, "problem": f"{host.name}'s Galera node stayed Primary while cut off ({status})",
                "facts": facts}
    try:
        w = host.run([*argv, "CREATE DATABASE IF NOT EXISTS stackha_minority_check"], timeout=10)
        facts["write_refused"] = not w.ok
        facts["error"] = (w.stderr or "").strip()[-160:]
    except HostError as exc:  # a timeout also means no write was served
        facts["write_refused"] = True
        facts["error"] = str(exc)[-160:]
    if not facts["write_refused"]:
        return {"ok": False, "problem": f"{host.name}'s Galera node accepted a write while cut off", "facts": facts}
    return {"ok": True, "problem": "", "facts": facts}


COMPUTE_PROBES = ("nova", "glance", "neutron")


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("galera-writer-kill", "kill -9 the Galera node that HAProxy sends writes to",
             _kill("galera", galera_writer), 10.0,
             (Expectation("mysql", "longest_gap_ms", 2000, "Galera writer loss: write gap ≤ 2.0 s"),),
             ("galera",)),
    Scenario("lb-master-poweroff", "power off the load balancer holding the VIP",
             lambda d, p: PowerOff([vip_holder(d, p)]), 10.0,
             (Expectation("mysql", "longest_gap_ms", 1000, "VIP failover: write gap ≤ 1.0 s"),
              Expectation("keystone", "longest_gap_ms", 1000, "VIP failover: token gap ≤ 1.0 s")),
             ("haproxy",)),
    Scenario("controller-poweroff", "power off the controller whose Galera node writes",
             lambda d, p: PowerOff([machine_of(d, galera_writer(d, p))]), 15.0,
             (Expectation("keystone", "failed", 0, "Keystone controller loss: 0 failed requests"),
              Expectation("keystone", "longest_gap_ms", 2000, "Keystone controller loss: token gap ≤ 2.0 s")),
             ("galera",)),
    Scenario("rabbit-node-kill", "kill -9 the RabbitMQ node leading the probe's quorum queue",
             _kill("rabbitmq", rabbit_leader), 10.0,
             (Expectation("amqp", "longest_gap_ms", 2000, "RabbitMQ node loss: confirm gap ≤ 2.0 s"),),
             ("rabbitmq",)),
    Scenario("partition-controller", "cut the writer's controller off the network (a 2|1 split; its Galera "
             "node must leave the Primary component and refuse writes), heal after 20 s",
             lambda d, p: Partition(machine_of(d, galera_writer(d, p))), 20.0,
             (Expectation("mysql", "longest_gap_ms", 2000, "writer partitioned: write gap ≤ 2.0 s"),
              Expectation("amqp", "longest_gap_ms", 5000, "writer partitioned: AMQP confirm gap ≤ 5.0 s")),
             ("galera",), during=minority_stops_writes),
    Scenario("lb-link-flap", "flap the VIP holder's link 3× (1 s down, 2 s up)",
             lambda d, p: LinkFlap(vip_holder(d, p), count=3, down_s=1.0, up_s=2.0), 2.0, (), ("haproxy",)),
    Scenario("swift-zone-poweroff", "power off the storage host of Swift's first zone for 20 s",
             lambda d, p: PowerOff([machine_of(d, first_unit("swift-storage")(d, p))]), 20.0,
             (Expectation("swift", "failed", 0, "a Swift zone lost: 0 failed PUTs"),),
             ("swift-storage", "swift-proxy"), ("swift",)),
    Scenario("swift-proxy-kill", "kill -9 the first swift-proxy unit's proxy server",
             _kill("swift-proxy", first_unit("swift-proxy"), "swift-proxy"), 10.0,
             (Expectation("swift", "failed", 0, "a Swift proxy lost: 0 failed PUTs"),
              Expectation("swift", "longest_gap_ms", 2000, "a Swift proxy lost: PUT gap ≤ 2.0 s")),
             ("swift-proxy",), ("swift",)),
    Scenario("nova-conductor-kill", "kill -9 nova-conductor on the first controller during server creates",
             _kill("nova-cloud-controller", first_unit("nova-cloud-controller"), "nova-conductor"), 10.0,
             (Expectation("nova", "failed", 0, "a conductor lost: 0 failed server creates"),),
             ("nova-cloud-controller", "nova-compute"), COMPUTE_PROBES),
    Scenario("controller-poweroff-compute", "power off the first controller during a burst of server "
             "creates, image downloads and port creates",
             lambda d, p: PowerOff([machine_of(d, first_unit("nova-cloud-controller")(d, p))]), 15.0,
             (Expectation("nova", "failed", 0, "controller loss: 0 failed server creates"),
              Expectation("glance", "failed", 0, "controller loss: 0 failed image downloads"),
              Expectation("neutron", "failed", 0, "controller loss: 0 failed port creates")),
             ("nova-cloud-controller", "nova-compute"), COMPUTE_PROBES),
    Scenario("rabbit-node-kill-compute", "kill -9 a RabbitMQ node during server creates",
             _kill("rabbitmq", first_unit("rabbitmq")), 10.0,
             (Expectation("nova", "failed", 0, "RabbitMQ node loss: 0 failed server creates"),),
             ("rabbitmq", "nova-compute"), ("nova",)),
    Scenario("cold-start", "power off every controller at once, then power them all on",
             lambda d, p: cold_start(controllers(d)), 5.0,
             (Expectation("keystone", "first_success_s", 60, "cold start: token issue ≤ 60 s after power-on"),),
             ("galera",)),
)}

# --------------------------------------------------------------------------- more faults (issue 10)
def _pick_unit_on(kind: str, machine: Callable[..., Host]) -> Callable[..., Host]:
    """A picker: the host of the unit of ``kind`` that runs on the machine ``machine(d, probes)``
    picks (e.g. keepalived on the VIP holder)."""
    def pick(d, probes) -> Host:
        m = machine(d, probes)
        ctx = _ctx(d, kind)
        for u in ctx.units:
            if machine_of(d, u.host).name == m.name:
                return u.host
        raise UserError(f"no unit of {ctx.name} runs on {m.name}")
    return pick


class _FencedPowerOn(KillDaemon):
    """kill -9 of a cluster daemon whose loss gets the host fenced (Corosync): ``restore`` powers
    the machine back on if STONITH powered it off (the operator repairs the fenced node)."""

    def restore(self) -> list[FaultEvent]:
        m = self.host.machine()
        if m.is_on():
            return []
        t = time.time()
        return [FaultEvent(t, "power on (fenced)", m.name, m.power_on())]


def _pcmk_vip_node(d, probes) -> Host:
    """The hacluster node holding the Pacemaker VIP."""
    ha = with_vip(_ctx(d, "hacluster"))
    holders = HAClusterOperator().vip_holders(ha)
    for u in ha.units:
        if u.host.name in holders:
            return u.host
    raise UserError(f"no node of {ha.name} holds the VIP")


def _double(d, p) -> Fault:
    # pick both targets before either is hit: the writer is read from the probes' last INSERT
    lb, writer = vip_holder(d, p), machine_of(d, galera_writer(d, p))
    return Together([PowerOff([lb]), PowerOff([writer])])


SCENARIOS.update({s.name: s for s in (
    Scenario("haproxy-kill", "kill -9 HAProxy on the load balancer holding the VIP (keepalived's track script "
             "moves the VIP)", _kill("haproxy", vip_holder), 10.0,
             (Expectation("mysql", "longest_gap_ms", 1000, "HAProxy lost: write gap ≤ 1.0 s"),
              Expectation("keystone", "failed", 0, "HAProxy lost: 0 failed token requests")),
             ("haproxy", "keepalived")),
    Scenario("keepalived-kill", "kill -9 keepalived on the load balancer holding the VIP",
             _kill("keepalived", _pick_unit_on("keepalived", vip_holder)), 10.0,
             (Expectation("mysql", "longest_gap_ms", 1000, "keepalived lost: write gap ≤ 1.0 s"),),
             ("keepalived",)),
    Scenario("keystone-kill", "kill -9 Keystone's uwsgi on the first controller",
             _kill("keystone", first_unit("keystone"), "keystone"), 10.0,
             (Expectation("keystone", "failed", 0, "a Keystone unit lost: 0 failed token requests"),
              Expectation("keystone", "longest_gap_ms", 2000, "a Keystone unit lost: token gap ≤ 2.0 s")),
             ("keystone",)),
    Scenario("galera-writer-freeze", "gray failure: SIGSTOP the Galera node that writes (process and port "
             "stay; nothing answers) for 20 s", lambda d, p: Freeze(galera_writer(d, p), _daemon("galera")), 20.0,
             (Expectation("mysql", "longest_gap_ms", 5000, "frozen writer: write gap ≤ 5.0 s"),),
             ("galera",)),
    Scenario("galera-writer-disk-full", "gray failure: fill the writing Galera node's data volume (ENOSPC on "
             "its datadir; the node stays up and Synced) for 20 s",
             lambda d, p: DiskFull(galera_writer(d, p), GALERA_BASE, "mysql"), 20.0,
             (Expectation("mysql", "longest_gap_ms", 5000, "full writer disk: write gap ≤ 5.0 s"),),
             ("galera",)),
    Scenario("rabbit-node-freeze", "gray failure: SIGSTOP the RabbitMQ node leading the probe's quorum queue "
             "for 20 s", lambda d, p: Freeze(rabbit_leader(d, p), _daemon("rabbitmq")), 20.0,
             (Expectation("amqp", "longest_gap_ms", 5000, "frozen RabbitMQ leader: confirm gap ≤ 5.0 s"),),
             ("rabbitmq",)),
    Scenario("controller-packet-loss", "gray failure: drop 30 % of the writer controller's packets for 20 s",
             lambda d, p: PacketLoss(machine_of(d, galera_writer(d, p)), 30), 20.0,
             (Expectation("keystone", "failed", 0, "30 % loss on a controller: 0 failed token requests"),),
             ("galera",)),
    Scenario("lb-packet-loss", "gray failure: drop 30 % of the VIP holder's packets for 20 s",
             lambda d, p: PacketLoss(vip_holder(d, p), 30), 20.0, (), ("haproxy",)),
    Scenario("double-fault", "power off the VIP holder and the writer's controller together",
             _double, 15.0,
             (Expectation("mysql", "longest_gap_ms", 3000, "VIP holder + writer lost: write gap ≤ 3.0 s"),),
             ("galera", "haproxy")),
    Scenario("compute-poweroff", "power off the first compute host during server creates",
             lambda d, p: PowerOff([machine_of(d, first_unit("nova-compute")(d, p))]), 15.0,
             (Expectation("nova", "failed", 0, "a compute host lost: 0 failed server creates"),),
             ("nova-compute",), ("nova",)),
    Scenario("pacemaker-corosync-kill", "kill -9 Corosync on the Pacemaker node holding the VIP (the node "
             "is fenced; powered on again after the hold)",
             lambda d, p: _FencedPowerOn(_pcmk_vip_node(d, p), "corosync"), 15.0,
             (Expectation("keystone", "failed", 0, "Corosync lost: 0 failed token requests"),),
             ("hacluster", "keystone")),
    Scenario("pacemaker-pacemakerd-kill", "kill -9 pacemakerd on the Pacemaker node holding the VIP",
             lambda d, p: _FencedPowerOn(_pcmk_vip_node(d, p), "pacemakerd"), 15.0,
             (Expectation("keystone", "failed", 0, "pacemakerd lost: 0 failed token requests"),),
             ("hacluster", "keystone")),
)})


#: The scenarios the failover benchmark compares (bench/failover.py).
KEY_SCENARIOS = ("lb-master-poweroff", "galera-writer-kill", "rabbit-node-kill", "controller-poweroff",
                 "partition-controller", "cold-start")


def scenario(name: str) -> Scenario:
    """The scenario called ``name``; :class:`UserError` listing the known ones otherwise."""
    if name not in SCENARIOS:
        raise UserError(f"no scenario {name!r}; known: {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def applicable(d, names: list[str] | None = None) -> list[Scenario]:
    """The scenarios (all, or ``names``) whose applications the cloud has."""
    kinds = {c.kind for c in d.contexts().values()}
    chosen = [scenario(n) for n in names] if names else list(SCENARIOS.values())
    if names:
        for s in chosen:
            missing = [k for k in s.needs if k not in kinds]
            if missing:
                raise UserError(f"scenario {s.name} needs {', '.join(missing)}, which lab {d.name} does not run")
        return chosen
    return [s for s in chosen if all(k in kinds for k in s.needs)]


# --------------------------------------------------------------------------- one run
@dataclass
class RunReport:
    """The report of one scenario run (written as JSON; see the module docstring)."""

    scenario: str
    run: int
    run_id: str
    lab: str
    tuning: str
    started: float
    description: str = ""
    fault: str = ""
    hold_s: float = 0.0
    events: list[dict] = field(default_factory=list)
    recovery: dict = field(default_factory=dict)
    recovery_s: float | None = None
    fault_to_recovered_s: float | None = None
    probes: dict[str, dict] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    expectations: list[dict] = field(default_factory=list)
    verdict: str = check.VERDICT_OK
    error: str = ""
    files: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.verdict != check.VERDICT_OK

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _run_id(s: Scenario, run: int) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    return f"{s.name}-{stamp}-r{run}"


def run_scenario(d, s: Scenario, run: int, out_dir: Path, say: Callable[[str], None] = lambda m: None,
                 probe_names: list[str] | None = None) -> RunReport:
    """Run scenario ``s`` once on deployment ``d`` (see the module docstring); never raises for
    what the cloud does — a failed run has ``verdict`` ≠ "ok" and ``error`` saying why."""
    if s.runner is not None:
        return s.runner(d, s, run, out_dir, say)
    run_id = _run_id(s, run)
    rep = RunReport(scenario=s.name, run=run, run_id=run_id, lab=d.name, tuning=d.tuning, started=time.time(),
                    description=s.description, hold_s=s.hold_s)
    out_dir.mkdir(parents=True, exist_ok=True)
    probes = Probes(d, run_id, probe_names if probe_names is not None else scenario_probes(d, s))
    fault: Fault | None = None
    try:
        statuses = d.status()
        if not_active_units(statuses):
            say("not every unit is active: running stackha's recovery first")
            pre = recover_until_active(d, PRECONDITION_DEADLINE_S, progress=say)
            if pre.seconds is None:
                raise UserError("precondition: units not active before the fault: " + "; ".join(pre.not_active))
        say(f"probes: {', '.join(probes.probes)} from {d.client.name}")
        probes.prepare()
        probes.start()
        probes.wait_warm(WARM_OK)
        time.sleep(BASELINE_S)  # steady traffic before the fault (the timeline's baseline)
        was_on = [h for h in unit_machines(d) if h.is_on()]
        fault = s.fault(d, probes)
        rep.fault = fault.describe()
        say(f"fault: {rep.fault}")
        events: list[FaultEvent] = fault.inject()
        t_fault = events[0].t if events else time.time()
        if s.during is not None:
            during = s.during(d, fault, t_fault + s.hold_s)
            rep.extra["during"] = during
            say(f"during the fault: {'ok' if during.get('ok') else during.get('problem')}")
        # the rest of the fault's duration: the HA mechanisms act on their own meanwhile
        time.sleep(max(0.0, t_fault + s.hold_s - time.time()))
        restored = fault.restore()
        fenced = power_on_fenced(was_on)
        for e in fenced:
            say(f"{e.host}: {e.what}")
        restored += fenced
        events += restored
        t_restore = restored[0].t if restored else time.time()
        events.append(FaultEvent(time.time(), "stackha recovery starts"))
        say("stackha recovery (Deployment.recover) until every unit is active")
        recovery = recover_until_active(d, RECOVERY_DEADLINE_S, progress=say)
        rep.recovery = recovery.to_dict()
        rep.recovery_s = recovery.seconds
        if recovery.seconds is not None:
            events.append(FaultEvent(time.time(), "all units active"))
            rep.fault_to_recovered_s = round(time.time() - t_fault, 2)
        rep.events = [e.to_dict() for e in events]
        time.sleep(POST_S)  # traffic after recovery: the probes must succeed again
        say("stopping probes, draining the queue, reading acknowledged writes back")
        t_stop = time.time()  # the window's end: a probe log ending before it is truncated
        probes.stop()
        data = probes.collect()
        probes.save_logs(out_dir / run_id)
        results = data.results(since=t_fault - BASELINE_S, until=t_stop, fault_at=t_fault)
        rep.probes = {k: v.to_dict() for k, v in results.items()}
        lost_reads = [n for n, ids in data.stored_ids.items() if ids is None]
        if lost_reads:
            rep.extra["unread_final_state"] = lost_reads
        if data.collect_error:
            rep.extra["mysql_collect_error"] = data.collect_error
        if data.torn_lines:
            rep.extra["torn_lines"] = data.torn_lines
        rep.extra["t_fault"] = t_fault
        rep.extra["t_restore"] = t_restore
        rep.extra["t_stop"] = t_stop
        first = {}
        for name, key in (("mysql", "mysql"), ("amqp", "amqp-publish"), ("keystone", "keystone")):
            if data.records.get(key) is not None:
                first[name] = check.first_success_after(check.operations(data.records[key]), t_restore)
        rep.extra["first_success_s"] = first
        rep.expectations = [e.evaluate(results, rep.extra) for e in s.expectations if e.probe in results]
        bad = check.failing(results.values())
        if bad:
            rep.verdict = bad[0].verdict
            rep.error = "; ".join(f"{r.probe}: {r.verdict}" + (f" ({r.lost} acknowledged lost)" if r.lost else "")
                                  for r in bad)
        if recovery.seconds is None:
            rep.error = (rep.error + "; " if rep.error else "") + "not recovered: " + "; ".join(recovery.not_active)
            if rep.verdict == check.VERDICT_OK:
                rep.verdict = "not-recovered"
        if "during" in rep.extra and not rep.extra["during"].get("ok"):
            rep.error = (rep.error + "; " if rep.error else "") + str(rep.extra["during"].get("problem"))
            if rep.verdict == check.VERDICT_OK:
                rep.verdict = "problems"
    except Exception as exc:  # the run fails with the reason; other scenarios still run
        rep.verdict = "error"
        rep.error = str(exc) if isinstance(exc, (UserError, HostError, ProbeError)) else f"{type(exc).__name__}: {exc}"
    finally:
        if fault is not None:
            try:
                fault.restore()
            except Exception as exc:  # pragma: no cover - best effort on the way out
                rep.error = (rep.error + "; " if rep.error else "") + f"restore failed: {exc}"
        if rep.verdict == "error":
            try:
                probes.stop(drain_deadline_s=20)
                probes.save_logs(out_dir / run_id)
            except Exception:
                pass
        probes.cleanup()
    _write(rep, out_dir)
    return rep


def _write(rep: RunReport, out_dir: Path) -> None:
    path = out_dir / f"{rep.run_id}.json"
    png = out_dir / f"{rep.run_id}.png"
    rep.files = {"report": str(path)}
    try:
        from stackha.verify.timeline import plot_timeline

        if plot_timeline(rep, out_dir / rep.run_id, png):
            rep.files["timeline"] = str(png)
    except Exception as exc:  # a missing plot never hides the figures
        rep.extra["timeline_error"] = f"{type(exc).__name__}: {exc}"
    path.write_text(json.dumps(rep.to_dict(), indent=2, default=str))


def run_scenarios(d, names: list[str] | None, runs: int, out_dir: Path,
                  say: Callable[[str], None] = lambda m: None) -> list[RunReport]:
    """Every chosen scenario ``runs`` times (scenario by scenario); the reports in order."""
    if runs < 1 or runs > 20:
        raise UserError(f"--runs {runs}: use 1 to 20")
    reports = []
    for s in applicable(d, names):
        for n in range(1, runs + 1):
            say(f"[{s.name} run {n}/{runs}] {s.description}")
            reports.append(run_scenario(d, s, n, out_dir, lambda m, s=s, n=n: say(f"  {m}")))
    return reports


def summarize(reports: list[RunReport]) -> list[dict]:
    """Per scenario and probe over its runs: median and max of the longest gap (ms), total failed,
    lost, failed-but-committed, duplicates, median recovery (s) and the failing runs."""
    out = []
    by_scn: dict[str, list[RunReport]] = {}
    for r in reports:
        by_scn.setdefault(r.scenario, []).append(r)
    for name, reps in by_scn.items():
        rec = [r.recovery_s for r in reps if r.recovery_s is not None]
        probes = sorted({p for r in reps for p in r.probes})
        for p in probes:
            rows = [r.probes[p] for r in reps if p in r.probes]
            gaps = [x["longest_gap_ms"] for x in rows]
            out.append({
                "scenario": name, "probe": p, "runs": len(rows),
                "median_gap_ms": round(statistics.median(gaps), 1) if gaps else None,
                "max_gap_ms": max(gaps) if gaps else None,
                "failed": sum(x["failed"] for x in rows), "lost": sum(x["lost"] for x in rows),
                "failed_but_committed": sum(x["failed_but_committed"] for x in rows),
                "duplicates": sum(x["duplicates"] for x in rows),
                "median_recovery_s": round(statistics.median(rec), 1) if rec else None,
                "failing_runs": sum(1 for r in reps if r.failed),
            })
        if not probes:
            out.append({"scenario": name, "probe": "-", "runs": len(reps), "median_gap_ms": None, "max_gap_ms": None,
                        "failed": 0, "lost": 0, "failed_but_committed": 0, "duplicates": 0,
                        "median_recovery_s": round(statistics.median(rec), 1) if rec else None,
                        "failing_runs": sum(1 for r in reps if r.failed)})
    return out

# --------------------------------------------------------------------------- Pacemaker (hacluster)
# Verify scenarios of a Pacemaker cluster (the ``hacluster`` operator, issue 7):
#
# - ``pacemaker-vip-node-poweroff`` (:func:`vip_node_poweroff`): power off the node holding the VIP;
#   the VIP and the active/passive service move to another node, the fence history shows the dead
#   node fenced, clients through the VIP see one gap;
# - ``pacemaker-service-kill`` (:func:`service_kill`): ``kill -9`` of a daemon resource (of a clone:
#   its instance on the VIP holder); Pacemaker's monitor notices and restarts it in place (same
#   node, a failcount of 1);
# - ``pacemaker-minority`` (:func:`minority`): power off 2 of 3 nodes; the survivor loses quorum and
#   stops its resources (no-quorum-policy=stop: the VIP leaves it); powering one node back on (and
#   ``recover`` starting its cluster stack) brings quorum back, and with it the VIP; the service
#   behind it returns then, or — when a colocated cluster such as Galera cannot recover with a
#   node still off — once the last node is back.
#
# During each scenario a client host runs an HTTP probe through the VIP (:class:`HttpProbe`: one GET
# per ``interval_s``, each bounded by ``timeout_s``, JSONL records in :mod:`stackha.verify.check`'s
# format, so :func:`~stackha.verify.check.longest_gap` gives the gap), and a sampler thread reads
# every cluster host's addresses (:class:`VipSampler`) to prove the VIP is never on two hosts at once.
# Every loop is bounded in time and count.  Faults go through the Host interface (power_off /
# power_on; kill -9 of the PID in the resource agent's pidfile — never pidof).

PROBE_DIR = "/srv/stackha/pcmk-probe"
PROBE_DAEMON = "pcmk-probe"
PY = "/usr/bin/python3"

#: The client-side HTTP probe (stdlib only; run by Debian's python3 on the client host).
PROBE_SCRIPT = r'''
import json, os, sys, time, urllib.request
with open(sys.argv[1]) as f:
    cfg = json.load(f)
body = cfg.get("body")
data = json.dumps(body).encode() if body is not None else None
headers = {"Content-Type": "application/json"} if data is not None else {}
end = time.monotonic() + cfg["duration_s"]
n = 0
with open(cfg["log"], "a", buffering=1) as f:
    while time.monotonic() < end and n < cfg["max_ops"] and not os.path.exists(cfg["stop_file"]):
        n += 1
        t0 = time.time()
        ok, err, text = False, "", ""
        try:
            req = urllib.request.Request(cfg["url"], data=data, headers=headers, method="POST" if data else "GET")
            with urllib.request.urlopen(req, timeout=cfg["timeout_s"]) as r:
                text = r.read(4096).decode(errors="replace")
                ok = r.status in cfg["expect"]
                if not ok:
                    err = f"HTTP {r.status}"
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"[:200]
        f.write(json.dumps({"probe": "http", "op": cfg["op"], "id": str(n), "start": t0, "end": time.time(),
                            "ok": ok, "error": err, "node": text.strip()[:80] if ok and data is None else ""}) + "\n")
        time.sleep(max(0.0, cfg["interval_s"] - (time.time() - t0)))
'''


class ScenarioError(HostError):
    """A scenario could not run (no single VIP holder, nothing to kill, …)."""


@dataclass
class HttpProbe:
    """GET ``url`` from ``client`` — or POST ``body`` (JSON) when given — every ``interval_s`` (each
    bounded by ``timeout_s``), for at most ``duration_s`` seconds and ``max_ops`` requests, until
    :meth:`stop`.  A request succeeds when the status is in ``expect``.  The configuration (which
    may hold a password, e.g. Keystone's token request) is a 0600 file on the client, never an
    argument."""

    client: Host
    url: str
    duration_s: float = 180.0
    interval_s: float = 0.05
    timeout_s: float = 0.5
    max_ops: int = 20000
    body: dict | None = None
    expect: tuple[int, ...] = (200,)
    name: str = "http"

    @property
    def log(self) -> str:
        return f"{PROBE_DIR}/{self.name}.jsonl"

    @property
    def stop_file(self) -> str:
        return f"{PROBE_DIR}/{self.name}.stop"

    @property
    def daemon(self) -> str:
        return f"{PROBE_DAEMON}-{self.name}"

    def start(self) -> "HttpProbe":
        self.client.run(["mkdir", "-p", PROBE_DIR], check=True)
        self.client.run(["rm", "-f", self.log, self.stop_file], check=True)
        self.client.write_file(f"{PROBE_DIR}/probe.py", PROBE_SCRIPT)
        cfg = {"url": self.url, "duration_s": self.duration_s, "interval_s": self.interval_s,
               "timeout_s": self.timeout_s, "max_ops": self.max_ops, "log": self.log, "stop_file": self.stop_file,
               "body": self.body, "expect": list(self.expect), "op": "post" if self.body is not None else "get"}
        conf = f"{PROBE_DIR}/{self.name}.json"
        self.client.write_file(conf, json.dumps(cfg), mode=0o600)
        if self.client.daemon(self.daemon) is not None:
            self.client.stop(self.daemon, timeout=5)
        self.client.spawn(self.daemon, [PY, f"{PROBE_DIR}/probe.py", conf])
        return self

    def records(self) -> list[dict]:
        recs, _ = parse_jsonl(self.client.read_file(self.log))
        return operations(recs)

    def successes_after(self, t: float) -> int:
        return sum(1 for r in self.records() if r.get("ok") and r["start"] >= t)

    def stop(self) -> list[dict]:
        """Stop the probe (stop file, then SIGTERM after 5 s) and return its records."""
        self.client.write_file(self.stop_file, "stop\n")
        with contextlib.suppress(WaitTimeout):
            wait_until(lambda: self.client.daemon(self.daemon) is None, 5, 0.05, what="HTTP probe exited")
        if self.client.daemon(self.daemon) is not None:
            self.client.stop(self.daemon, timeout=2)
        return self.records()


class VipSampler(threading.Thread):
    """Reads every host's addresses every ``interval_s`` (at most ``max_samples`` times) and records
    which hosts carry ``vip``.  ``max_holders`` is the most hosts seen holding it at once;
    ``changes`` the timeline ``[(wall time, [holders])]`` at each change."""

    def __init__(self, hosts: list[Host], vip, interval_s: float = 0.05, max_samples: int = 20000):
        super().__init__(daemon=True)
        self.hosts, self.vip, self.interval_s, self.max_samples = hosts, vip, interval_s, max_samples
        self.max_holders = 0
        self.samples = 0
        self.changes: list[tuple[float, list[str]]] = []
        self.errors = 0
        self._halt = threading.Event()

    def holders(self) -> list[str]:
        out = []
        for h in self.hosts:
            try:
                if any(a.ip == self.vip for a in h.addresses()):
                    out.append(h.name)
            except Exception:  # a host being powered off mid-read
                self.errors += 1
        return out

    def run(self) -> None:
        while not self._halt.is_set() and self.samples < self.max_samples:
            now = self.holders()
            self.samples += 1
            self.max_holders = max(self.max_holders, len(now))
            if not self.changes or self.changes[-1][1] != now:
                self.changes.append((time.time(), now))
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


@dataclass
class ScenarioResult:
    """What a scenario measured.  ``ok``: every expectation held (``problems`` lists the others);
    ``gap_ms``: longest gap between successful probe requests (``gap_open``: it ran to the end);
    ``ops``/``failed``: probe requests; ``max_vip_holders``: most hosts holding the VIP at once;
    ``timeline``: ``[(seconds after the fault, event)]``; ``facts``: scenario-specific figures."""

    name: str
    ok: bool = False
    gap_ms: float = 0.0
    gap_open: bool = False
    ops: int = 0
    failed: int = 0
    max_vip_holders: int = 0
    problems: list[str] = field(default_factory=list)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list, repr=False)  # the probe's operations
    t_fault: float | None = None  # wall time of the fault (the timeline's 0)
    t_stop: float | None = None  # wall time the probe was stopped (the window's end)


def _wait(pred: Callable[[], Any], deadline_s: float, interval_s: float = 0.1) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        v = pred()
        if v or time.monotonic() > end:
            return v
        time.sleep(interval_s)


def _fence_time(completed: str) -> float | None:
    try:
        return datetime.strptime(completed, "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def _finish(res: ScenarioResult, records: list[dict], sampler: VipSampler, t0: float) -> ScenarioResult:
    gap = longest_gap(records)
    res.records, res.t_fault, res.t_stop = records, t0, time.time()  # called right after probe.stop()
    res.gap_ms, res.gap_open = round(gap.ms, 1), gap.open
    res.ops, res.failed = len(records), sum(1 for r in records if not r.get("ok"))
    res.max_vip_holders = sampler.max_holders
    res.timeline += [(round(t - t0, 3), f"VIP on {', '.join(h) or 'no host'}") for t, h in sampler.changes]
    res.timeline.sort()
    if sampler.max_holders > 1:
        res.problems.append(f"the VIP was on {sampler.max_holders} hosts at once")
    if gap.start is not None:
        res.facts["gap_from_s"] = round(gap.start - t0, 3)
        res.facts["gap_to_s"] = round(gap.end - t0, 3)
    res.ok = not res.problems
    return res


def _restore(op: HAClusterOperator, app: AppContext, hosts: list[Host], deadline_s: float) -> list[str]:
    for h in hosts:
        h.power_on()
    changes = op.recover(app)
    _wait(lambda: all(u.state == WorkloadState.ACTIVE for u in op.observe(app).units), deadline_s, 0.5)
    return changes


def _start_probe(client: Host, url: "str | HttpProbe") -> HttpProbe:
    """Start ``url``'s probe: a GET probe for a URL, or the given (not yet started) HttpProbe."""
    probe = url if isinstance(url, HttpProbe) else HttpProbe(client, url)
    return probe.start()


def keystone_token_probe(client: Host, auth_url: str, password: str, *, user: str = "admin",
                         project: str = "admin", name: str = "token") -> HttpProbe:
    """A probe issuing a Keystone token per request (POST ``<auth_url>/auth/tokens``, password
    method, project scope; success = 201), as ``openstack token issue`` does."""
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
    return HttpProbe(client, auth_url.rstrip("/") + "/auth/tokens", body=body, expect=(201,), timeout_s=10.0,
                     interval_s=0.05, name=name)


def vip_poweroff_gap(hosts: list[Host], vip, client: Host, probe: "str | HttpProbe", *,
                     deadline_s: float = 60.0) -> ScenarioResult:
    """Provider-agnostic: power off whichever of ``hosts`` holds ``vip`` (an address) while
    ``probe`` runs from ``client``; returns the gap once the VIP is on one other host and the probe
    succeeds again.  Used to compare keepalived's VIP with Pacemaker's in the same run.  The host
    stays off (the caller restores it).  Facts: ``victim``, ``new_holder``, ``vip_moved_s``,
    ``service_back_s``."""
    res = ScenarioResult("vip-holder-poweroff")
    sampler = VipSampler(hosts, vip)
    holders = sampler.holders()
    if len(holders) != 1:
        raise ScenarioError(f"expected one holder of {vip}, found {holders or 'none'}")
    victim = next(h for h in hosts if h.name == holders[0])
    probe = _start_probe(client, probe)
    sampler.start()
    t0 = time.time()
    try:
        _warm_up(probe)
        t0 = time.time()
        victim.power_off()
        res.timeline.append((0.0, f"power off {victim.name}"))
        res.facts["victim"] = victim.name
        new = _wait(lambda: (lambda h: h if len(h) == 1 and h[0] != victim.name else None)(sampler.holders()),
                    deadline_s, 0.05)
        if new:
            res.facts.update(new_holder=new[0], vip_moved_s=round(time.time() - t0, 2))
        else:
            res.problems.append(f"the VIP did not move within {deadline_s:.0f} s")
        back = _wait(lambda: back_after(probe.records(), t0), deadline_s, 0.05)
        if back:
            res.facts["service_back_s"] = round(back - t0, 2)
        else:
            res.problems.append(f"no success through the VIP within {deadline_s:.0f} s")
        time.sleep(1.0)
    finally:
        records = probe.stop()
        sampler.stop()
    return _finish(res, records, sampler, t0)


def back_after(records: list[dict], t0: float) -> float | None:
    """When the service answered again after a fault at ``t0`` (wall s): the end of the first
    success that follows the first failure after ``t0`` (or of the first success after ``t0`` when
    nothing failed).  None when it never did."""
    failed = [r["end"] for r in records if not r.get("ok") and r["end"] >= t0]
    since = min(failed) if failed else t0
    ok = [r["end"] for r in records if r.get("ok") and r["end"] > since]
    return min(ok) if ok else None


def _warm_up(probe: HttpProbe, deadline_s: float = 30.0, successes: int = 2) -> None:
    """Wait for ``successes`` successful requests (the service answers before the fault)."""
    t = time.time() - 60
    if not _wait(lambda: probe.successes_after(t) >= successes, deadline_s, 0.1):
        recs = probe.stop()
        last = recs[-1].get("error") if recs else "no request made"
        raise ScenarioError(f"the service does not answer through {probe.url} before the fault: {last}")


def vip_node_poweroff(app: AppContext, client: Host, url: "str | HttpProbe", *, deadline_s: float = 60.0,
                      restore: bool = True) -> ScenarioResult:
    """``pacemaker-vip-node-poweroff``: power off the VIP holder; expect the VIP and service on one
    other node, a successful fence of the dead node in the fence history, HTTP back through the VIP.

    Facts: ``victim``, ``new_holder``, ``vip_moved_s`` / ``service_back_s`` (after the power-off),
    ``fence`` (the fence event), ``fenced_after_s`` (second resolution: Pacemaker's timestamps).
    ``restore``: power the node on again and run ``recover`` afterwards.  Raises
    :class:`ScenarioError` without a single VIP holder or an answering service."""
    app = with_vip(app)
    op = HAClusterOperator()
    res = ScenarioResult("pacemaker-vip-node-poweroff")
    holders = op.vip_holders(app)
    if len(holders) != 1:
        raise ScenarioError(f"{app.name}: expected one VIP holder before the fault, found {holders or 'none'}")
    victim = next(u.host for u in app.units if u.host.name == holders[0])
    hosts = [u.host for u in app.units]
    probe = _start_probe(client, url)
    sampler = VipSampler(hosts, app.vip.ip)
    sampler.start()
    try:
        _warm_up(probe)
        t0 = time.time()
        took = victim.power_off()
        res.timeline.append((0.0, f"power off {victim.name} ({took * 1000:.0f} ms)"))
        res.facts["victim"] = victim.name

        def moved():
            now = op.vip_holders(app)
            return now if len(now) == 1 and now[0] != victim.name else None

        new = _wait(moved, deadline_s, 0.05)
        if not new:
            res.problems.append(f"the VIP did not move within {deadline_s:.0f} s")
        else:
            res.facts["new_holder"] = new[0]
            res.facts["vip_moved_s"] = round(time.time() - t0, 2)
        back = _wait(lambda: back_after(probe.records(), t0), deadline_s, 0.05)
        if back:
            res.facts["service_back_s"] = round(back - t0, 2)
        else:
            res.problems.append(f"the service did not answer through the VIP within {deadline_s:.0f} s")

        def fenced():
            st = op.observe(app)
            for ev in st.facts.get("fence_history", []):
                when = _fence_time(ev.get("completed", ""))
                if ev.get("target") == node_name_of(app, victim) and ev.get("status") == "success" \
                        and when is not None and when >= int(t0):
                    return ev
            return None

        ev = _wait(fenced, deadline_s, 0.5)
        if ev:
            res.facts["fence"] = ev
            res.facts["fenced_after_s"] = round(_fence_time(ev["completed"]) - t0, 0)
            res.timeline.append((res.facts["fenced_after_s"], f"fenced {victim.name} ({ev['action']} by {ev['delegate']})"))
        else:
            res.problems.append(f"no successful fence of {victim.name} in the fence history")
        time.sleep(1.0)  # a second of steady service after recovery in the record
    finally:
        records = probe.stop()
        sampler.stop()
    _finish(res, records, sampler, t0)
    if restore:
        res.facts["restore"] = _restore(op, app, [victim], deadline_s * 2)
    return res


def node_name_of(app: AppContext, host: Host) -> str:
    """The cluster node name of ``host`` (a unit's host)."""
    return next(node_name(u) for u in app.units if u.host.name == host.name)


def service_kill(app: AppContext, client: Host, url: "str | HttpProbe", resource: str, *, deadline_s: float = 60.0,
                 node: str | None = None) -> ScenarioResult:
    """``pacemaker-service-kill``: ``kill -9`` of daemon resource ``resource`` on one node; expect
    a restart in place (same node, new PID) within the monitor interval + restart, and a failcount.
    A primitive is killed where it runs; one instance of a clone (running on several nodes) is
    killed on ``node`` (a cluster node name, e.g. the VIP holder's: the instance clients use).

    A failcount left by an earlier kill is cleared first (``crm_resource --cleanup``): with it, a
    kill could reach ``migration_threshold`` and Pacemaker would move the resource instead (seen
    on the third of three runs 9 s apart, under stackha's tuning: threshold 3, failure-timeout 60 s).

    Facts: ``node``, ``old_pid``, ``new_pid``, ``restarted_after_s``, ``same_node``, ``failcount``,
    ``failcount_cleared`` (the count cleared before the kill, if any).
    Raises :class:`ScenarioError` when the resource runs on no node, or on several and ``node`` is
    not one of them, or an old failcount does not clear."""
    app = with_vip(app)
    op = HAClusterOperator()
    res = ScenarioResult("pacemaker-service-kill")
    st = op.observe(app)
    running = st.facts["resources"].get(resource) or []
    target = node if node is not None else (running[0] if len(running) == 1 else None)
    if target is None or target not in running:
        raise ScenarioError(f"{app.name}: resource {resource} runs on {running or 'no node'}; "
                            f"expected one node{f' or {node}' if node else ''}")
    unit = next(u for u in app.units if node_name(u) == target)

    def failcount(view) -> int:
        return sum(int(f["count"]) for f in view.facts["failcounts"] if f["resource"] == resource and f["node"] == target)

    before = failcount(st)
    if before:
        # an earlier kill (the run before, within failure_timeout) still counts: one more could
        # reach migration_threshold (3 under stackha's tuning), and Pacemaker would move the
        # resource away instead of restarting it — a different scenario.  Start from zero.
        unit.host.run(["crm_resource", "--cleanup", "--resource", resource, "--node", target], check=True, timeout=30)
        # the cleanup re-probes the resource; a kill that meets that probe is "not running" to it
        # (no failure, no failcount: seen once).  Let the cluster settle first
        unit.host.run(["crm_resource", "--wait", f"--timeout={int(deadline_s)}s"], timeout=deadline_s + 10)
        if not _wait(lambda: failcount(op.observe(app)) == 0 and op.daemon_pid(app, unit, resource), deadline_s, 0.5):
            raise ScenarioError(f"{app.name}: failcount {before} of {resource} on {target} did not clear")
        res.facts["failcount_cleared"] = before
    pid = op.daemon_pid(app, unit, resource)
    if pid is None:
        raise ScenarioError(f"{unit.name}: no pidfile for {resource}")
    hosts = [u.host for u in app.units]
    probe = _start_probe(client, url)
    sampler = VipSampler(hosts, app.vip.ip) if app.vip else VipSampler([], None)
    sampler.start()
    try:
        _warm_up(probe)
        t0 = time.time()
        unit.host.run(["kill", "-9", str(pid)], check=True)
        res.timeline.append((0.0, f"kill -9 {resource} (pid {pid}) on {unit.host.name}"))
        res.facts.update(node=unit.host.name, old_pid=pid)

        def restarted():
            new = op.daemon_pid(app, unit, resource)
            if new is None or new == pid:
                return None
            r = unit.host.run(["kill", "-0", str(new)])
            return new if r.ok else None

        new = _wait(restarted, deadline_s, 0.05)
        if new:
            res.facts["new_pid"] = new
            res.facts["restarted_after_s"] = round(time.time() - t0, 2)
            res.timeline.append((res.facts["restarted_after_s"], f"{resource} running again (pid {new})"))
        else:
            res.problems.append(f"{resource} was not restarted within {deadline_s:.0f} s")
        t_new = time.time()
        if not _wait(lambda: probe.successes_after(t_new) > 0, deadline_s, 0.1):
            res.problems.append("the service did not answer through the VIP again")
        after = op.observe(app)
        now_on = after.facts["resources"].get(resource) or []
        res.facts["same_node"] = target in now_on
        if target not in now_on:
            res.problems.append(f"{resource} left {target} (now on {now_on}): expected a restart in place")
        res.facts["failcount"] = failcount(after)
        if not res.facts["failcount"]:
            res.problems.append(f"no failcount recorded for {resource} on {target}")
        time.sleep(1.0)
    finally:
        records = probe.stop()
        sampler.stop()
    return _finish(res, records, sampler, t0)


def minority(app: AppContext, client: Host, url: "str | HttpProbe", *, deadline_s: float = 90.0, restore: bool = True,
             recover_all: Callable[[], dict[str, list[str]]] | None = None) -> ScenarioResult:
    """``pacemaker-minority``: power off every node but the VIP holder (2 of 3); expect the survivor
    to lose quorum and stop its resources (the VIP leaves it: no host holds it); then power one node
    back on and ``recover`` it: quorum returns and Pacemaker starts the VIP again on one host.

    The service behind the VIP may need more than Pacemaker's quorum: ``recover_all`` (the whole
    deployment's recovery, e.g. :meth:`Deployment.recover`) runs after the first power-on, and when
    it reports an application it could not recover (``"recover failed: …"``) — on
    examples/lab-keystone-pacemaker.yaml Galera shares the three machines, lost its majority too,
    and will not bootstrap while a node's position cannot be read — the last node is powered on and
    ``recover_all`` runs again before the service is expected back (Galera's rule: its docs,
    "Restarting the cluster"; stackha's GaleraOperator refuses to guess).  Without ``recover_all``
    (or when it recovered everything) the service must answer once quorum is back.

    Facts: ``survivor``, ``stopped_after_s`` (VIP gone, after the power-off), ``returned``,
    ``vip_back_s`` (after the power-on), ``service_waited_for`` (what kept the service down after
    quorum returned, when anything did), ``service_back_s`` (after the power-on that let it return),
    ``survivor_state`` (its unit status while alone).
    Needs ≥ 3 nodes; raises :class:`ScenarioError` otherwise or without a single VIP holder."""
    app = with_vip(app)
    op = HAClusterOperator()
    res = ScenarioResult("pacemaker-minority")
    if len(app.units) < 3:
        raise ScenarioError(f"{app.name}: the minority scenario needs ≥ 3 nodes")
    holders = op.vip_holders(app)
    if len(holders) != 1:
        raise ScenarioError(f"{app.name}: expected one VIP holder before the fault, found {holders or 'none'}")
    survivor = next(u for u in app.units if u.host.name == holders[0])
    others = [u.host for u in app.units if u is not survivor]
    hosts = [u.host for u in app.units]
    probe = _start_probe(client, url)
    sampler = VipSampler(hosts, app.vip.ip)
    sampler.start()
    still_off = others[1:]
    try:
        _warm_up(probe)
        t0 = time.time()
        for h in others:
            h.power_off()
        res.timeline.append((round(time.time() - t0, 3), f"powered off {', '.join(h.name for h in others)}"))
        res.facts["survivor"] = survivor.host.name
        if _wait(lambda: not op.vip_holders(app), deadline_s, 0.05):
            res.facts["stopped_after_s"] = round(time.time() - t0, 2)
        else:
            res.problems.append(f"the survivor {survivor.host.name} kept the VIP for {deadline_s:.0f} s without quorum")
        st = op.observe(app)
        us = next(u for u in st.units if u.unit == survivor.name)
        res.facts["survivor_state"] = f"{us.state.value}: {us.message}"
        if us.state != WorkloadState.BLOCKED or "quorum" not in us.message:
            res.problems.append(f"survivor status is {us.state.value} ({us.message}), expected blocked without quorum")
        if st.facts["resources"].get("vip"):
            res.problems.append(f"the VIP resource still runs on {st.facts['resources']['vip']}")
        time.sleep(2.0)  # stays stopped
        if op.vip_holders(app):
            res.problems.append("the VIP came back without quorum")
        t1 = time.time()
        others[0].power_on()
        res.timeline.append((round(t1 - t0, 3), f"powered on {others[0].name}"))
        res.facts["returned"] = others[0].name
        res.facts["recover"] = op.recover(app)
        if _wait(lambda: len(op.vip_holders(app)) == 1, deadline_s, 0.1):
            res.facts["vip_back_s"] = round(time.time() - t1, 2)
        else:
            res.problems.append(f"the VIP did not return within {deadline_s:.0f} s of quorum returning")
        t_back = t1
        if recover_all is not None:
            done = recover_all()
            failed = {a: m for a, acts in done.items() for m in acts if m.startswith("recover failed")}
            if failed:
                res.facts["service_waited_for"] = failed
                t_back = time.time()
                for h in still_off:
                    h.power_on()
                res.timeline.append((round(t_back - t0, 3), f"powered on {', '.join(h.name for h in still_off)} "
                                                            f"({', '.join(failed)} could not recover without it)"))
                still_off = []
                op.recover(app)
                recover_all()
        if _wait(lambda: probe.successes_after(t_back) > 0, deadline_s, 0.1):
            first = min(r["end"] for r in probe.records() if r.get("ok") and r["start"] >= t_back)
            res.facts["service_back_s"] = round(first - t_back, 2)
            res.timeline.append((round(first - t0, 3), "service answers through the VIP again"))
        else:
            res.problems.append(f"the service did not return within {deadline_s:.0f} s of "
                                + ("every node returning" if t_back != t1 else "quorum returning"))
        time.sleep(1.0)
    finally:
        records = probe.stop()
        sampler.stop()
    _finish(res, records, sampler, t0)
    if restore:
        res.facts["restore"] = _restore(op, app, still_off, deadline_s)
    return res


#: Scenario name → flow function (``stackha verify`` runs them through :func:`_pacemaker_runner`).
PACEMAKER_FLOWS = {
    "pacemaker-vip-node-poweroff": vip_node_poweroff,
    "pacemaker-service-kill": service_kill,
    "pacemaker-minority": minority,
}


def _pacemaker_probe(d, ha: AppContext) -> HttpProbe:
    """The client probe through the Pacemaker VIP of ``ha``'s principal: a Keystone token request
    for keystone (success = 201), else a GET of ``http://VIP:<first frontend port>/``."""
    from stackha.services import operator_for
    from stackha.services.pacemaker import principal

    p = principal(ha)
    vip = with_vip(ha).vip
    if p is None or vip is None:
        raise ScenarioError(f"{ha.name}: no principal with a VIP to probe")
    if p.kind == "keystone":
        op = operator_for("keystone")
        return keystone_token_probe(d.client, f"http://{vip.ip}:5000/v3", op.admin_password(p), name="pcmk")
    ports = [f.port for f in (p.frontends or ())]
    if not ports:
        raise ScenarioError(f"{ha.name}: no client probe for {p.kind} behind Pacemaker (no frontend port)")
    return HttpProbe(d.client, f"http://{vip.ip}:{ports[0]}/", name="pcmk")


def _pacemaker_runner(flow: str) -> Callable[..., "RunReport"]:
    """A :attr:`Scenario.runner` for Pacemaker flow ``flow`` (:data:`PACEMAKER_FLOWS`): it runs the
    flow on the deployment's hacluster application with the client probe of
    :func:`_pacemaker_probe`, then stackha's recovery until every unit is active, and reports
    like every other scenario (:class:`RunReport`: the probe's figures from
    :func:`~stackha.verify.check.check_calls`, the flow's facts in ``extra``).  A flow problem (the
    VIP on two hosts, no fence, a survivor serving without quorum …) fails the run."""

    def run(d, s: "Scenario", run_no: int, out_dir: Path, say: Callable[[str], None]) -> "RunReport":
        rep = RunReport(scenario=s.name, run=run_no, run_id=_run_id(s, run_no), lab=d.name, tuning=d.tuning,
                        started=time.time(), description=s.description, hold_s=s.hold_s)
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            ha = _ctx(d, "hacluster")
            args: tuple = ()
            kwargs: dict = {}
            if flow == "pacemaker-service-kill":
                st = HAClusterOperator().observe(with_vip(ha))
                # daemon resources only: not the VIP, not a fence device ("fence-<node>", an id
                # no daemon resource may take) — killing a fence device's "daemon" measures nothing
                daemons = {r: where or [] for r, where in sorted(st.facts.get("resources", {}).items())
                           if r != "vip" and not r.startswith("fence-")}
                single = [r for r, where in daemons.items() if len(where) == 1]
                if single:
                    args = (single[0],)
                else:
                    # only clones (HAProxy on every node, as charm-hacluster runs it): kill the
                    # instance on the VIP holder, the one the clients' requests go through
                    holders = HAClusterOperator().vip_holders(ha)
                    nodes = [node_name(u) for u in ha.units if u.host.name in holders]
                    clones = [r for r, where in daemons.items() if nodes and nodes[0] in where]
                    if len(nodes) != 1 or not clones:
                        raise ScenarioError(f"{ha.name}: no daemon resource runs on exactly one node or on the "
                                            f"VIP holder (resources: {st.facts.get('resources')}, VIP on {holders})")
                    args = (clones[0],)
                    kwargs = {"node": nodes[0]}
            say(f"{flow} on {ha.name}")
            if flow == "pacemaker-minority":
                kwargs = {"recover_all": d.recover}
            res = PACEMAKER_FLOWS[flow](ha, d.client, _pacemaker_probe(d, ha), *args, **kwargs)
            rep.fault = next((e for t, e in res.timeline if t >= 0 and not e.startswith("VIP on")), flow)
            result = check.check_calls("http", res.records, since=(res.t_fault or 0) - BASELINE_S, until=res.t_stop,
                                       fault_at=res.t_fault)
            rep.probes = {"http": result.to_dict()}
            rep.extra = {"facts": res.facts, "timeline": res.timeline, "max_vip_holders": res.max_vip_holders,
                         "t_fault": res.t_fault}
            say("stackha recovery (Deployment.recover) until every unit is active")
            recovery = recover_until_active(d, RECOVERY_DEADLINE_S, progress=say)
            rep.recovery, rep.recovery_s = recovery.to_dict(), recovery.seconds
            bad = check.failing([result])
            problems = list(res.problems) + [f"http: {r.verdict}" for r in bad]
            if recovery.seconds is None:
                problems.append("not recovered: " + "; ".join(recovery.not_active))
            if problems:
                rep.verdict = bad[0].verdict if bad else "problems"
                rep.error = "; ".join(problems)
        except Exception as exc:  # the run fails with the reason; other scenarios still run
            rep.verdict = "error"
            rep.error = str(exc) if isinstance(exc, (UserError, HostError)) else f"{type(exc).__name__}: {exc}"
        path = out_dir / f"{rep.run_id}.json"
        rep.files = {"report": str(path)}
        path.write_text(json.dumps(rep.to_dict(), indent=2, default=str))
        return rep

    return run


SCENARIOS.update({s.name: s for s in (
    Scenario("pacemaker-vip-node-poweroff", "power off the Pacemaker node holding the VIP (fenced, VIP moves)",
             lambda d, p: None, 0.0, (), ("hacluster",), runner=_pacemaker_runner("pacemaker-vip-node-poweroff")),
    Scenario("pacemaker-service-kill", "kill -9 a Pacemaker daemon resource (restarted in place)",
             lambda d, p: None, 0.0, (), ("hacluster",), runner=_pacemaker_runner("pacemaker-service-kill")),
    Scenario("pacemaker-minority", "power off 2 of 3 Pacemaker nodes (the survivor stops), then 1 back on",
             lambda d, p: None, 0.0, (), ("hacluster",), runner=_pacemaker_runner("pacemaker-minority")),
)})


from stackha.verify.instanceha import runner as _instance_ha_runner  # noqa: E402  (imports this module lazily)

_IH_NEEDS = ("masakari", "nova-compute")
SCENARIOS.update({s.name: s for s in (
    Scenario("instance-ha-compute-poweroff", "power off a compute host running HA_Enabled servers: stackha fences, "
             "forces down, notifies; Masakari evacuates", lambda d, p: None, 0.0, (), _IH_NEEDS,
             runner=_instance_ha_runner("poweroff")),
    Scenario("instance-ha-compute-partition", "cut a compute host running HA_Enabled servers off the network (alive): "
             "fenced before any evacuation", lambda d, p: None, 0.0, (), _IH_NEEDS,
             runner=_instance_ha_runner("partition")),
    Scenario("instance-ha-engine-kill", "power off a compute host running HA_Enabled servers, then kill -9 the "
             "masakari-engine running its notification: stackha restarts the engine and re-runs it",
             lambda d, p: None, 0.0, (), _IH_NEEDS, runner=_instance_ha_runner("engine-kill")),
    Scenario("instance-ha-controller-poweroff", "power off a compute host running HA_Enabled servers, then power off "
             "the controller whose masakari-engine runs its notification: re-run on another engine",
             lambda d, p: None, 0.0, (), _IH_NEEDS, runner=_instance_ha_runner("controller-poweroff")),
)})

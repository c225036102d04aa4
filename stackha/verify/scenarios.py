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

Expectations are the targets of issue 6 for stackha's tuning (VIP failover gap ≤ 1 s, Galera
writer loss ≤ 2 s, RabbitMQ node loss ≤ 2 s confirm gap, Keystone controller loss 0 failed
requests, token issue ≤ 60 s after a cold start): they are reported as met or missed.  Only the
checker's verdicts (an acknowledged operation lost, a final state that could not be read, a probe
that never succeeded) fail a run.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from stackha.errors import UserError
from stackha.hosts.base import Host, HostError
from stackha.verify import check
from stackha.verify.faults import (
    Fault,
    FaultEvent,
    KillDaemon,
    LinkFlap,
    Partition,
    PowerOff,
    cold_start,
    not_active_units,
    recover_until_active,
)
from stackha.verify.probes import ProbeError, Probes

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


def controllers(d) -> list[Host]:
    """The machines of every unit that is not a load balancer (Galera, RabbitMQ, Keystone …)."""
    out: list[Host] = []
    for c in d.contexts().values():
        if c.kind in LB_KINDS:
            continue
        for u in c.units:
            m = machine_of(d, u.host)
            if m not in out:
                out.append(m)
    return out


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
             (Expectation("keystone", "failed", 0, "Keystone controller loss: 0 failed requests"),),
             ("galera",)),
    Scenario("rabbit-node-kill", "kill -9 the RabbitMQ node leading the probe's quorum queue",
             _kill("rabbitmq", rabbit_leader), 10.0,
             (Expectation("amqp", "longest_gap_ms", 2000, "RabbitMQ node loss: confirm gap ≤ 2.0 s"),),
             ("rabbitmq",)),
    Scenario("partition-controller", "cut the writer's controller off the network, heal after 20 s",
             lambda d, p: Partition(machine_of(d, galera_writer(d, p))), 20.0,
             (Expectation("mysql", "longest_gap_ms", 2000, "writer partitioned: write gap ≤ 2.0 s"),),
             ("galera",)),
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

#: The scenarios the failover benchmark compares (bench/failover.py).
KEY_SCENARIOS = ("lb-master-poweroff", "galera-writer-kill", "rabbit-node-kill", "controller-poweroff",
                 "cold-start")


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
        fault = s.fault(d, probes)
        rep.fault = fault.describe()
        say(f"fault: {rep.fault}")
        events: list[FaultEvent] = fault.inject()
        t_fault = events[0].t if events else time.time()
        time.sleep(s.hold_s)  # the fault's duration: the HA mechanisms act on their own meanwhile
        restored = fault.restore()
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

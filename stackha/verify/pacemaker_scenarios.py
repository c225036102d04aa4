"""Verify scenarios of a Pacemaker cluster (the ``hacluster`` operator, issue 7):

- ``pacemaker-vip-node-poweroff`` (:func:`vip_node_poweroff`): power off the node holding the VIP;
  the VIP and the active/passive service move to another node, the fence history shows the dead
  node fenced, clients through the VIP see one gap;
- ``pacemaker-service-kill`` (:func:`service_kill`): ``kill -9`` of a daemon resource; Pacemaker's
  monitor notices and restarts it in place (same node, a failcount of 1);
- ``pacemaker-minority`` (:func:`minority`): power off 2 of 3 nodes; the survivor loses quorum and
  stops its resources (no-quorum-policy=stop: the VIP leaves it); powering one node back on (and
  ``recover`` starting its cluster stack) brings quorum back, and with it the service.

During each scenario a client host runs an HTTP probe through the VIP (:class:`HttpProbe`: one GET
per ``interval_s``, each bounded by ``timeout_s``, JSONL records in :mod:`stackha.verify.check`'s
format, so :func:`~stackha.verify.check.longest_gap` gives the gap), and a sampler thread reads
every cluster host's addresses (:class:`VipSampler`) to prove the VIP is never on two hosts at once.
Every loop is bounded in time and count.  Faults go through the Host interface (power_off /
power_on; kill -9 of the PID in the resource agent's pidfile — never pidof).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from stackha.hosts.base import Host, HostError
from stackha.services.base import AppContext, WorkloadState
from stackha.services.pacemaker import HAClusterOperator, node_name, with_vip
from stackha.verify.check import longest_gap, operations, parse_jsonl

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
        end = time.monotonic() + 5
        while self.client.daemon(self.daemon) is not None and time.monotonic() < end:
            time.sleep(0.05)
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


def service_kill(app: AppContext, client: Host, url: "str | HttpProbe", resource: str, *, deadline_s: float = 60.0) -> ScenarioResult:
    """``pacemaker-service-kill``: ``kill -9`` of daemon resource ``resource`` where it runs; expect
    a restart in place (same node, new PID) within the monitor interval + restart, and a failcount.

    Facts: ``node``, ``old_pid``, ``new_pid``, ``restarted_after_s``, ``same_node``, ``failcount``.
    Raises :class:`ScenarioError` when the resource runs on no single node."""
    app = with_vip(app)
    op = HAClusterOperator()
    res = ScenarioResult("pacemaker-service-kill")
    st = op.observe(app)
    where = st.facts["resources"].get(resource) or []
    if len(where) != 1:
        raise ScenarioError(f"{app.name}: resource {resource} runs on {where or 'no node'}; expected one node")
    unit = next(u for u in app.units if node_name(u) == where[0])
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
        res.facts["same_node"] = now_on == where
        if now_on != where:
            res.problems.append(f"{resource} moved from {where} to {now_on}: expected a restart in place")
        fcs = [f["count"] for f in after.facts["failcounts"] if f["resource"] == resource and f["node"] == where[0]]
        res.facts["failcount"] = fcs[0] if fcs else 0
        if not fcs:
            res.problems.append(f"no failcount recorded for {resource} on {where[0]}")
        time.sleep(1.0)
    finally:
        records = probe.stop()
        sampler.stop()
    return _finish(res, records, sampler, t0)


def minority(app: AppContext, client: Host, url: "str | HttpProbe", *, deadline_s: float = 90.0, restore: bool = True) -> ScenarioResult:
    """``pacemaker-minority``: power off every node but the VIP holder (2 of 3); expect the survivor
    to lose quorum and stop its resources (the VIP leaves it: no host holds it); then power one node
    back on and ``recover`` it: quorum and the service return.

    Facts: ``survivor``, ``stopped_after_s`` (VIP gone, after the power-off), ``returned``,
    ``service_back_s`` (after the power-on), ``survivor_state`` (its unit status while alone).
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
        if _wait(lambda: probe.successes_after(t1) > 0, deadline_s, 0.1):
            first = min(r["end"] for r in probe.records() if r.get("ok") and r["start"] >= t1)
            res.facts["service_back_s"] = round(first - t1, 2)
            res.timeline.append((round(first - t0, 3), "service answers through the VIP again"))
        else:
            res.problems.append(f"the service did not return within {deadline_s:.0f} s of quorum returning")
        time.sleep(1.0)
    finally:
        records = probe.stop()
        sampler.stop()
    _finish(res, records, sampler, t0)
    if restore:
        res.facts["restore"] = _restore(op, app, others[1:], deadline_s)
    return res


#: Scenario name → function (``stackha verify`` may list these).
SCENARIOS = {
    "pacemaker-vip-node-poweroff": vip_node_poweroff,
    "pacemaker-service-kill": service_kill,
    "pacemaker-minority": minority,
}

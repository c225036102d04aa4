"""Probes: the agent (:mod:`stackha.verify.agent`) run on the lab's client host during a fault.

The root namespace cannot reach lab addresses, so every probe runs ON the client host (never part
of the cloud): :class:`Probes` writes the agent script and one config per probe there
(``/srv/stackha/verify/``; configs hold passwords: mode 0600, removed by :meth:`Probes.cleanup`),
starts one daemon per probe with the venv's interpreter (``sys.executable``: the venv's path is
visible inside lab hosts), and reads their JSONL logs back with ``client.read_file``.

Probes and what they are given (from the operators, never printed):

- ``mysql``: the Galera application's generic client user (``GaleraOperator.client_credentials``)
  and its database, through the VIP ``galera.vip``:3306;
- ``amqp``: publisher + consumer with RabbitMQ's client user and every broker of the
  transport_url (``RabbitMQOperator.transport_url``), a quorum queue per run;
- ``keystone``: the bootstrap admin (``KeystoneOperator.admin_password``) on the public URL on the
  VIP (``KeystoneOperator.public_url``);
- ``swift``, ``nova``, ``glance``, ``neutron``: the same admin; each takes its service's public
  endpoint on the VIP from the catalog.  ``swift`` writes into a container of its own per run;
  ``nova``, ``glance`` and ``neutron`` use :func:`stackha.verify.fixtures.compute_fixtures` (an
  image, a flavor, a network), made once per deployment.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from stackha.errors import UserError
from stackha.polling import WaitTimeout, wait_until
from stackha.verify import check

AGENT_SOURCE = Path(__file__).with_name("agent.py")
BASE = "/srv/stackha/verify"
AGENT_PATH = f"{BASE}/agent.py"
PROBES = ("mysql", "amqp", "keystone", "swift", "nova", "glance", "neutron")

#: Seconds between operation starts, per probe: 50 ms resolution for the write gaps; token
#: issue costs Keystone real CPU (two cores for the whole lab), so it runs 4 per second.
INTERVALS = {"mysql": 0.05, "amqp": 0.05, "keystone": 0.25, "swift": 0.2, "nova": 2.0, "glance": 0.5,
             "neutron": 0.5}
#: Seconds one operation may take before it counts as failed.  A Galera commit stalls up to
#: evs.suspect_timeout during a view change (LAB-NOTES: 3.3 s tuned, ≈ 6 s stock), so 3 s makes
#: such a write fail (and show as failed-but-committed) rather than hide the stall.
OP_TIMEOUTS = {"mysql": 3.0, "amqp": 3.0, "keystone": 10.0, "swift": 10.0, "nova": 30.0, "glance": 10.0,
               "neutron": 10.0}
#: Seconds an accepted server create may take to end ACTIVE or ERROR before it counts as lost
#: (issue 13: "never stuck in BUILD past a deadline").
NOVA_BUILD_TIMEOUT_S = 120.0
#: Token operations in flight at most (one starts every INTERVALS["keystone"] s): a request
#: stuck on a silently dead path (its own 10 s timeout) does not stop the next ones — the gap is
#: Keystone's through the VIP, the stuck request one failure (agent.py, ``keystone``).  With 4,
#: a loaded lab (token requests taking ≈ 1 s) had all 4 in flight when the VIP holder lost power,
#: and the probe stalled 7.8-10.1 s behind them (stackha verify --runs 3, lb-master-poweroff).
KEYSTONE_CONCURRENCY = 16
#: Of those, at most KEYSTONE_FRESH younger than KEYSTONE_STUCK_AFTER_S seconds: the probe sends a
#: new request only while fewer are pending, so it never offers an overloaded Keystone more than
#: KEYSTONE_FRESH / KEYSTONE_STUCK_AFTER_S requests/s (1.5), while up to 16 requests stuck on a
#: dead path do not hold it back.  Open-loop at 4/s, two loaded labs (load average 55) kept every
#: Keystone unit failing its health check long after the probes stopped (stackha verify --runs 3,
#: 2026-12-07); a quiet lab answers in 0.3–0.6 s, where the limit never binds.
KEYSTONE_FRESH = 3
KEYSTONE_STUCK_AFTER_S = 2.0
#: Acknowledged token operations the Keystone probe needs before the fault (each takes 1–7 s
#: when the machine's two cores are shared with other labs).
KEYSTONE_WARM_OK = 2
#: Probes warmed up with :data:`KEYSTONE_WARM_OK` operations (the others need ``min_ok``): each
#: of their operations costs seconds of the lab's CPU.
SLOW_PROBES = ("keystone", "nova")
#: Daemon names on the client host (one per probe process).
DAEMONS = {"mysql": "vprobe-mysql", "amqp-publish": "vprobe-amqppub", "amqp-consume": "vprobe-amqpcon",
           "keystone": "vprobe-keystone", "swift": "vprobe-swift", "nova": "vprobe-nova",
           "glance": "vprobe-glance", "neutron": "vprobe-neutron"}
#: Probes whose acknowledged operations are read back after the run (``<probe>-collect``).
STORED = ("swift", "nova")


class ProbeError(UserError):
    """The probes could not be set up or did not start succeeding (the message says which)."""


@dataclass
class ProbeData:
    """What the probes logged: per log name (``mysql``, ``amqp-publish``, ``amqp-consume``,
    ``keystone``) its records (None: no log), the MySQL ids present after recovery (None: could
    not be read), and the count of torn lines."""

    records: dict[str, list[dict] | None] = field(default_factory=dict)
    mysql_ids: list[str] | None = None
    stored_ids: dict[str, list[str] | None] = field(default_factory=dict)  # swift, nova: read back
    torn_lines: int = 0
    collect_error: str = ""

    def results(self, since: float | None = None, until: float | None = None,
                fault_at: float | None = None) -> dict[str, check.ProbeResult]:
        """The checker's verdict per probe (:mod:`stackha.verify.check`); gaps and failures
        counted over the window ``since`` → ``until`` (wall s), losses over the whole run; a log
        that is missing or empty is "no-evidence", one ending early "truncated", one with no
        success after ``fault_at`` "not-back"."""
        out: dict[str, check.ProbeResult] = {}
        if "mysql" in self.records:
            out["mysql"] = check.check_mysql(self.records["mysql"], self.mysql_ids, since, until, fault_at)
        if "amqp-publish" in self.records:
            out["amqp"] = check.check_amqp(self.records["amqp-publish"], self.records.get("amqp-consume"),
                                           since, until, fault_at)
        if "keystone" in self.records:
            out["keystone"] = check.check_keystone(self.records["keystone"], since, until, fault_at)
        for name in STORED:
            if name in self.records:
                out[name] = check.check_stored(name, check.operations(self.records[name] or []),
                                               self.stored_ids.get(name), since, until, fault_at)
        for name in ("glance", "neutron"):
            if name in self.records:
                out[name] = check.check_calls(name, check.operations(self.records[name] or []),
                                              since, until, fault_at)
        return out


def available_probes(deployment) -> list[str]:
    """The probes this deployment can be measured with: ``mysql`` (a Galera application with a
    VIP), ``amqp`` (a RabbitMQ application), ``keystone`` (a Keystone application with a VIP)."""
    kinds = {c.kind: c for c in deployment.contexts().values()}
    out = []
    if "galera" in kinds and kinds["galera"].vip is not None:
        out.append("mysql")
    if "rabbitmq" in kinds:
        out.append("amqp")
    if "keystone" in kinds and kinds["keystone"].vip is not None:
        out.append("keystone")
        for probe, kind in (("swift", "swift-proxy"), ("nova", "nova-compute"), ("glance", "glance"),
                            ("neutron", "neutron-api")):
            ctx = kinds.get(kind)
            if ctx is not None and (ctx.vip is not None or kind == "nova-compute"):
                out.append(probe)
    return out


class Probes:
    """The probes of one scenario run on ``deployment``'s client host.

    ``run_id`` (letters, digits, '-') names the run's ids, queue and directory; ``duration_s`` is
    every probe's hard time bound (they also stop when :meth:`stop` writes the stop file).
    Lifecycle: :meth:`prepare` → :meth:`start` → :meth:`wait_warm` → (fault) → :meth:`stop` →
    :meth:`collect` → :meth:`cleanup`."""

    def __init__(self, deployment, run_id: str, probes: list[str] | None = None, duration_s: float = 900.0,
                 python: str = sys.executable):
        self.d = deployment
        self.run_id = run_id
        self.probes = list(probes if probes is not None else available_probes(deployment))
        self.duration_s = duration_s
        self.python = python
        self.dir = f"{BASE}/runs/{run_id}"
        self.stop_file = f"{self.dir}/stop"
        self.drain_file = f"{self.dir}/drain"
        self.client = deployment.client
        self._configs: dict[str, dict] = {}
        self.mysql_table = "verify_probe"

    # ----------------------------------------------------------------- set-up
    def _logs(self) -> list[str]:
        out = []
        for p in self.probes:
            out += ["amqp-publish", "amqp-consume"] if p == "amqp" else [p]
        return out

    def log_path(self, name: str) -> str:
        return f"{self.dir}/{name}.jsonl"

    def _common(self, name: str, probe: str) -> dict:
        interval = INTERVALS[probe]
        return {"probe": name, "run": self.run_id, "log": self.log_path(name), "stop_file": self.stop_file,
                "duration_s": self.duration_s, "interval_s": interval, "op_timeout_s": OP_TIMEOUTS[probe],
                "connect_timeout_s": 2.0, "max_ops": int(self.duration_s / interval * 1.2) + 100}

    def _mysql_cfg(self, ctxs) -> dict:
        from stackha.services import galera as galera_mod
        from stackha.services import operator_for

        g = next(c for c in ctxs.values() if c.kind == "galera")
        user, password = operator_for("galera").client_credentials(g)
        return {"host": str(g.vip.ip), "port": 3306, "user": user, "password": password,
                "database": getattr(galera_mod, "CLIENT_DATABASE", "stackha"), "table": self.mysql_table}

    def _amqp_cfg(self, ctxs) -> dict:
        from stackha.services import operator_for
        from stackha.services.rabbitmq import parse_transport_url

        r = next(c for c in ctxs.values() if c.kind == "rabbitmq")
        op = operator_for("rabbitmq")
        user, password = op.client_credentials(r)
        brokers = parse_transport_url(op.transport_url(r, user, password))
        return {"brokers": [[b.host, b.port] for b in brokers], "user": user, "password": password,
                "vhost": brokers[0].vhost, "queue": f"stackha-verify-{self.run_id}"}

    def _keystone_cfg(self, ctxs) -> dict:
        from stackha.services import operator_for

        k = next(c for c in ctxs.values() if c.kind == "keystone")
        op = operator_for("keystone")
        return {"url": op.public_url(k), "user": "admin", "password": op.admin_password(k),
                "project": "admin", "domain": "Default"}

    def prepare(self) -> None:
        """Write the agent and the configs (0600) on the client host; create the MySQL probe
        table.  Raises :class:`ProbeError`."""
        ctxs = self.d.contexts()
        self.client.run(["mkdir", "-p", self.dir], check=True)
        self.client.run(["chmod", "700", BASE, self.dir], check=True)
        self.client.write_file(AGENT_PATH, AGENT_SOURCE.read_text(), mode=0o644)
        cfgs: dict[str, dict] = {}
        if "mysql" in self.probes:
            cfgs["mysql"] = {**self._common("mysql", "mysql"), "mysql": self._mysql_cfg(ctxs)}
        if "amqp" in self.probes:
            a = self._amqp_cfg(ctxs)
            cfgs["amqp-publish"] = {**self._common("amqp-publish", "amqp"), "amqp": a}
            cfgs["amqp-consume"] = {**self._common("amqp-consume", "amqp"), "amqp": a, "drain_file": self.drain_file,
                                    "duration_s": self.duration_s + 120, "max_ops": 10 ** 6}
        if "keystone" in self.probes:
            cfgs["keystone"] = {**self._common("keystone", "keystone"), "keystone": self._keystone_cfg(ctxs),
                                "concurrency": KEYSTONE_CONCURRENCY, "fresh": KEYSTONE_FRESH,
                                "stuck_after_s": KEYSTONE_STUCK_AFTER_S}
        fx = None
        if {"nova", "glance", "neutron"} & set(self.probes):
            from stackha.verify.fixtures import compute_fixtures

            fx = compute_fixtures(self.d)
        extra = {"swift": {"swift": {"container": f"stackha-verify-{self.run_id}"}},
                 "nova": {"nova": {"image": fx and fx["image"], "flavor": fx and fx["flavors"][0]}},
                 "glance": {"glance": {"image": fx and fx["image"], "checksum": fx and fx["checksum"]}},
                 "neutron": {"neutron": {"network": fx and fx["network"]}}}
        for name in ("swift", "nova", "glance", "neutron"):
            if name in self.probes:
                cfgs[name] = {**self._common(name, name), "keystone": self._keystone_cfg(ctxs), **extra[name]}
        for name, cfg in cfgs.items():
            self.client.write_file(f"{self.dir}/{name}.json", json.dumps(cfg), mode=0o600)
        self._configs = cfgs
        if "mysql" in cfgs:
            setup = {**cfgs["mysql"], "probe": "mysql-setup", "log": f"{self.dir}/mysql-setup.jsonl", "duration_s": 30}
            self.client.write_file(f"{self.dir}/mysql-setup.json", json.dumps(setup), mode=0o600)
            res = self.client.run([self.python, AGENT_PATH, f"{self.dir}/mysql-setup.json"], timeout=60)
            if not res.ok:
                raise ProbeError(f"cannot create the MySQL probe table through the VIP: {self._tail('mysql-setup')}")

    def _tail(self, name: str) -> str:
        recs, _ = check.parse_jsonl(self.client.read_file(self.log_path(name)))
        ends = [r for r in recs if r.get("event") == "end"]
        return ends[-1].get("reason", "") if ends else "no log"

    # ----------------------------------------------------------------- running
    def start(self) -> None:
        """Start one daemon per probe log (a leftover daemon of that name is stopped first)."""
        order = [n for n in ("amqp-consume", "mysql", "amqp-publish", "keystone", "swift", "nova", "glance",
                             "neutron") if n in self._configs]
        for name in order:
            daemon = DAEMONS[name]
            if self.client.daemon(daemon) is not None:
                self.client.stop(daemon, timeout=5)
            self.client.spawn(daemon, [self.python, "-u", AGENT_PATH, f"{self.dir}/{name}.json"])

    def read(self, name: str) -> list[dict] | None:
        """The records of log ``name`` so far (None if there is no log file)."""
        raw = self.client.read_file(self.log_path(name))
        if raw is None:
            return None
        return check.parse_jsonl(raw)[0]

    def successes(self) -> dict[str, int]:
        """Acknowledged operations so far per operation log (publisher, not consumer)."""
        out = {}
        for name in self._configs:
            if name == "amqp-consume":
                continue
            out[name] = sum(1 for r in (self.read(name) or []) if r.get("ok") and "op" in r)
        return out

    def wait_warm(self, min_ok: int = 10, deadline_s: float = 120.0) -> float:
        """Wait until every probe has ``min_ok`` acknowledged operations (Keystone, whose token
        issue + validation takes seconds on a loaded lab: :data:`KEYSTONE_WARM_OK`); returns the
        seconds it took.  Raises :class:`ProbeError` naming the probes that did not (with their
        last error)."""
        t0 = time.monotonic()

        def enough(name: str) -> int:
            return min(min_ok, KEYSTONE_WARM_OK) if name in SLOW_PROBES else min_ok

        try:
            wait_until(lambda: all(n >= enough(name) for name, n in self.successes().items()), deadline_s, 0.5,
                       what="probes warm")
            return time.monotonic() - t0
        except WaitTimeout:
            slow = []
            for name, n in self.successes().items():
                if n < enough(name):
                    errs = check.top_errors(check.operations(self.read(name) or []), 1)
                    slow.append(f"{name}: {n} ok" + (f", last error {errs[0][0]}" if errs else
                                                     f" ({self._tail(name)})"))
            raise ProbeError(f"probes not succeeding after {deadline_s:.0f} s: " + "; ".join(slow)) from None

    def last_node(self, name: str) -> str | None:
        """The ``node`` of the last acknowledged operation of log ``name`` (the Galera writer's
        hostname for ``mysql``, ``host:port`` of the broker for ``amqp-publish``)."""
        for r in reversed(self.read(name) or []):
            if r.get("ok") and r.get("node"):
                return str(r["node"])
        return None

    def _wait_exit(self, names: list[str], deadline_s: float) -> list[str]:
        """The probes of ``names`` still running after ``deadline_s`` s (polled every 0.2 s)."""
        left = [[n for n in names if n in self._configs]]

        def exited() -> bool:
            left[0] = [n for n in left[0] if self.client.daemon(DAEMONS[n]) is not None]
            return not left[0]

        with contextlib.suppress(WaitTimeout):
            wait_until(exited, deadline_s, 0.2, what="probes exited")
        return left[0]

    def stop(self, drain_deadline_s: float = 90.0) -> None:
        """Stop the probes: the stop file ends the operation loops; once the publisher is gone the
        drain file lets the consumer empty the queue (≤ ``drain_deadline_s``).  Daemons still
        running after that are stopped."""
        self.client.write_file(self.stop_file, "stop\n")
        left = self._wait_exit(["mysql", "amqp-publish", "keystone", "swift", "nova", "glance", "neutron"],
                               OP_TIMEOUTS["nova"] + 10)
        self.client.write_file(self.drain_file, "drain\n")
        left += self._wait_exit(["amqp-consume"], drain_deadline_s)
        for name in left:
            self.client.stop(DAEMONS[name], timeout=5)

    def collect(self, deadline_s: float = 60.0) -> ProbeData:
        """Read every log back and (for ``mysql``) the ids present for this run through the VIP."""
        data = ProbeData()
        for name in self._logs():
            raw = self.client.read_file(self.log_path(name))
            recs, bad = check.parse_jsonl(raw)
            data.records[name] = recs if raw is not None else None
            data.torn_lines += bad
        if "mysql" in self._configs:
            out = f"{self.dir}/mysql-ids.json"
            cfg = {**self._configs["mysql"], "probe": "mysql-collect", "log": f"{self.dir}/mysql-collect.jsonl",
                   "duration_s": deadline_s, "output": out}
            self.client.write_file(f"{self.dir}/mysql-collect.json", json.dumps(cfg), mode=0o600)
            res = self.client.run([self.python, AGENT_PATH, f"{self.dir}/mysql-collect.json"], timeout=deadline_s + 60)
            raw = self.client.read_file(out)
            if res.ok and raw is not None:
                data.mysql_ids = json.loads(raw)["ids"]
            else:
                data.collect_error = self._tail("mysql-collect")
        for name in STORED:
            if name in self._configs:
                data.stored_ids[name] = self._collect_stored(name, deadline_s)
        return data

    def _collect_stored(self, name: str, deadline_s: float) -> list[str] | None:
        """Run ``<name>-collect`` on the client: the acknowledged operations' ids read back (Swift:
        same md5; Nova: the server settled ACTIVE or ERROR), None when it could not run."""
        out = f"{self.dir}/{name}-ids.json"
        budget = NOVA_BUILD_TIMEOUT_S if name == "nova" else deadline_s
        cfg = {**self._configs[name], "probe": f"{name}-collect", "log": f"{self.dir}/{name}-collect.jsonl",
               "probe_log": self.log_path(name), "duration_s": deadline_s, "build_timeout_s": budget,
               "output": out}
        self.client.write_file(f"{self.dir}/{name}-collect.json", json.dumps(cfg), mode=0o600)
        res = self.client.run([self.python, AGENT_PATH, f"{self.dir}/{name}-collect.json"],
                              timeout=budget + deadline_s + 300)
        raw = self.client.read_file(out)
        if not res.ok or raw is None:
            return None
        return json.loads(raw)["ids"]

    def save_logs(self, dest: Path) -> None:
        """Copy the JSONL logs (no secrets in them) to ``dest`` on this machine."""
        dest.mkdir(parents=True, exist_ok=True)
        for name in self._logs() + ["mysql-ids"]:
            path = self.log_path(name) if name != "mysql-ids" else f"{self.dir}/mysql-ids.json"
            raw = self.client.read_file(path)
            if raw is not None:
                (dest / Path(path).name).write_bytes(raw)

    def cleanup(self) -> None:
        """Stop any probe daemon still running and remove the run directory (configs hold passwords)."""
        for name in self._configs:
            try:
                if self.client.daemon(DAEMONS[name]) is not None:
                    self.client.stop(DAEMONS[name], timeout=5)
            except Exception:
                pass
        try:
            self.client.run(["rm", "-rf", self.dir], timeout=30)
        except Exception:
            pass

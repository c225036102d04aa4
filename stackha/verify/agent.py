"""The probe agent: a self-contained script run ON THE LAB'S CLIENT HOST during a fault.

stackha copies this file into the client host (:mod:`stackha.verify.probes`) and runs it with the
venv's interpreter (its path is visible inside lab hosts), one process per probe::

    python agent.py CONFIG.json

It imports nothing from stackha — only the standard library, ``pymysql`` and ``pika`` — so what it
measures does not depend on the orchestrator.  Every operation is one JSON line in the log file
named by the config (flushed before the next operation starts):

``{"probe", "op", "id", "start", "end", "ok", "error", "node"}`` — ``start``/``end`` are wall-clock
seconds (``time.time()``: lab hosts share the kernel clock with the orchestrator, so fault times
recorded there line up), ``id`` is unique per operation, ``ok`` is true only when the cloud
acknowledged the operation (MySQL: the autocommit INSERT returned; AMQP: the broker confirmed the
persistent message; Keystone: a token was issued AND validated).  A failed operation may still
have been committed (a timeout after the commit): the checker counts those separately.

Events (``{"probe", "event", "t", ...}``) mark the start and end of a probe.

Probes (``config["probe"]``):

- ``mysql``: INSERT of a unique id through the VIP per operation (autocommit, short connect/read/
  write timeouts; a failed operation drops the connection and the next one reconnects);
- ``mysql-setup`` / ``mysql-collect``: create the probe table / write the ids present for this
  run to ``config["output"]`` (retrying until ``duration_s``) and then delete them;
- ``amqp-publish``: publish persistent messages with publisher confirms to a quorum queue; on any
  error the next operation connects to the next broker of the list (client-side failover, as the
  OpenStack transport_url does); every publish is bounded by ``op_timeout_s`` with SIGALRM,
  because a powered-off broker is otherwise noticed only by the heartbeat checker (pika checks
  at heartbeat + 5 s);
- ``amqp-consume``: consume with manual acks (logged before the ack, so a redelivery shows as a
  duplicate); after ``drain_file`` appears it stops once the queue is empty and nothing arrived for
  ``drain_idle_s``, then deletes the queue;
- ``keystone``: POST /v3/auth/tokens (password, project-scoped) then GET /v3/auth/tokens with
  X-Auth-Token and X-Subject-Token (Keystone's identity API v3), both with ``?nocatalog`` (the
  catalog adds nothing to an HA measurement and costs Keystone CPU).  One operation starts every
  ``interval_s``, up to ``concurrency`` in flight (threads), as a population of API clients sends
  them: a request caught on a path that died silently (a powered-off load balancer sends no RST)
  waits its own timeout and fails, and does not hold back the requests sent after it, so the gap
  is the service's, not one client's timeout.  At most ``fresh`` of those in flight may be
  younger than ``stuck_after_s``: a slow Keystone is not sent more work than it answers (an
  open-loop 4 requests/s with 16 in flight kept two loaded labs' Keystones saturated — every
  unit failed its health check — until the unanswered backlog drained).

The OpenStack API probes take one token with its catalog when they start (the public endpoint of
their service type on the VIP) and a new one only after a 401, so they measure their service, not
Keystone:

- ``swift``: PUT of a unique 1 KiB object per operation into the run's container (Swift's object
  API); acknowledged when the answer is 201 with the body's md5 as ETag.  ``swift-collect`` GETs
  every acknowledged object and writes the ids read back with the same md5 to
  ``config["output"]`` (an object missing or different is lost), then deletes them;
- ``nova``: POST /servers (compute API 2.37, ``networks: none``, the run's image and flavor);
  acknowledged when Nova answers 202 with a server id.  ``nova-collect`` polls every acknowledged
  server until it is ACTIVE or ERROR (``build_timeout_s``) and writes the ids that settled
  (a create Nova accepted and never finished is lost), then deletes the servers;
- ``glance``: GET /v2/images/{id}/file of the run's image; acknowledged when the body's md5 is the
  image's checksum;
- ``neutron``: POST /v2.0/ports on the run's network, then DELETE of that port; acknowledged when
  both answered (201, 204).

Every loop is bounded by ``max_ops`` operations and ``duration_s`` seconds, and ends early when
``stop_file`` exists.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

MYSQL_SCHEMA = ("CREATE TABLE IF NOT EXISTS `{table}` (id VARCHAR(64) NOT NULL PRIMARY KEY, "
                "run VARCHAR(64) NOT NULL, t DOUBLE NOT NULL, KEY run_idx (run)) ENGINE=InnoDB")


class OpTimeout(Exception):
    """An operation exceeded its deadline (raised from the SIGALRM handler)."""


def _on_alarm(signum, frame):  # pragma: no cover - exercised on the client host
    raise OpTimeout("operation timed out")


def timed(fn, timeout_s: float):
    """Run ``fn()`` with a SIGALRM deadline of ``timeout_s`` seconds (main thread only).

    If the alarm fires after ``fn`` returned but before it is cancelled the call counts as failed:
    the agent may under-report successes, never over-report them."""
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


class Log:
    """Append-only JSONL log; every record is flushed (and reaches the host's disk) at once."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.f = open(path, "a", buffering=1)
        self._lock = threading.Lock()  # the keystone probe writes from several threads

    def write(self, rec: dict) -> None:
        with self._lock:
            self.f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self.f.flush()

    def close(self) -> None:
        self.f.close()


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, one line, at most 300 characters."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text[:300]


class Loop:
    """Bounds of a probe loop: ``max_ops`` operations, ``duration_s`` seconds, or ``stop_file``."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.max_ops = int(cfg.get("max_ops", 10000))
        self.deadline = time.monotonic() + float(cfg.get("duration_s", 300))
        self.interval = float(cfg.get("interval_s", 0.05))
        self.stop_file = cfg.get("stop_file")
        self.n = 0
        self.reason = ""

    def next(self) -> bool:
        """True while another operation may start (sleeps to keep ``interval_s`` between starts)."""
        if self.n:
            time.sleep(max(0.0, self.interval - (time.monotonic() - self._t_last)))
        if self.stop_file and os.path.exists(self.stop_file):
            self.reason = "stop file"
            return False
        if time.monotonic() >= self.deadline:
            self.reason = "duration reached"
            return False
        if self.n >= self.max_ops:
            self.reason = "max_ops reached"
            return False
        self.n += 1
        self._t_last = time.monotonic()
        return True


# --------------------------------------------------------------------------- MySQL
def _mysql_connect(m: dict, cfg: dict):
    import pymysql

    return pymysql.connect(host=m["host"], port=int(m.get("port", 3306)), user=m["user"], password=m["password"],
                           database=m["database"], autocommit=True,
                           connect_timeout=float(cfg.get("connect_timeout_s", 2)),
                           read_timeout=float(cfg.get("op_timeout_s", 3)),
                           write_timeout=float(cfg.get("op_timeout_s", 3)))


def probe_mysql(cfg: dict, log: Log) -> str:
    m, run, table = cfg["mysql"], cfg["run"], cfg["mysql"]["table"]
    loop = Loop(cfg)
    conn, node = None, None
    while loop.next():
        oid = f"{run}-m{loop.n:06d}"
        rec = {"probe": "mysql", "op": "insert", "id": oid, "start": time.time()}
        try:
            if conn is None:
                conn = _mysql_connect(m, cfg)
                with conn.cursor() as c:
                    c.execute("SELECT @@hostname")
                    node = c.fetchone()[0]
            with conn.cursor() as c:
                c.execute(f"INSERT INTO `{table}` (id, run, t) VALUES (%s, %s, %s)", (oid, run, rec["start"]))
            rec.update(ok=True, node=node)
        except Exception as exc:
            rec.update(ok=False, error=describe(exc), node=node, end=time.time())
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass
            conn, node = None, None
        rec.setdefault("end", time.time())
        log.write(rec)
    if conn is not None:
        try:
            conn.close()
        except Exception:
            pass
    return loop.reason


def _retrying(cfg: dict, fn):
    """Call ``fn`` until it succeeds or ``duration_s`` passes (0.5 s apart); re-raise the last error."""
    deadline = time.monotonic() + float(cfg.get("duration_s", 60))
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def mysql_setup(cfg: dict, log: Log) -> str:
    m = cfg["mysql"]

    def go():
        conn = _mysql_connect(m, cfg)
        try:
            with conn.cursor() as c:
                c.execute(MYSQL_SCHEMA.format(table=m["table"]))
        finally:
            conn.close()

    _retrying(cfg, go)
    return "table ready"


def mysql_collect(cfg: dict, log: Log) -> str:
    """Write ``{"run", "ids": [...], "t"}`` (ids present for this run) to ``output``; then delete them."""
    m, run = cfg["mysql"], cfg["run"]

    def go():
        conn = _mysql_connect(m, {**cfg, "op_timeout_s": 30})
        try:
            with conn.cursor() as c:
                c.execute(f"SELECT id FROM `{m['table']}` WHERE run = %s", (run,))
                ids = [r[0] for r in c.fetchall()]
                c.execute("SELECT @@hostname")
                node = c.fetchone()[0]
            tmp = cfg["output"] + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"run": run, "ids": ids, "node": node, "t": time.time()}, f)
            os.replace(tmp, cfg["output"])
            if cfg.get("delete", True):
                with conn.cursor() as c:
                    c.execute(f"DELETE FROM `{m['table']}` WHERE run = %s", (run,))
            return len(ids)
        finally:
            conn.close()

    n = _retrying(cfg, go)
    return f"{n} ids collected"


# --------------------------------------------------------------------------- AMQP
class Brokers:
    """The broker list of a transport_url, tried in turn: after a failure the next one first."""

    def __init__(self, a: dict, cfg: dict):
        import pika

        self.a = a
        self.i = 0
        creds = pika.PlainCredentials(a["user"], a["password"])
        self.params = [pika.ConnectionParameters(
            host=h, port=int(p), virtual_host=a.get("vhost", "/"), credentials=creds,
            heartbeat=int(cfg.get("heartbeat_s", 2)), connection_attempts=1,
            socket_timeout=float(cfg.get("connect_timeout_s", 2)),
            stack_timeout=float(cfg.get("connect_timeout_s", 2)) + 1,
            blocked_connection_timeout=float(cfg.get("op_timeout_s", 3)) + 2,
        ) for h, p in a["brokers"]]

    def connect(self):
        """``(connection, "host:port")`` to the first broker that answers, starting at the current one."""
        import pika

        n = len(self.params)
        last: Exception | None = None
        for k in range(n):
            p = self.params[(self.i + k) % n]
            try:
                conn = pika.BlockingConnection(p)
            except Exception as exc:
                last = exc
                continue
            self.i = (self.i + k) % n
            return conn, f"{p.host}:{p.port}"
        raise ConnectionError(f"no broker answered: {describe(last) if last else 'empty list'}")

    def failed(self) -> None:
        self.i = (self.i + 1) % len(self.params)


def _declare(ch, queue: str, passive: bool = False):
    return ch.queue_declare(queue=queue, durable=True, passive=passive,
                            arguments=None if passive else {"x-queue-type": "quorum"})


def _drop(conn) -> None:
    """Forget a connection that may be dead: close it if that is quick (0.1 s), else just drop
    it.  A broker that lost power never answers Connection.Close: waiting longer would add to the
    next operation's gap a cost no real client pays (it reconnects at once)."""
    if conn is None:
        return
    try:
        timed(lambda: conn.close(), 0.1)
    except BaseException:
        pass


def probe_amqp_publish(cfg: dict, log: Log) -> str:
    import pika

    a, run = cfg["amqp"], cfg["run"]
    brokers = Brokers(a, cfg)
    loop = Loop(cfg)
    conn = ch = node = None
    timeout = float(cfg.get("op_timeout_s", 3))
    props_mode = pika.spec.PERSISTENT_DELIVERY_MODE
    while loop.next():
        oid = f"{run}-a{loop.n:06d}"
        rec = {"probe": "amqp", "op": "publish", "id": oid, "start": time.time()}

        def op():
            nonlocal conn, ch, node
            if conn is None:
                conn, node = brokers.connect()
                ch = conn.channel()
                ch.confirm_delivery()
                _declare(ch, a["queue"])
            ch.basic_publish(exchange="", routing_key=a["queue"], body=oid.encode(), mandatory=True,
                             properties=pika.BasicProperties(delivery_mode=props_mode, message_id=oid))

        try:
            timed(op, timeout)
            rec.update(ok=True, node=node)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            rec.update(ok=False, error=describe(exc), node=node, end=time.time())
            _drop(conn)  # after the end time: dropping a dead connection is not the operation
            conn = ch = node = None
            brokers.failed()
        rec.setdefault("end", time.time())
        log.write(rec)
    _drop(conn)
    return loop.reason


def probe_amqp_consume(cfg: dict, log: Log) -> str:
    a = cfg["amqp"]
    brokers = Brokers(a, cfg)
    deadline = time.monotonic() + float(cfg.get("duration_s", 300))
    drain_file = cfg.get("drain_file")
    drain_idle = float(cfg.get("drain_idle_s", 2.0))
    check_every = float(cfg.get("check_every_s", 1.0))
    timeout = float(cfg.get("op_timeout_s", 3))
    max_ops = int(cfg.get("max_ops", 100000))
    state = {"last": time.monotonic(), "n": 0, "node": None}

    def on_message(ch, method, props, body):
        mid = props.message_id or body.decode(errors="replace")
        log.write({"probe": "amqp", "op": "consume", "id": mid, "start": time.time(), "end": time.time(),
                   "ok": True, "redelivered": bool(method.redelivered), "node": state["node"]})
        state["n"] += 1
        state["last"] = time.monotonic()
        ch.basic_ack(delivery_tag=method.delivery_tag)

    conn = ch = None
    reason = "duration reached"
    while time.monotonic() < deadline and state["n"] < max_ops:
        try:
            if conn is None:
                def setup():
                    c, node = brokers.connect()
                    channel = c.channel()
                    channel.basic_qos(prefetch_count=int(cfg.get("prefetch", 50)))
                    _declare(channel, a["queue"])
                    channel.basic_consume(queue=a["queue"], on_message_callback=on_message, auto_ack=False)
                    return c, channel, node

                conn, ch, state["node"] = timed(setup, timeout)
                log.write({"probe": "amqp", "event": "consumer connected", "node": state["node"], "t": time.time()})
            timed(lambda: conn.process_data_events(time_limit=check_every), check_every + timeout)
            # Liveness check (and queue depth): a passive declare answered within op_timeout_s.
            ready = timed(lambda: _declare(ch, a["queue"], passive=True).method.message_count, timeout)
            if drain_file and os.path.exists(drain_file) and ready == 0 \
                    and time.monotonic() - state["last"] >= drain_idle:
                # The queue is empty and the publisher gone: delete it (quorum queues refuse
                # if_empty; a message confirmed but not consumed would show as lost anyway).
                try:
                    timed(lambda: ch.queue_delete(queue=a["queue"]), timeout)
                except BaseException as exc:
                    log.write({"probe": "amqp", "event": "queue not deleted", "error": describe(exc), "t": time.time()})
                reason = "drained"
                break
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            log.write({"probe": "amqp", "event": "consumer error", "error": describe(exc), "node": state["node"],
                       "t": time.time()})
            _drop(conn)
            conn = ch = None
            brokers.failed()
            time.sleep(0.2)
    _drop(conn)
    return reason


# --------------------------------------------------------------------------- Keystone
def _http(method: str, url: str, timeout: float, headers: dict, body: bytes | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resp.read()
        return resp.status, resp.headers  # an email.message.Message: case-insensitive get()


def probe_keystone(cfg: dict, log: Log) -> str:
    k, run = cfg["keystone"], cfg["run"]
    loop = Loop(cfg)
    timeout = float(cfg.get("op_timeout_s", 5))
    url = k["url"].rstrip("/")
    body = json.dumps({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": k["user"], "domain": {"name": k.get("domain", "Default")}, "password": k["password"]}}},
        "scope": {"project": {"name": k.get("project", "admin"), "domain": {"name": k.get("domain", "Default")}}},
    }}).encode()
    slots = threading.BoundedSemaphore(max(1, int(cfg.get("concurrency", 1))))
    fresh_max = max(1, int(cfg.get("fresh", cfg.get("concurrency", 1))))
    stuck_after = float(cfg.get("stuck_after_s", timeout))
    started: dict[str, float] = {}  # in flight: id -> monotonic start
    changed = threading.Condition()

    def wait_fresh_slot() -> None:
        """Block while ``fresh`` requests younger than ``stuck_after_s`` are in flight: the probe
        offers load only as fast as Keystone answers (an overloaded Keystone is not fed more),
        while older requests — stuck on a dead path — stop holding it back."""
        with changed:
            while True:
                now = time.monotonic()
                young = [t for t in started.values() if now - t < stuck_after]
                if len(young) < fresh_max:
                    return
                changed.wait(stuck_after - (now - min(young)) + 0.001)

    def token(oid: str) -> None:
        rec = {"probe": "keystone", "op": "token", "id": oid, "start": time.time()}
        try:
            code, headers = _http("POST", f"{url}/auth/tokens?nocatalog", timeout, {"Content-Type": "application/json"}, body)
            token = headers.get("X-Subject-Token")
            if code != 201 or not token:
                raise RuntimeError(f"token issue answered {code} without a token")
            code, _ = _http("GET", f"{url}/auth/tokens?nocatalog", timeout, {"X-Auth-Token": token, "X-Subject-Token": token})
            if code != 200:
                raise RuntimeError(f"token validation answered {code}")
            rec.update(ok=True)
        except urllib.error.HTTPError as exc:
            rec.update(ok=False, error=f"HTTP {exc.code} {exc.reason}")
        except Exception as exc:
            rec.update(ok=False, error=describe(exc))
        finally:
            rec["end"] = time.time()
            log.write(rec)
            with changed:
                started.pop(oid, None)
                changed.notify_all()
            slots.release()

    threads: list[threading.Thread] = []
    while loop.next():
        slots.acquire()  # at most `concurrency` requests in flight; each ends within 2 timeouts
        wait_fresh_slot()
        oid = f"{run}-k{loop.n:06d}"
        with changed:
            started[oid] = time.monotonic()
        t = threading.Thread(target=token, args=(oid,), daemon=True)
        t.start()
        threads = [x for x in threads if x.is_alive()] + [t]
    for t in threads:
        t.join(2 * timeout + 1)
    return loop.reason


# ----------------------------------------------------------------- OpenStack APIs
class Cloud:
    """A token with its catalog, taken once and again after a 401 (``config["keystone"]`` as for
    the keystone probe); :meth:`call` sends one request to the public endpoint of a service type."""

    def __init__(self, cfg: dict, service_type: str):
        self.k = cfg["keystone"]
        self.type = service_type
        self.timeout = float(cfg.get("op_timeout_s", 10))
        self.token: str | None = None
        self.url = ""

    def login(self) -> None:
        k = self.k
        body = json.dumps({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": k["user"], "domain": {"name": k.get("domain", "Default")}, "password": k["password"]}}},
            "scope": {"project": {"name": k.get("project", "admin"), "domain": {"name": k.get("domain", "Default")}}},
        }}).encode()
        req = urllib.request.Request(k["url"].rstrip("/") + "/auth/tokens", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            catalog = json.loads(resp.read())["token"]["catalog"]
            token = resp.headers.get("X-Subject-Token")
        for svc in catalog:
            if svc["type"] == self.type:
                self.url = next(e["url"] for e in svc["endpoints"] if e["interface"] == "public").rstrip("/")
                break
        else:
            raise RuntimeError(f"no {self.type} endpoint in the catalog")
        self.token = token

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
             ok: tuple[int, ...] = (200,)) -> tuple[int, dict, bytes]:
        """One request; returns (status, headers, body); raises on a status outside ``ok``."""
        for attempt in (0, 1):
            if self.token is None:
                self.login()
            h = {"X-Auth-Token": self.token or "", **(headers or {})}
            req = urllib.request.Request(self.url + path, data=body, method=method, headers=h)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    data = resp.read()
                    if resp.status not in ok:
                        raise RuntimeError(f"{method} answered {resp.status}")
                    return resp.status, resp.headers, data
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 0:
                    self.token = None
                    continue
                raise RuntimeError(f"HTTP {exc.code} {exc.reason}") from None
        raise RuntimeError("unauthorised twice")


def _api_loop(cfg: dict, log: Log, op: str, letter: str, fn) -> str:
    """The operation loop of an API probe: ``fn(oid) -> dict`` (extra fields) per operation,
    acknowledged when it returns, failed when it raises."""
    loop = Loop(cfg)
    while loop.next():
        oid = f"{cfg['run']}-{letter}{loop.n:06d}"
        rec = {"probe": cfg["probe"], "op": op, "id": oid, "start": time.time()}
        try:
            rec.update(timed(lambda: fn(oid), float(cfg.get("op_timeout_s", 10))) or {}, ok=True)
        except Exception as exc:
            rec.update(ok=False, error=describe(exc))
        rec["end"] = time.time()
        log.write(rec)
    return loop.reason


def probe_swift(cfg: dict, log: Log) -> str:
    import hashlib

    cloud = Cloud(cfg, "object-store")
    container = cfg["swift"]["container"]
    _retrying(cfg, lambda: cloud.call("PUT", f"/{container}", b"", ok=(201, 202)))

    def put(oid: str) -> dict:
        body = os.urandom(1024)
        md5 = hashlib.md5(body).hexdigest()
        _, headers, _ = cloud.call("PUT", f"/{container}/{oid}", body, {"ETag": md5}, ok=(201,))
        if (headers.get("ETag") or "").strip('"') != md5:
            raise RuntimeError(f"ETag {headers.get('ETag')} is not the body's md5")
        return {"md5": md5}

    return _api_loop(cfg, log, "put", "s", put)


def _acked(cfg: dict) -> list[dict]:
    with open(cfg["probe_log"]) as f:
        recs = [json.loads(line) for line in f if line.strip().startswith("{")]
    return [r for r in recs if r.get("ok") and "op" in r]


def swift_collect(cfg: dict, log: Log) -> str:
    import hashlib

    cloud = Cloud(cfg, "object-store")
    container = cfg["swift"]["container"]
    kept: list[str] = []
    for r in _acked(cfg):
        def get(r: dict = r) -> bool:
            try:
                _, _, body = cloud.call("GET", f"/{container}/{r['id']}")
            except RuntimeError as exc:
                if "HTTP 404" in str(exc):
                    return False
                raise
            return hashlib.md5(body).hexdigest() == r["md5"]
        if _retrying(cfg, get):
            kept.append(r["id"])
    with open(cfg["output"], "w") as f:
        json.dump({"ids": kept}, f)
    for r in _acked(cfg):
        try:
            cloud.call("DELETE", f"/{container}/{r['id']}", ok=(204, 404))
        except Exception:
            pass
    return "collected"


NOVA_HEADERS = {"Content-Type": "application/json", "OpenStack-API-Version": "compute 2.37",
                "X-OpenStack-Nova-API-Version": "2.37"}


def probe_nova(cfg: dict, log: Log) -> str:
    cloud = Cloud(cfg, "compute")
    n = cfg["nova"]

    def create(oid: str) -> dict:
        body = json.dumps({"server": {"name": oid, "imageRef": n["image"], "flavorRef": n["flavor"],
                                      "networks": "none"}}).encode()
        _, _, data = cloud.call("POST", "/servers", body, NOVA_HEADERS, ok=(202,))
        return {"server": json.loads(data)["server"]["id"]}

    return _api_loop(cfg, log, "create", "n", create)


def nova_collect(cfg: dict, log: Log) -> str:
    cloud = Cloud(cfg, "compute")
    acked = {r["server"]: r["id"] for r in _acked(cfg)}
    settled: dict[str, str] = {}
    end = time.monotonic() + float(cfg.get("build_timeout_s", 120))
    while len(settled) < len(acked) and time.monotonic() < end:
        for sid, oid in acked.items():
            if sid in settled:
                continue
            try:
                _, _, data = cloud.call("GET", f"/servers/{sid}", headers=NOVA_HEADERS)
            except Exception:
                continue  # not found yet, or the API is still recovering: ask again
            status = json.loads(data)["server"]["status"]
            if status in ("ACTIVE", "ERROR"):
                settled[sid] = status
        time.sleep(1)
    with open(cfg["output"], "w") as f:
        json.dump({"ids": [acked[s] for s in settled],
                   "status": {acked[s]: st for s, st in settled.items()}}, f)
    for sid in acked:
        try:
            cloud.call("DELETE", f"/servers/{sid}", headers=NOVA_HEADERS, ok=(204, 404))
        except Exception:
            pass
    return "collected"


def probe_glance(cfg: dict, log: Log) -> str:
    import hashlib

    cloud = Cloud(cfg, "image")
    g = cfg["glance"]

    def download(oid: str) -> dict:
        _, _, body = cloud.call("GET", f"/v2/images/{g['image']}/file")
        if hashlib.md5(body).hexdigest() != g["checksum"]:
            raise RuntimeError("image body does not match its checksum")
        return {}

    return _api_loop(cfg, log, "download", "g", download)


def probe_neutron(cfg: dict, log: Log) -> str:
    cloud = Cloud(cfg, "network")
    net = cfg["neutron"]["network"]

    def port(oid: str) -> dict:
        body = json.dumps({"port": {"network_id": net, "name": oid}}).encode()
        _, _, data = cloud.call("POST", "/v2.0/ports", body, {"Content-Type": "application/json"}, ok=(201,))
        pid = json.loads(data)["port"]["id"]
        cloud.call("DELETE", f"/v2.0/ports/{pid}", ok=(204,))
        return {}

    return _api_loop(cfg, log, "port", "p", port)


PROBES = {
    "swift": probe_swift,
    "swift-collect": swift_collect,
    "nova": probe_nova,
    "nova-collect": nova_collect,
    "glance": probe_glance,
    "neutron": probe_neutron,
    "mysql": probe_mysql,
    "mysql-setup": mysql_setup,
    "mysql-collect": mysql_collect,
    "amqp-publish": probe_amqp_publish,
    "amqp-consume": probe_amqp_consume,
    "keystone": probe_keystone,
}


def main(argv: list[str]) -> int:
    """Run the probe its config names; exit code 0 when it ended by itself, 1 on an error."""
    if len(argv) != 2:
        print("usage: agent.py CONFIG.json", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        cfg = json.load(f)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(143))
    log = Log(cfg["log"])
    probe = cfg["probe"]
    log.write({"probe": probe, "event": "start", "t": time.time(), "pid": os.getpid()})
    rc = 0
    try:
        reason = PROBES[probe](cfg, log)
    except Exception as exc:
        reason, rc = f"error: {describe(exc)}", 1
    log.write({"probe": probe, "event": "end", "t": time.time(), "reason": reason})
    log.close()
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))

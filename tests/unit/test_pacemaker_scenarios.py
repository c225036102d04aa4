"""Pure parts of the Pacemaker verify scenarios: the client probe script (run here against a local
HTTP server on 127.0.0.1), the token request it sends, and the "service back" rule."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stackha.verify import scenarios as ps
from stackha.verify.check import longest_gap, parse_jsonl


class Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, bytes]] = []
    fail_first = 0

    def log_message(self, *args):
        pass

    def _answer(self, code: int, body: bytes = b"node-a\n"):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        type(self).seen.append(("GET", self.path, b""))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            return self._answer(503, b"down\n")
        self._answer(200)

    def do_POST(self):
        data = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(("POST", self.path, data))
        self._answer(201, b"{}")


@pytest.fixture
def server():
    Handler.seen = []
    Handler.fail_first = 0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def run_probe(tmp_path, cfg: dict) -> list[dict]:
    script = tmp_path / "probe.py"
    script.write_text(ps.PROBE_SCRIPT)
    conf = tmp_path / "cfg.json"
    conf.write_text(json.dumps({"duration_s": 0.6, "interval_s": 0.02, "timeout_s": 1.0, "max_ops": 10,
                                "log": str(tmp_path / "log.jsonl"), "stop_file": str(tmp_path / "stop"),
                                "body": None, "expect": [200], "op": "get", **cfg}))
    subprocess.run([sys.executable, str(script), str(conf)], check=True, timeout=30)
    recs, bad = parse_jsonl((tmp_path / "log.jsonl").read_text())
    assert bad == 0
    return recs


def test_probe_gets_records_failures_and_is_bounded(server, tmp_path):
    Handler.fail_first = 3
    recs = run_probe(tmp_path, {"url": server + "/", "max_ops": 8, "duration_s": 10})
    assert len(recs) == 8  # max_ops bounds the loop before duration_s does
    assert [r["ok"] for r in recs[:3]] == [False] * 3 and all(r["ok"] for r in recs[3:])
    assert recs[0]["error"].startswith("HTTPError") and recs[3]["node"] == "node-a"
    assert all(r["end"] >= r["start"] for r in recs)
    assert longest_gap(recs).ms > 0


def test_probe_stops_on_the_stop_file_and_on_refused_connections(tmp_path):
    (tmp_path / "stop").write_text("")
    assert run_probe(tmp_path, {"url": "http://127.0.0.1:9/"}) == []
    (tmp_path / "stop").unlink()
    recs = run_probe(tmp_path, {"url": "http://127.0.0.1:9/", "max_ops": 3})
    assert len(recs) == 3 and not any(r["ok"] for r in recs) and "URLError" in recs[0]["error"]


def test_keystone_token_probe_posts_a_password_token_request(server, tmp_path):
    class Client:  # never used: the probe is only configured
        name = "client"

    probe = ps.keystone_token_probe(Client(), server + "/v3/", "s3cret")
    assert probe.url == server + "/v3/auth/tokens" and probe.expect == (201,)
    auth = probe.body["auth"]
    assert auth["identity"]["methods"] == ["password"]
    assert auth["identity"]["password"]["user"] == {"name": "admin", "domain": {"name": "Default"}, "password": "s3cret"}
    assert auth["scope"]["project"]["name"] == "admin"
    recs = run_probe(tmp_path, {"url": probe.url, "body": probe.body, "expect": [201], "op": "post", "max_ops": 2})
    assert [r["ok"] for r in recs] == [True, True] and recs[0]["op"] == "post"
    method, path, data = Handler.seen[0]
    assert (method, path) == ("POST", "/v3/auth/tokens") and json.loads(data) == probe.body
    assert "s3cret" not in json.dumps(recs)  # the password never reaches the log


def test_back_after():
    def rec(start, end, ok):
        return {"op": "get", "id": str(start), "start": start, "end": end, "ok": ok}

    # a request started before the fault that hangs and succeeds late does not count as "back"
    recs = [rec(0, 1, True), rec(9.5, 14, True), rec(10.1, 12, False), rec(12, 13, False), rec(13, 13.5, True)]
    assert ps.back_after(recs, 10.0) == 13.5
    assert ps.back_after([rec(0, 1, True), rec(10.2, 10.3, True)], 10.0) == 10.3  # nothing failed
    assert ps.back_after([rec(10.2, 10.3, False)], 10.0) is None

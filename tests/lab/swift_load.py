"""Swift load for the lab tests: a self-contained script run ON the client host with Debian's
python3 (python3-swiftclient), never in the root namespace.

Config (JSON file, 0600: it holds the admin password) → JSONL records on stdout's file::

    put:   {"mode": "put", "auth": {OS_* …}, "container": "c", "prefix": "p", "count": 30,
            "interval_s": 0.5, "deadline_s": 120, "out": "/path.jsonl"}
           → one line per PUT {"t": wall s, "name", "md5", "ok", "error"?}
    check: {"mode": "check", "auth": …, "container": "c", "objects": {name: md5}, "out": …}
           → one line per GET {"name", "ok", "md5"?, "error"?}

Bounded: at most ``count`` operations, and none started after ``deadline_s``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time


def connect(auth: dict):
    from swiftclient.client import Connection

    return Connection(authurl=auth["OS_AUTH_URL"], user=auth["OS_USERNAME"], key=auth["OS_PASSWORD"],
                      auth_version="3", retries=0, timeout=10,
                      os_options={"project_name": auth["OS_PROJECT_NAME"],
                                  "user_domain_name": auth["OS_USER_DOMAIN_NAME"],
                                  "project_domain_name": auth["OS_PROJECT_DOMAIN_NAME"]})


def main() -> int:
    cfg = json.load(open(sys.argv[1]))
    conn = connect(cfg["auth"])
    with open(cfg["out"], "a") as out:
        def log(rec: dict) -> None:
            out.write(json.dumps(rec) + "\n")
            out.flush()

        if cfg["mode"] == "put":
            conn.put_container(cfg["container"])
            end = time.monotonic() + cfg["deadline_s"]
            for i in range(cfg["count"]):
                if time.monotonic() > end:
                    break
                body = os.urandom(4096)
                name, md5 = f"{cfg['prefix']}-{i:04d}", hashlib.md5(body).hexdigest()
                t = time.time()
                try:
                    etag = conn.put_object(cfg["container"], name, body)
                    log({"t": t, "name": name, "md5": md5, "ok": etag == md5,
                         **({} if etag == md5 else {"error": f"etag {etag}"})})
                except Exception as exc:  # a failed PUT is a record, not the end of the load
                    log({"t": t, "name": name, "md5": md5, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]})
                time.sleep(cfg["interval_s"])
        else:
            for name in cfg["objects"]:
                try:
                    _, body = conn.get_object(cfg["container"], name)
                    log({"name": name, "ok": True, "md5": hashlib.md5(body).hexdigest()})
                except Exception as exc:
                    log({"name": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]})
    return 0


if __name__ == "__main__":
    sys.exit(main())

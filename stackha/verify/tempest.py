"""Tempest (Debian's ``tempest`` 33.0.0, the suite OpenStack gates on) against the deployed cloud.

:func:`run_tempest` runs ON THE CLIENT HOST, through the VIP:

1. :func:`stackha.verify.fixtures.compute_fixtures` (image, two flavors) where the cloud has Nova;
2. a workspace ``/srv/stackha/tempest`` with ``etc/tempest.conf`` rendered from the deployment
   (``services/templates/tempest/tempest.conf.j2``: which services exist, the Keystone URL on the
   VIP, the admin, image and flavors; mode 0600) and ``.stestr.conf``;
3. ``stestr run --concurrency N --exclude-list exclude.txt REGEX`` with Debian's python3 (LAB-NOTES
   "Tempest"); the committed ``exclude.txt`` lists the tests the lab cannot pass, each with its
   reason;
4. the results from ``stestr last --subunit | subunit2csv``: per test id its status (success, fail,
   skip) and seconds.

The default selection is issue 13's: ``--smoke`` plus ``tempest.api.compute.servers``,
``tempest.api.image`` and ``tempest.api.network``.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from stackha.errors import UserError
from stackha.services.base import TEMPLATES, render_template

WORKSPACE = "/srv/stackha/tempest"
TEST_PATH = "/usr/lib/python3/dist-packages/tempest/test_discover"
TOP_DIR = "/usr/lib/python3/dist-packages"
EXCLUDE = TEMPLATES / "tempest" / "exclude.txt"
DEFAULT_REGEX = r"(\[.*\bsmoke\b.*\]|tempest\.api\.compute\.servers|tempest\.api\.image|tempest\.api\.network)"


class TempestError(UserError):
    """Tempest could not be set up or run (the message says what failed)."""


@dataclass
class TempestResult:
    """Per test id its status (``success``, ``fail``, ``skip``) and seconds; ``rc`` of stestr."""

    rc: int
    tests: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out = {"success": 0, "fail": 0, "skip": 0}
        for t in self.tests.values():
            out[t["status"]] = out.get(t["status"], 0) + 1
        return out

    def failed(self) -> list[str]:
        return sorted(t for t, r in self.tests.items() if r["status"] == "fail")


def _kinds(d) -> dict:
    return {c.kind: c for c in d.contexts().values()}


def render_conf(d, fixtures: dict | None) -> str:
    """tempest.conf for deployment ``d`` (pure given the fixtures' ids)."""
    from stackha.services import operator_for

    kinds = _kinds(d)
    ks = kinds.get("keystone")
    if ks is None or ks.vip is None:
        raise TempestError("Tempest needs a keystone application with a VIP")
    op = operator_for("keystone")
    compute = kinds.get("nova-compute")
    nova = "nova-cloud-controller" in kinds and compute is not None
    return render_template(
        "tempest/tempest.conf.j2", lab=d.name, admin_password=op.admin_password(ks), auth_url=op.public_url(ks),
        glance="glance" in kinds, nova=nova and fixtures is not None, neutron="neutron-api" in kinds,
        swift="swift-proxy" in kinds, image=(fixtures or {}).get("image"), flavors=(fixtures or {}).get("flavors"),
        compute_nodes=len(compute.units) if compute is not None else 0)


def parse_csv(text: str) -> dict[str, dict]:
    """subunit2csv output → ``{test id: {"status", "seconds"}}`` (attachments' rows skipped;
    tempest's ``[id-…,smoke]`` tags stripped from the id)."""
    from datetime import datetime

    out: dict[str, dict] = {}
    for row in csv.DictReader(io.StringIO(text)):
        raw = row.get("status", "")
        if not row.get("test") or not raw:
            continue
        # subunit2csv writes "failure" (and "error"); a test still "inprogress" or only "exists"
        # never finished: that is a failure too, never a silent drop.
        status = {"success": "success", "xfail": "success", "skip": "skip"}.get(raw, "fail")
        tid = re.sub(r"\[.*\]$", "", row["test"])
        n = 2
        base = tid
        while tid in out:  # the same id from two workers (a class's setUpClass skip): count both
            tid, n = f"{base} #{n}", n + 1
        secs = 0.0
        try:
            secs = (datetime.fromisoformat(row["stop_time"]) - datetime.fromisoformat(row["start_time"])).total_seconds()
        except (KeyError, TypeError, ValueError):
            pass
        out[tid] = {"status": status, "seconds": round(secs, 1)}
    return out


def run_tempest(d, regex: str = DEFAULT_REGEX, concurrency: int = 2, timeout_s: float = 5400,
                say=lambda m: None) -> TempestResult:
    """Set up and run Tempest from ``d``'s client host (module docstring).  Raises
    :class:`TempestError` when the set-up fails or stestr produced no result."""
    import time

    kinds = _kinds(d)
    fixtures = None
    if "nova-cloud-controller" in kinds and "glance" in kinds:
        from stackha.verify.fixtures import compute_fixtures

        say("fixtures: image, flavors")
        fixtures = compute_fixtures(d)
    c = d.client
    if "swift-proxy" in kinds:
        # Tempest's object-storage classes give their operator the reseller admin role
        # ([object-storage] reseller_admin_role, Swift keystoneauth's default name): it must
        # exist ("No \"ResellerAdmin\" role found" failed AccountQuotasTest's setUpClass).
        from stackha.engine.clouds import openstack_argv

        c.run(openstack_argv(d.name, "role", "create", "--or-show", "ResellerAdmin"), timeout=120, check=True)
    c.run(["mkdir", "-p", f"{WORKSPACE}/etc"], check=True)
    c.run(["chmod", "700", WORKSPACE], check=True)
    c.write_file(f"{WORKSPACE}/etc/tempest.conf", render_conf(d, fixtures), mode=0o600)
    c.write_file(f"{WORKSPACE}/.stestr.conf", f"[DEFAULT]\ntest_path={TEST_PATH}\ntop_dir={TOP_DIR}\n")
    c.write_file(f"{WORKSPACE}/exclude.txt", EXCLUDE.read_text())
    env = f"cd {WORKSPACE} && TEMPEST_CONFIG_DIR={WORKSPACE}/etc"
    if c.run(["test", "-d", f"{WORKSPACE}/.stestr"]).rc != 0:
        c.sh(f"{env} stestr init", timeout=60, check=True)
    say(f"tempest: stestr run --concurrency {concurrency} {regex}")
    t0 = time.monotonic()
    quoted = regex.replace("'", "'\\''")
    res = c.sh(f"{env} stestr run --concurrency {concurrency} --exclude-list exclude.txt '{quoted}' "
               f"> {WORKSPACE}/run.log 2>&1", timeout=timeout_s)
    seconds = time.monotonic() - t0
    out = c.sh(f"{env} stestr last --subunit | subunit2csv", timeout=300)
    # subunit2csv (like stestr last) exits 1 when the stream holds a failed test: its CSV is the
    # result all the same.  No parsable row at all is the error.
    tests = parse_csv(out.stdout)
    if not tests:
        tail = (c.read_file(f"{WORKSPACE}/run.log") or b"").decode(errors="replace")[-600:]
        raise TempestError(f"tempest produced no result (stestr rc {res.rc}): {tail}")
    return TempestResult(rc=res.rc, tests=tests, seconds=round(seconds, 1))


def failure_details(d, test_id: str, lines: int = 12) -> str:
    """The last ``lines`` lines of a failed test's traceback from ``stestr last`` (for the report)."""
    res = d.client.sh(f"cd {WORKSPACE} && stestr last --no-subunit-trace 2>/dev/null | "
                      f"grep -A{lines * 4} -F '{test_id}' | tail -{lines}", timeout=120)
    return res.stdout.strip()


def save(result: TempestResult, path: Path) -> None:
    import json

    path.write_text(json.dumps({"rc": result.rc, "seconds": result.seconds, "counts": result.counts(),
                                "tests": result.tests}, indent=2))

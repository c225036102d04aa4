"""stackha verify end to end on a real data tier (root; real Galera, RabbitMQ, HAProxy, keepalived).

The data tier of examples/lab-control-plane.yaml (keystone removed by an overlay, the VIP moved to a
free /24 so the demo's lab can run beside it) is deployed once for this module on lab ``ver<digits>``
and torn down at the end, also on failure.  Then:

- one short scenario (``galera-writer-kill``) runs end to end: kill -9 of the writer while the MySQL
  and AMQP probes run on the client host, stackha's recovery, the checker — 0 acknowledged writes
  lost, a JSON report and a PNG timeline written;
- the checker is shown able to fail on real data: an acknowledged row is deleted behind the probes'
  back before the ids are read back, and the verdict is "lost".
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "examples" / "lab-control-plane.yaml"


@pytest.fixture(scope="module")
def data_tier(tmp_path_factory):
    import os

    if os.geteuid() != 0:
        pytest.fail("lab tests need root: run `make test` as root")
    from stackha import cli
    from stackha.cli.deploy import run_deploy
    from stackha.engine.deploy import Deployment
    from stackha.hosts.lab import teardown
    from stackha.verify.labs import free_vip_subnet, vip_overlay

    state = tmp_path_factory.mktemp("verify-state")
    saved = cli.settings.state_dir
    cli.settings.state_dir = state
    prefix = "ver" + "".join(secrets.choice("0123456789") for _ in range(5))
    overlay = vip_overlay(BUNDLE, free_vip_subnet(), state / "overlay.yaml")
    doc = yaml.safe_load(overlay.read_text())
    doc["applications"]["keystone"] = None  # the data tier only
    overlay.write_text(yaml.safe_dump(doc))
    try:
        report = run_deploy(BUNDLE, [overlay], prefix, quiet=True)
        assert not report.failed and not report.waiting, (report.failed, report.waiting)
        yield Deployment.open(prefix, state)
    finally:
        if Deployment.exists(prefix, state):
            Deployment(prefix, state).destroy()
        else:
            teardown(prefix, state)
        cli.settings.state_dir = saved


def test_galera_writer_kill_end_to_end(data_tier):
    from stackha.verify import scenarios as sc

    d = data_tier
    out = Path(d.dir) / "verify"
    reports = sc.run_scenarios(d, ["galera-writer-kill"], 1, out)
    assert len(reports) == 1
    rep = reports[0]
    assert rep.verdict == "ok", rep.error
    assert set(rep.probes) == {"mysql", "amqp"}
    m = rep.probes["mysql"]
    assert m["acknowledged"] > 50 and m["lost"] == 0 and m["verdict"] == "ok"
    # the kill really interrupted writes: there is a gap well above the 50 ms probe interval
    assert m["longest_gap_ms"] > 200
    assert rep.probes["amqp"]["lost"] == 0 and rep.probes["amqp"]["acknowledged"] > 50
    assert rep.fault.startswith("kill -9 mariadbd on ")
    assert rep.recovery_s is not None
    saved = json.loads(Path(rep.files["report"]).read_text())
    assert saved["probes"]["mysql"]["lost"] == 0
    png = Path(rep.files["timeline"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every unit active again after stackha's recovery
    from stackha.verify.faults import not_active_units

    assert not_active_units(d.status()) == []


def test_checker_reports_a_deleted_acknowledged_write_as_lost(data_tier):
    from stackha.services import operator_for
    from stackha.verify.probes import Probes

    d = data_tier
    probes = Probes(d, f"losetest{int(time.time())}", ["mysql"])
    try:
        probes.prepare()
        probes.start()
        probes.wait_warm(20, 60)
        probes.stop()
        acked = [r["id"] for r in probes.read("mysql") if r.get("ok") and "op" in r]
        victim = acked[len(acked) // 2]
        g = next(c for c in d.contexts().values() if c.kind == "galera")
        user, password = operator_for("galera").client_credentials(g)
        cfg = probes._configs["mysql"]["mysql"]
        res = d.client.run(["mariadb", "-h", str(g.vip.ip), "-u", user, f"-p{password}", cfg["database"],
                            "-e", f"DELETE FROM {cfg['table']} WHERE id = '{victim}'"], timeout=30)
        assert res.ok, res.stderr
        data = probes.collect()
        result = data.results()["mysql"]
        assert result.verdict == "lost"
        assert result.lost == 1 and result.lost_ids == [victim]
    finally:
        probes.cleanup()

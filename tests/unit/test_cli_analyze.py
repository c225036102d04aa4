"""``stackha analyze``: exit codes, output formats, and the corpus of malformed bundles."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from stackha.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BAD = ROOT / "tests" / "data" / "bad"
BAD_FILES = sorted(BAD.glob("*.yaml"))


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def expected_paths(path: Path) -> list[str]:
    for line in path.read_text().splitlines():
        m = re.match(r"#\s*expect:\s*(.+)$", line)
        if m:
            return [p.strip() for p in m.group(1).split("; ")]
    raise AssertionError(f"{path.name} has no '# expect:' line")


def test_corpus_is_not_empty() -> None:
    assert len(BAD_FILES) >= 15


@pytest.mark.parametrize("bad", BAD_FILES, ids=lambda p: p.name)
def test_malformed_bundle_exits_2_naming_its_path(bad: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["analyze", str(bad)], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("error: ")
    for path in expected_paths(bad):
        assert path in err, f"{path!r} not in:\n{err}"
    assert "fix:" in err


def test_lab_is_clean_and_reaches_four_nines(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["analyze", str(EXAMPLES / "lab-control-plane.yaml"), "--format", "json"], capsys)
    assert code == 0, out + err
    data = json.loads(out)
    assert data["summary"]["error"] == 0 and data["summary"]["warning"] == 0
    assert data["availability"]["cloud"]["figure"]["percent"] >= 99.99
    assert data["availability"]["cloud"]["path"] == ["haproxy", "keystone", "galera"]


def test_lab_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["analyze", str(EXAMPLES / "lab-control-plane.yaml")], capsys)
    assert code == 0
    assert "Findings: none" in out
    assert "Cloud availability for a user request" in out
    assert "Summary: 0 error(s), 0 warning(s)" in out
    for col in ("availability", "nines", "downtime/year", "downtime/day"):
        assert col in out


def test_findings_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = yaml.safe_load((EXAMPLES / "lab-control-plane.yaml").read_text())
    d["applications"]["rabbitmq-server"]["num_units"] = 1
    d["applications"]["rabbitmq-server"]["to"] = ["0"]
    f = tmp_path / "one-rabbit.yaml"
    f.write_text(yaml.safe_dump(d))
    code, out, _ = run(["analyze", str(f)], capsys)
    assert code == 1
    assert "spof" in out and "applications.rabbitmq-server.num_units" in out


def test_overlay_option_and_seed_004(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["analyze", str(EXAMPLES / "seed-004-openstack-base.yaml"), "--overlay",
                        str(EXAMPLES / "seed-004-masakari-overlay.yaml"), "--format", "json"], capsys)
    assert code == 1
    data = json.loads(out)
    assert data["overlays"] == [str(EXAMPLES / "seed-004-masakari-overlay.yaml")]
    codes = {(f["code"], f["path"]) for f in data["findings"]}
    assert ("missing-relation", "applications.masakari-mysql-router") in codes
    assert ("missing-certificates", "applications.masakari") in codes


def test_unit_availability_flag(capsys: pytest.CaptureFixture[str]) -> None:
    lab = str(EXAMPLES / "lab-control-plane.yaml")
    _, out, _ = run(["analyze", lab, "--format", "json", "--unit-availability", "0.99"], capsys)
    low = json.loads(out)["availability"]["cloud"]["figure"]["availability"]
    _, out, _ = run(["analyze", lab, "--format", "json"], capsys)
    high = json.loads(out)["availability"]["cloud"]["figure"]["availability"]
    assert low < 0.9999 < high  # the honest arithmetic: 0.99 per unit does not give four nines
    code, _, err = run(["analyze", lab, "--unit-availability", "1.5"], capsys)
    assert code == 2 and "unit-availability" in err


def test_bad_overlay_names_the_overlay_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ov = tmp_path / "ov.yaml"
    ov.write_text("applications:\n  keystone:\n    options: {vip_provider: carp}\n")
    code, _, err = run(["analyze", str(EXAMPLES / "lab-control-plane.yaml"), "--overlay", str(ov)], capsys)
    assert code == 2
    assert str(ov) in err and "applications.keystone.options.vip_provider" in err

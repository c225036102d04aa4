"""Bundles from the field (issue 11): hostile input, Juju's leniency, HA-design findings, exit codes.

Reproducers live in tests/data/hostile (refused: exit 2, one line, bounded time), tests/data/lenient
(accepted as Juju accepts them) and tests/data/ha-design (findings that match the HA design).
Paths that cannot be committed (a FIFO, a device, a directory, an oversized file) are made here.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from stackha.cli import main
from stackha.errors import EXIT_INTERNAL
from stackha.model import load_bundle
from stackha.model.analysis import analyze
from stackha.model.source import MAX_FILE_BYTES

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
HOSTILE = sorted((DATA / "hostile").glob("*.yaml"))
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def expect(path: Path) -> str:
    m = re.search(rb"^#\s*expect:\s*(.+)$", path.read_bytes(), re.M)
    assert m, f"{path.name} has no '# expect:' line"
    return m.group(1).decode()


def assert_refused_in_one_line(code: int, err: str, needle: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line
    assert len(err) < 1000, f"{len(err)} characters"
    assert not CONTROL.search(err), "a control character reached the terminal"
    assert needle in err, f"{needle!r} not in {err!r}"


# ----------------------------------------------------------------------------- 1. hostile input


def test_hostile_corpus_is_there() -> None:
    assert len(HOSTILE) >= 14


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p.name)
def test_hostile_bundle_is_refused_in_one_line(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["analyze", str(path)], capsys)
    assert_refused_in_one_line(code, err, expect(path))


@pytest.mark.timeout(60)
def test_hostile_value_in_an_overlay(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["analyze", str(ROOT / "examples" / "lab-control-plane.yaml"), "--overlay",
                        str(DATA / "hostile" / "alias-bomb.yaml")], capsys)
    assert_refused_in_one_line(code, err, "alias bomb")


@pytest.mark.timeout(60)
def test_fifo_is_refused_without_blocking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "bundle.yaml"
    os.mkfifo(fifo)  # nobody writes to it: opening it for reading would block forever
    code, _, err = run(["analyze", str(fifo)], capsys)
    assert_refused_in_one_line(code, err, "it is a FIFO (named pipe), not a regular file")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path,what", [("/dev/zero", "a character device"), ("/dev/null", "a character device")])
def test_device_is_refused(path: str, what: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["analyze", path], capsys)
    assert_refused_in_one_line(code, err, f"it is {what}, not a regular file")


def test_directory_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["analyze", str(DATA)], capsys)
    assert_refused_in_one_line(code, err, "a directory")


def test_oversized_file_is_refused_before_reading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:  # sparse: the size is checked before a byte is read
        f.truncate(MAX_FILE_BYTES + 1)
    code, _, err = run(["analyze", str(big)], capsys)
    assert_refused_in_one_line(code, err, f"more than the {MAX_FILE_BYTES} bytes stackha reads")


def test_error_quotes_only_an_excerpt_of_a_long_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "b.yaml"
    f.write_text("applications:\n  keystone: {charm: ch:keystone, num_units: 3, options: {vip: "
                 + "x" * 200_000 + "}}\n")
    code, _, err = run(["analyze", str(f)], capsys)
    assert_refused_in_one_line(code, err, "applications.keystone.options.vip")


# ----------------------------------------------------------------------------- 2. exit codes


def test_internal_error_exits_70_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import stackha.cli.analyze as cli_analyze

    def boom(*a: object, **k: object) -> None:
        raise KeyError("no such thing")

    monkeypatch.setattr(cli_analyze, "analyze", boom)
    monkeypatch.delenv("STACKHA_DEBUG", raising=False)
    code, _, err = run(["analyze", str(ROOT / "examples" / "lab-control-plane.yaml")], capsys)
    assert code == EXIT_INTERNAL == 70
    assert "Traceback" not in err
    line = " ".join(err.split())
    assert line.startswith("internal error: KeyError: 'no such thing' at stackha/cli/analyze.py:")
    assert "please report it" in line and "STACKHA_DEBUG=1" in line
    monkeypatch.setenv("STACKHA_DEBUG", "1")
    code, _, err = run(["analyze", str(ROOT / "examples" / "lab-control-plane.yaml")], capsys)
    assert code == 70 and "Traceback" in err


@pytest.mark.parametrize("argv,rc", [
    (["analyze", "examples/lab-control-plane.yaml"], 0),
    (["analyze", "examples/seed-000-itri.yaml"], 1),
    (["analyze", "tests/data/bad/bad-vip.yaml"], 2),
    (["analyze", "tests/data/hostile/alias-bomb.yaml"], 2),
    (["analyze"], 2),  # usage error
    (["analyze", "examples/lab-control-plane.yaml", "--unit-availability", "nan"], 2),
])
def test_analyze_exit_codes(argv: list[str], rc: int, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, _, err = run(argv, capsys)
    assert code == rc, err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- 3. Juju's leniency


def findings(path: Path) -> set[tuple[str, str]]:
    return {(f.code, f.path) for f in analyze(load_bundle(path)).findings}


def test_duplicate_key_warns_naming_both_lines_last_wins(capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / "lenient" / "duplicate-key.yaml"
    b = load_bundle(path)
    assert b.applications["keystone"].num_units == 1  # the last value, as Juju
    code, out, _ = run(["analyze", str(path), "--format", "json"], capsys)
    assert code == 1
    (dup,) = [f for f in json.loads(out)["findings"] if f["code"] == "duplicate-key"]
    assert dup["severity"] == "warning"
    assert "line 4" in dup["message"] and "line 8" in dup["message"] and "line 8" in dup["path"]


def test_relation_to_a_saas_offer_is_accepted() -> None:
    path = DATA / "lenient" / "saas.yaml"
    b = load_bundle(path)
    assert b.relations == []
    (rel,) = b.cross_model_relations
    assert {rel.a, rel.b} == {"keystone", "mysql"} and b.saas["mysql"]["url"] == "admin/database.mysql"
    report = analyze(b)
    assert not report.has_errors and not report.has_warnings  # the database is the offer
    assert ("cross-model", "applications.keystone") in {(f.code, f.path) for f in report.findings}
    again = load_bundle_dump(b)
    assert again.cross_model_relations == b.cross_model_relations and again.saas == b.saas


def load_bundle_dump(b):  # noqa: ANN001, ANN201 - round trip through the Juju format
    import yaml

    from stackha.model import load_bundle_text

    return load_bundle_text(yaml.safe_dump(b.dump()))


def test_relation_to_an_unknown_name_is_still_refused(tmp_path: Path) -> None:
    from stackha.model import BundleError

    f = tmp_path / "b.yaml"
    f.write_text((DATA / "lenient" / "saas.yaml").read_text().replace("mysql:shared-db]", "mysq:shared-db]"))
    with pytest.raises(BundleError) as exc:
        load_bundle(f)
    assert "did you mean 'mysql'" in str(exc.value)


def test_short_to_places_the_rest_as_juju_does() -> None:
    b = load_bundle(DATA / "lenient" / "short-to.yaml")
    assert [u.machine for u in b.units("galera")] == ["0", "1", "new:galera/2"]
    ks = b.units("keystone")
    assert [u.machine for u in ks] == [u.machine for u in b.units("galera")]  # lxd:galera, in turn
    assert all(u.container == "lxd" for u in ks)
    assert len({u.host_key for u in ks}) == 3
    hp = b.units("haproxy")
    assert hp[0].host_key == "2"
    assert [(u.machine, u.container) for u in hp[1:]] == [("new:haproxy/1", "lxd"), ("new:haproxy/2", "lxd")]


def test_endpoint_names_may_contain_underscores() -> None:
    b = load_bundle(DATA / "lenient" / "underscore-endpoint.yaml")
    (rel,) = b.relations
    assert {rel.a_endpoint, rel.b_endpoint} == {"cloud_compute"}


def test_empty_vip_means_no_vip() -> None:
    b = load_bundle(DATA / "lenient" / "empty-vip.yaml")
    assert b.applications["keystone"].options["vip"] == ""
    codes = {c for c, _ in findings(DATA / "lenient" / "empty-vip.yaml")}
    assert not codes & {"spof", "vip-provider", "hacluster-no-vip"}


# ----------------------------------------------------------------------------- 4. HA-design findings


def test_hacluster_beside_a_principal_without_vip_is_flagged() -> None:
    got = findings(DATA / "ha-design" / "hacluster-no-vip.yaml")
    flagged = {p for c, p in got if c == "hacluster-no-vip"}
    assert flagged == {"applications.cinder-hacluster"}  # glance has DNS HA, keystone a VIP


def test_local_charm_paths_map_to_their_kind() -> None:
    b = load_bundle(DATA / "ha-design" / "local-charms.yaml")
    kinds = {n: a.kind for n, a in b.applications.items()}
    assert kinds == {"keystone": "keystone", "hacluster": "hacluster", "masakari": "masakari",
                     "masakari-hacluster": "hacluster", "galera": "galera"}
    assert b.applications["hacluster"].subordinate
    codes = findings(DATA / "ha-design" / "local-charms.yaml")
    assert not any(c == "unknown-charm" for c, _ in codes)
    assert ("hacluster-no-vip", "applications.masakari-hacluster") in codes


def test_unknown_subordinate_with_zero_units_is_not_told_to_add_units() -> None:
    b = load_bundle(DATA / "ha-design" / "unknown-subordinate.yaml")
    agent = b.applications["ceilometer-agent"]
    assert agent.kind is None and agent.subordinate
    assert [u.principal for u in b.units("ceilometer-agent")] == [f"nova-compute/{i}" for i in range(3)]
    codes = findings(DATA / "ha-design" / "unknown-subordinate.yaml")
    assert ("unknown-charm", "applications.ceilometer-agent.charm") in codes
    assert not any(c == "no-units" for c, _ in codes)


def test_storage_split_per_zone_is_one_tier() -> None:
    b = load_bundle(DATA / "ha-design" / "swift-zones.yaml")
    report = analyze(b)
    assert not any(f.code in ("spof", "spof-zone") for f in report.findings), report.findings
    figs = report.availability.applications
    z1 = figs["swift-storage-z1"]
    assert z1.units == 3 and z1.machines == 3 and "tier" in z1.model
    assert figs["swift-storage-z2"].figure == z1.figure
    assert report.availability.cloud is not None
    assert report.availability.cloud.path == ["swift-proxy", "swift-storage-z1"]  # the tier once


def test_one_swift_zone_alone_is_still_a_spof(tmp_path: Path) -> None:
    text = (DATA / "ha-design" / "swift-zones.yaml").read_text()
    f = tmp_path / "b.yaml"
    f.write_text(text.replace("  - [swift-proxy:swift-storage, swift-storage-z2:swift-storage]\n", "")
                 .replace("  - [swift-proxy:swift-storage, swift-storage-z3:swift-storage]\n", ""))
    codes = findings(f)
    assert ("spof", "applications.swift-storage-z1.num_units") in codes


def test_kubernetes_bundle_reads_scale_and_maps_k8s_charms() -> None:
    b = load_bundle(DATA / "ha-design" / "kubernetes.yaml")
    assert b.is_kubernetes
    kinds = {n: (a.kind, a.num_units, a.subordinate) for n, a in b.applications.items()}
    assert kinds == {"mysql": ("galera", 3, False), "rabbitmq": ("rabbitmq", 3, False),
                     "keystone": ("keystone", 3, False),
                     "keystone-mysql-router": ("mysql-router", 1, False),
                     "traefik": (None, 1, False)}
    assert b.applications["rabbitmq"].to == [] and b.applications["rabbitmq"].extra["to"] == [
        "kubernetes.io/arch=amd64"]  # a node selector, not a machine
    assert len({u.host_key for u in b.units("mysql")}) == 3
    codes = {(f.code, f.path) for f in analyze(b).findings}
    assert ("spof", "applications.keystone-mysql-router.num_units") in codes
    assert not any(c == "quorum" for c, _ in codes)
    assert load_bundle_dump(b).dump() == b.dump()
    assert b.dump()["applications"]["mysql"]["scale"] == 3


@pytest.mark.parametrize("text,needle", [
    ("bundle: kubernetes\nmachines: {'0': {}}\napplications:\n  a: {charm: keystone-k8s, scale: 1}\n",
     "has no machines"),
    ("applications:\n  a: {charm: keystone-k8s, scale: 1, num_units: 2}\n", "both scale"),
    ("applications:\n  a: {charm: ch:keystone, num_units: 1, placement: 'a=b'}\n", "Kubernetes node selector"),
    ("bundle: vm\napplications:\n  a: {charm: ch:keystone, num_units: 1}\n", "not one Juju knows"),
])
def test_what_juju_refuses_in_kubernetes_bundles_stackha_refuses(text: str, needle: str) -> None:
    from stackha.model import BundleError, load_bundle_text

    with pytest.raises(BundleError) as exc:
        load_bundle_text(text)
    assert needle in str(exc.value)

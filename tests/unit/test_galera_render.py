"""GaleraOperator.render and its pure helpers: per-host config, secrets only in 0600 files, timers
that Galera accepts, the clustercheck responder's answers."""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stackha.errors import InvalidInput
from stackha.services import galera as g
from stackha.services.base import AppContext, MemorySecrets, Unit
from stackha.services.galera import GaleraOperator, Position, native_password_hash, parse_grastate

ADDRS = ["198.18.42.11", "198.18.42.12", "198.18.42.13"]


class NoIOHost:
    """A host that fails the test on any I/O: render must not touch hosts."""

    def __init__(self, name: str, address: str):
        self.name = name
        self.address = ipaddress.IPv4Address(address)

    def __getattr__(self, attr):
        raise AssertionError(f"render touched host.{attr}")


def app(n: int = 3, tuning: str = "stackha", options=None, secrets=None, same_host: bool = False) -> AppContext:
    units = [Unit(f"galera/{i}", NoIOHost("t-h1" if same_host else f"t-h{i + 1}", f"198.18.42.{11 + i}"))
             for i in range(n)]
    return AppContext("galera", "galera", options or {}, units, secrets or MemorySecrets(), tuning=tuning)


def mycnf(a: AppContext, unit: str = "galera/0") -> configparser.ConfigParser:
    text = GaleraOperator().render(a)[unit][g.CNF].content
    cp = configparser.ConfigParser(allow_no_value=True, interpolation=None)
    cp.read_string(text)
    return cp


def provider_options(a: AppContext, unit: str = "galera/0") -> dict[str, str]:
    raw = mycnf(a, unit)["mysqld"]["wsrep_provider_options"].strip('"')
    return dict(item.strip().split("=", 1) for item in raw.split(";"))


def seconds(iso: str) -> float:
    m = re.fullmatch(r"PT([0-9.]+)S", iso)
    assert m, iso
    return float(m.group(1))


@pytest.mark.parametrize("n", [0, 1, 2])
def test_fewer_than_three_units_are_refused(n):
    with pytest.raises(InvalidInput, match="at least 3 units"):
        GaleraOperator().render(app(n))


def test_two_units_on_one_host_are_refused():
    with pytest.raises(InvalidInput, match="one host"):
        GaleraOperator().render(app(same_host=True))


def test_unknown_tuning_is_refused():
    with pytest.raises(InvalidInput, match="tuning"):
        GaleraOperator().render(app(tuning="turbo"))


def test_every_path_and_address_is_per_host():
    a = app()
    for i, unit in enumerate(["galera/0", "galera/1", "galera/2"]):
        s = mycnf(a, unit)["mysqld"]
        addr = ADDRS[i]
        assert s["datadir"] == g.DATA and s["socket"] == g.SOCKET and s["pid-file"] == g.PID
        assert s["tmpdir"] == g.TMP
        assert s["bind-address"] == addr
        assert s["wsrep_node_address"] == addr
        assert s["wsrep_sst_receive_address"] == f"{addr}:{g.SST_PORT}"
        assert s["wsrep_sst_method"] == "rsync"
        assert s["user"] == "mysql"
        assert s["wsrep_cluster_address"] == "gcomm://" + ",".join(f"{x}:{g.GCOMM_PORT}" for x in ADDRS)
        po = provider_options(a, unit)
        assert po["gmcast.listen_addr"] == f"tcp://{addr}:{g.GCOMM_PORT}"
        assert po["ist.recv_addr"] == f"{addr}:{g.IST_PORT}"
        assert s["wsrep_provider"] == g.PROVIDER
    assert "skip-name-resolve" in mycnf(a)["mysqld"]


def test_secret_files_are_0600_and_secrets_appear_nowhere_else():
    a = app()
    files = GaleraOperator().render(a)
    secrets = [a.secrets.get(n) for n in ("root-password", "sst-password", "clustercheck-password")]
    for unit, per_unit in files.items():
        assert set(per_unit) == {g.CNF, g.ROOT_CNF, g.CHECK_CNF, g.CHECK_SCRIPT}
        assert per_unit[g.CNF].mode == 0o600 and per_unit[g.CNF].owner == "mysql"
        assert per_unit[g.ROOT_CNF].mode == 0o600 and per_unit[g.ROOT_CNF].owner == "root"
        assert per_unit[g.CHECK_CNF].mode == 0o600 and per_unit[g.CHECK_CNF].owner == "mysql"
        assert a.secrets.get("root-password") in per_unit[g.ROOT_CNF].content
        assert a.secrets.get("clustercheck-password") in per_unit[g.CHECK_CNF].content
        assert f"sst:{a.secrets.get('sst-password')}" in per_unit[g.CNF].content
        for path, f in per_unit.items():
            if f.mode & 0o077:
                assert not any(s in f.content for s in secrets), f"{unit} {path} is readable by others and holds a secret"


def test_render_is_deterministic_for_the_same_secrets():
    s = MemorySecrets()
    one = GaleraOperator().render(app(secrets=s))
    two = GaleraOperator().render(app(secrets=s))
    assert one == two


def test_stackha_timers_are_rendered_and_satisfy_galeras_constraints():
    po = provider_options(app(tuning="stackha"))
    for k, v in g.STACKHA_TIMERS.items():
        assert po[k] == v
    suspect = seconds(po["evs.suspect_timeout"])
    keepalive = seconds(po["evs.keepalive_period"])
    check = seconds(po["evs.inactive_check_period"])
    inactive = seconds(po["evs.inactive_timeout"])
    install = seconds(po["evs.install_timeout"])
    # Ranges Galera's evs::Proto enforces (gcomm/src/evs_proto.cpp check_range calls).
    assert keepalive <= suspect / 3
    assert check <= suspect / 2
    assert 2 * keepalive <= install <= inactive
    assert suspect <= inactive
    # Faster than the defaults (PT5S suspect), which gave a ≈ 6 s write gap.
    assert suspect < 5


def test_stock_tuning_renders_galeras_defaults():
    po = provider_options(app(tuning="stock"))
    assert not any(k.startswith("evs.") or k == "gmcast.peer_timeout" for k in po), po
    assert "# tuning = stock" in GaleraOperator().render(app(tuning="stock"))["galera/0"][g.CNF].content


def test_options_reach_the_config_and_bad_ones_are_refused():
    s = mycnf(app(options={"innodb-buffer-pool-size": "64M", "max-connections": 300, "cluster-name": "db1"}))["mysqld"]
    assert s["innodb_buffer_pool_size"] == "64M" and s["max_connections"] == "300"
    assert s["wsrep_cluster_name"] == "db1"
    assert provider_options(app(options={"gcache-size": "256M"}))["gcache.size"] == "256M"
    with pytest.raises(InvalidInput):
        GaleraOperator().render(app(options={"innodb-buffer-pool-size": "lots"}))
    with pytest.raises(InvalidInput):
        GaleraOperator().render(app(options={"gcache-size": "1; evs.suspect_timeout=PT0.1S"}))
    with pytest.raises(InvalidInput):
        GaleraOperator().render(app(options={"cluster-name": "a b"}))


def test_client_network_defaults_to_the_units_slash_24():
    op = GaleraOperator()
    assert op.client_network(app()) == ipaddress.IPv4Network("198.18.42.0/24")
    assert op.client_network(app(options={"client-network": "198.18.0.0/15"})) == ipaddress.IPv4Network("198.18.0.0/15")
    with pytest.raises(InvalidInput):
        op.client_network(app(options={"client-network": "not-a-net"}))


def test_frontend_is_one_writer_checked_on_9200():
    (fe,) = GaleraOperator().frontends(app())
    assert (fe.name, fe.port, fe.mode, fe.check_port, fe.check_path, fe.single_writer) == \
        ("mysql", 3306, "tcp", 9200, "/", True)
    assert fe.servers == (("galera-0", ADDRS[0]), ("galera-1", ADDRS[1]), ("galera-2", ADDRS[2]))


def test_client_credentials_come_from_the_secret_store():
    a = app()
    user, pw = GaleraOperator().client_credentials(a)
    assert user == g.CLIENT_USER and pw == a.secrets.get("client-password") and len(pw) >= 32


def test_ensure_database_refuses_unsafe_names_before_any_io():
    with pytest.raises(InvalidInput):
        GaleraOperator().ensure_database(app(), "keystone; DROP DATABASE mysql", "keystone")
    with pytest.raises(InvalidInput):
        GaleraOperator().ensure_database(app(), "keystone", "ke'ystone")


def test_parse_grastate():
    crashed = "# GALERA saved state\nversion: 2.1\nuuid:    e110e28f-e570-11f1-8771-8ef06f670d8e\nseqno:   -1\nsafe_to_bootstrap: 0\n"
    pos = parse_grastate(crashed)
    assert pos == Position("e110e28f-e570-11f1-8771-8ef06f670d8e", -1, False)
    assert not pos.readable
    clean = crashed.replace("seqno:   -1", "seqno:   42").replace("safe_to_bootstrap: 0", "safe_to_bootstrap: 1")
    pos = parse_grastate(clean)
    assert pos.seqno == 42 and pos.safe_to_bootstrap and pos.readable and str(pos).endswith(":42")
    assert parse_grastate("garbage") is None
    assert not Position(g.ZERO_UUID, 5).readable


def test_recovered_position_pattern_matches_mariadb_output():
    line = "2026-11-21  6:01:05 0 [Note] WSREP: Recovered position: e110e28f-e570-11f1-8771-8ef06f670d8e:7"
    assert g._POSITION_RE.findall(line) == [("e110e28f-e570-11f1-8771-8ef06f670d8e", "7")]


def test_native_password_hash_matches_mariadb():
    # SELECT PASSWORD('secret1') on MariaDB 10.11
    assert native_password_hash("secret1") == "*7C67218EF7410F248763DC99AEDC705367393C4A"


@pytest.mark.skipif(shutil.which("mariadbd") is None, reason="mariadbd not installed")
def test_mariadbd_accepts_the_rendered_config(tmp_path):
    for tuning in ("stackha", "stock"):
        cnf = tmp_path / f"{tuning}.cnf"
        cnf.write_text(GaleraOperator().render(app(tuning=tuning))["galera/1"][g.CNF].content)
        r = subprocess.run(["mariadbd", f"--defaults-file={cnf}", "--help", "--verbose"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "[ERROR]" not in r.stderr, r.stderr[-1000:]
        values = dict(line.split(None, 1) for line in r.stdout.splitlines() if line.startswith(("bind-address ", "wsrep-node-address ")))
        assert values == {"bind-address": ADDRS[1], "wsrep-node-address": ADDRS[1]}


# ----------------------------------------------------------------- the clustercheck responder
def run_clustercheck(tmp_path: Path, fake_output: str | None, request: str = "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                     options=None, tuning: str = "stackha"):
    """Run the rendered clustercheck.sh with a fake `mariadb` on PATH printing ``fake_output``
    (None: the client fails, as when mariadbd is down); the datadir is ``tmp_path``."""
    script = tmp_path / "clustercheck.sh"
    content = GaleraOperator().render(app(options=options, tuning=tuning))["galera/0"][g.CHECK_SCRIPT].content
    script.write_text(content.replace(g.DATA, str(tmp_path)))
    script.chmod(0o755)
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    fake = bindir / "mariadb"
    if fake_output is None:
        fake.write_text("#!/bin/sh\necho 'ERROR 2002 (HY000): Can not connect' >&2\nexit 1\n")
    else:
        (tmp_path / "out.txt").write_text(fake_output)
        fake.write_text(f"#!/bin/sh\ncat {tmp_path / 'out.txt'}\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", str(script)], input=request.encode(), capture_output=True, env=env, timeout=20)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.decode().partition("\r\n\r\n")
    length = int(re.search(r"Content-Length: (\d+)", head).group(1))
    assert len(body.encode()) == length
    return head.split("\r\n")[0], body


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
@pytest.mark.parametrize("output, expected", [
    ("wsrep_local_state\t4\nwsrep_ready\tON\n", "HTTP/1.1 200 OK"),
    ("wsrep_local_state\t2\nwsrep_ready\tON\n", "HTTP/1.1 503 Service Unavailable"),   # Donor/Desynced
    ("wsrep_local_state\t1\nwsrep_ready\tOFF\n", "HTTP/1.1 503 Service Unavailable"),  # Joining
    ("wsrep_local_state\t4\nwsrep_ready\tOFF\n", "HTTP/1.1 503 Service Unavailable"),  # non-Primary
    (None, "HTTP/1.1 503 Service Unavailable"),                                        # mariadbd down
])
def test_clustercheck_answers_200_only_when_synced_and_ready(tmp_path, output, expected):
    status, body = run_clustercheck(tmp_path, output)
    assert status == expected, body


def test_clustercheck_answers_even_without_a_request(tmp_path):
    status, _ = run_clustercheck(tmp_path, "wsrep_local_state\t4\nwsrep_ready\tON\n", request="")
    assert status == "HTTP/1.1 200 OK"


def test_clustercheck_answers_503_when_the_datadir_is_nearly_full(tmp_path):
    """A Synced node whose datadir's file system has less than clustercheck-min-free bytes free
    fails every write (1114 "table is full"): 503 under stackha's tuning, 200 with the check off
    and under stock tuning (the classic clustercheck)."""
    synced = "wsrep_local_state\t4\nwsrep_ready\tON\n"
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    above = f"{free // (1 << 30) + 1024}G"  # more than this file system has free
    status, body = run_clustercheck(tmp_path, synced, options={"clustercheck-min-free": above})
    assert status == "HTTP/1.1 503 Service Unavailable" and "bytes free" in body, body
    assert run_clustercheck(tmp_path, synced)[0] == "HTTP/1.1 200 OK"  # 64M default: plenty here
    assert run_clustercheck(tmp_path, synced, options={"clustercheck-min-free": "0"})[0] == "HTTP/1.1 200 OK"
    status, _ = run_clustercheck(tmp_path, synced, options={"clustercheck-min-free": above}, tuning="stock")
    assert status == "HTTP/1.1 503 Service Unavailable"  # an explicit option applies to stock too
    assert GaleraOperator().min_free_bytes(app(tuning="stock")) == 0
    assert GaleraOperator().min_free_bytes(app()) == 64 << 20
    with pytest.raises(InvalidInput, match="clustercheck-min-free"):
        GaleraOperator().render(app(options={"clustercheck-min-free": "lots"}))

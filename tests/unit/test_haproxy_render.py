"""HAProxyOperator.render: pure, deterministic, and the config says what the docs promise."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess

import pytest

from stackha.errors import InvalidInput
from stackha.services import haproxy as hx
from stackha.services.base import AppContext, Frontend, MemorySecrets, Unit
from stackha.services.haproxy import HAProxyOperator

VIP = ipaddress.IPv4Interface("198.18.42.250/24")


class NoIOHost:
    """A host that fails the test on any I/O: render must not touch hosts."""

    def __init__(self, name: str, address: str):
        self.name = name
        self.address = ipaddress.IPv4Address(address)

    def __getattr__(self, attr):
        raise AssertionError(f"render touched host.{attr}")


def galera(balance: str = "roundrobin") -> Frontend:
    return Frontend(app="galera", name="mysql", port=3306, mode="tcp", check_path="/", check_port=9200,
                    single_writer=True, balance=balance,
                    servers=(("galera/0", "198.18.42.13"), ("galera/1", "198.18.42.14"), ("galera/2", "198.18.42.15")))


def keystone(balance: str = "leastconn", mode: str = "http", port: int = 5000) -> Frontend:
    return Frontend(app="keystone", name="keystone", port=port, mode=mode, check_path="/v3", balance=balance,
                    servers=(("keystone/0", "198.18.42.16"), ("keystone/1", "198.18.42.17")))


def app(tuning: str = "stackha", frontends=None, vip=VIP, options=None, secrets=None) -> AppContext:
    units = [Unit("lb/0", NoIOHost("t-h1", "198.18.42.11")), Unit("lb/1", NoIOHost("t-h2", "198.18.42.12"))]
    return AppContext("lb", "haproxy", options or {}, units, secrets or MemorySecrets(), vip=vip, tuning=tuning,
                      frontends=[galera(), keystone()] if frontends is None else frontends)


def cfg(a: AppContext, unit: str = "lb/0") -> str:
    files = HAProxyOperator().render(a)[unit]
    assert list(files) == [hx.CONFIG_PATH]
    return files[hx.CONFIG_PATH].content


def section(text: str, header: str) -> str:
    """The lines of one config section (from its header to the next blank line)."""
    start = text.index(header + "\n")
    end = text.find("\n\n", start)
    return text[start:end if end != -1 else None]


def test_stackha_timers_are_fast_and_stock_timers_are_the_anchors():
    tuned, stock = cfg(app("stackha")), cfg(app("stock"))
    assert "default-server inter 500 fastinter 200 downinter 1000 rise 2 fall 2 on-marked-down shutdown-sessions" in tuned
    assert "option redispatch 1\n" in tuned and "retries 3" in tuned and "timeout connect 1000ms" in tuned
    # issue 6's baseline: check inter 2000 rise 2 fall 5, nothing else tuned
    assert "default-server inter 2000 rise 2 fall 5\n" in stock
    assert "shutdown-sessions" not in stock.replace("shutdown-backup-sessions", "")
    assert "option redispatch\n" in stock and "timeout connect 5000ms" in stock
    assert hx.timers("stackha").detection_ms() == 700
    assert hx.timers("stock").detection_ms() == 10000
    with pytest.raises(InvalidInput, match="tuning"):
        HAProxyOperator().render(app("fast"))


def test_http_api_checks_are_slower_than_database_checks_under_stackha_tuning():
    tuned, stock = cfg(app("stackha")), cfg(app("stock"))
    http = "default-server inter 2000 fastinter 500 downinter 2000 rise 2 fall 2 on-marked-down shutdown-sessions"
    ks = [l for l in tuned.split("\n\n") if "listen keystone" in l][0]
    db = [l for l in tuned.split("\n\n") if "listen mysql" in l][0]
    assert http in ks and "default-server" not in db  # mysql keeps the 500 ms of the defaults
    assert "default-server inter 2000 fastinter" not in stock


def test_frontends_bind_the_vip_and_backends_come_from_the_frontends():
    text = cfg(app())
    mysql = section(text, "listen mysql")
    assert "bind 198.18.42.250:3306" in mysql and "mode tcp" in mysql
    # single writer: the first server active, the others backup; the writer's return closes the backup's sessions
    assert "server galera-0 198.18.42.13:3306 check port 9200 on-marked-up shutdown-backup-sessions" in mysql
    assert "server galera-1 198.18.42.14:3306 check port 9200 backup" in mysql
    assert "server galera-2 198.18.42.15:3306 check port 9200 backup" in mysql
    assert "option httpchk GET /" in mysql
    ks = section(text, "listen keystone")
    assert "bind 198.18.42.250:5000" in ks and "mode http" in ks and "balance leastconn" in ks
    assert "option httpchk GET /v3" in ks
    assert "server keystone-0 198.18.42.16:5000 check\n" in ks + "\n" and "backup" not in ks
    # nothing binds a wildcard address
    assert not re.search(r"bind (\*|0\.0\.0\.0|:)", text)


@pytest.mark.parametrize("balance", ["roundrobin", "leastconn", "source", "uri"])
def test_every_balance_of_seed_001(balance):
    assert f"balance {balance}\n" in section(cfg(app(frontends=[keystone(balance)])), "listen keystone")


def test_bad_frontends_are_refused_with_the_reason():
    with pytest.raises(InvalidInput, match="balance uri needs mode http"):
        HAProxyOperator().render(app(frontends=[keystone("uri", mode="tcp")]))
    with pytest.raises(InvalidInput, match="balance 'random'"):
        HAProxyOperator().render(app(frontends=[keystone("random")]))
    with pytest.raises(InvalidInput, match="port 3306 is already used"):
        HAProxyOperator().render(app(frontends=[galera(), keystone(port=3306)]))
    with pytest.raises(InvalidInput, match="stats page"):
        HAProxyOperator().render(app(frontends=[keystone(port=hx.STATS_PORT)]))
    with pytest.raises(InvalidInput, match="no vip"):
        HAProxyOperator().render(app(vip=None))


def test_stats_page_and_socket_and_health_url():
    secrets = MemorySecrets()
    a = app(secrets=secrets)
    files = HAProxyOperator().render(a)
    for unit, host_ip in (("lb/0", "198.18.42.11"), ("lb/1", "198.18.42.12")):
        f = files[unit][hx.CONFIG_PATH]
        assert f.mode == 0o600  # holds the stats password
        stats = section(f.content, "listen stackha-stats")
        assert f"bind {host_ip}:8404" in stats  # the unit's own address, not the VIP
        assert f"stats auth stackha:{secrets.get(hx.STATS_SECRET)}" in stats
        assert f"stats socket {hx.ADMIN_SOCKET} mode 600 level admin expose-fd listeners" in f.content
        health = section(f.content, "frontend stackha-health")
        assert "bind 127.0.0.1:8405" in health and "monitor-uri /healthz" in health
    assert hx.health_url(a) == "http://127.0.0.1:8405/healthz"
    assert hx.health_url(app(options={"health_port": 9999})) == "http://127.0.0.1:9999/healthz"


def test_render_is_deterministic_and_the_secret_generated_once():
    secrets = MemorySecrets()
    assert HAProxyOperator().render(app(secrets=secrets)) == HAProxyOperator().render(app(secrets=secrets))


def test_no_frontends_needs_no_vip():
    text = cfg(app(frontends=[], vip=None))
    assert "listen stackha-stats" in text and "\nlisten mysql" not in text


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
@pytest.mark.parametrize("tuning", ["stackha", "stock"])
def test_haproxy_accepts_the_rendered_config(tmp_path, tuning):
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg(app(tuning, frontends=[galera("source"), keystone("uri")])))
    res = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "WARNING" not in (res.stdout + res.stderr), res.stdout + res.stderr


def test_http_frontends_replay_requests_a_dead_backend_never_answered_with_stackha_tuning():
    tuned = section(cfg(app("stackha", frontends=[keystone("roundrobin")])), "listen keystone")
    stock = section(cfg(app("stock", frontends=[keystone("roundrobin")])), "listen keystone")
    assert "retry-on conn-failure empty-response response-timeout" in tuned
    assert "retry-on" not in stock
    tcp = section(cfg(app("stackha", frontends=[galera("source")])), "listen mysql")
    assert "retry-on" not in tcp  # a TCP stream (a SQL session) is never replayed

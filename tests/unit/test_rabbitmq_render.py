"""RabbitMQ operator: pure render and URL logic (no root, no daemons)."""

from __future__ import annotations

import ipaddress
import re

import pytest

from stackha.errors import InvalidInput
from stackha.services.base import AppContext, MemorySecrets, Unit
from stackha.services.rabbitmq import (
    CONF_ENV_FILE,
    CONFIG_FILE,
    COOKIE,
    CTL_WRAPPER,
    PLUGINS_FILE,
    RabbitMQOperator,
    node_env,
    parse_transport_url,
)


class FakeHost:
    """Just what render needs: a name and an address."""

    def __init__(self, name: str, address: str):
        self.name = name
        self.address = ipaddress.IPv4Address(address)


def make_app(n: int = 3, tuning: str = "stackha") -> AppContext:
    units = [Unit(f"rabbitmq-server/{i}", FakeHost(f"demo-h{i + 1}", f"198.18.7.{11 + i}")) for i in range(n)]
    return AppContext("rabbitmq-server", "rabbitmq", {}, units, MemorySecrets(), tuning=tuning)


def conf_values(text: str) -> dict[str, str]:
    """key = value lines of a rabbitmq.conf (sysctl format), comments dropped."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@pytest.mark.parametrize("n", [0, 1, 2])
def test_fewer_than_three_units_refused(n):
    with pytest.raises(InvalidInput, match="at least 3 units"):
        RabbitMQOperator().render(make_app(n))


def test_unknown_tuning_refused():
    with pytest.raises(InvalidInput, match="tuning"):
        RabbitMQOperator().render(make_app(3, tuning="fastest"))


def test_every_unit_gets_its_own_files_under_srv():
    app = make_app(5)
    files = RabbitMQOperator().render(app)
    assert set(files) == {u.name for u in app.units}
    for unit in app.units:
        paths = set(files[unit.name])
        assert paths == {CONFIG_FILE, CONF_ENV_FILE, PLUGINS_FILE, COOKIE, CTL_WRAPPER}
        assert all(p.startswith("/srv/rabbitmq/") for p in paths)
        conf = conf_values(files[unit.name][CONFIG_FILE].content)
        assert conf["listeners.tcp.1"] == f"{unit.address}:5672"
        assert conf["cluster_partition_handling"] == "pause_minority"
        env = files[unit.name][CONF_ENV_FILE].content
        octets = ",".join(str(unit.address).split("."))
        assert "inet_dist_use_interface {" + octets + "}" in env
        assert "-start_epmd false" in env
        assert "epmd -names" in files[unit.name][CTL_WRAPPER].content  # the CLI never starts its own epmd


def test_stackha_tuning_shortens_ticks_and_heartbeats_stock_keeps_defaults():
    fast = conf_values(RabbitMQOperator().render(make_app(3, "stackha"))["rabbitmq-server/0"][CONFIG_FILE].content)
    assert int(fast["net_ticktime"]) == 10 and int(fast["heartbeat"]) == 10
    stock_files = RabbitMQOperator().render(make_app(3, "stock"))["rabbitmq-server/0"]
    stock = conf_values(stock_files[CONFIG_FILE].content)
    assert "net_ticktime" not in stock and "heartbeat" not in stock
    assert "net_ticktime" not in stock_files[CONF_ENV_FILE].content
    fast_env = RabbitMQOperator().render(make_app(3, "stackha"))["rabbitmq-server/0"][CONF_ENV_FILE].content
    assert 'CTL_ERL_ARGS="-kernel net_ticktime 10"' in fast_env


def test_cookie_is_one_generated_secret_0400_and_nowhere_else():
    app = make_app(3)
    files = RabbitMQOperator().render(app)
    cookie = app.secrets.get("erlang-cookie")
    assert re.fullmatch(r"[A-Za-z0-9]{32}", cookie)
    for unit_files in files.values():
        f = unit_files[COOKIE]
        assert f.content == cookie and f.mode == 0o400 and f.owner == "rabbitmq"
        others = [p for p, rf in unit_files.items() if p != COOKIE and cookie in rf.content]
        assert others == []


def test_render_is_pure_and_stable():
    app = make_app(3)
    assert RabbitMQOperator().render(app) == RabbitMQOperator().render(app)


def test_node_env_uses_long_ip_names_and_private_paths():
    unit = make_app(3).units[1]
    env = node_env(unit)
    assert env["RABBITMQ_NODENAME"] == "rabbit@198.18.7.12"
    assert env["RABBITMQ_USE_LONGNAME"] == "true"
    assert env["RABBITMQ_NODE_IP_ADDRESS"] == "198.18.7.12"
    assert env["HOME"] == "/srv/rabbitmq/home"
    for key in ("RABBITMQ_MNESIA_BASE", "RABBITMQ_LOG_BASE", "RABBITMQ_CONFIG_FILE", "RABBITMQ_CONF_ENV_FILE",
                "RABBITMQ_ENABLED_PLUGINS_FILE", "RABBITMQ_PID_FILE"):
        assert env[key].startswith("/srv/rabbitmq/"), key
    wrapper = RabbitMQOperator().render(make_app(3))["rabbitmq-server/1"][CTL_WRAPPER].content
    assert "export RABBITMQ_NODENAME='rabbit@198.18.7.12'" in wrapper


def test_transport_url_lists_every_broker():
    app = make_app(3)
    op = RabbitMQOperator()
    url = op.transport_url(app, "nova", "s3cret")
    assert url == ("rabbit://nova:s3cret@198.18.7.11:5672,nova:s3cret@198.18.7.12:5672,"
                   "nova:s3cret@198.18.7.13:5672/")
    brokers = parse_transport_url(url)
    assert [(b.host, b.port, b.user, b.password, b.vhost) for b in brokers] == [
        (f"198.18.7.{i}", 5672, "nova", "s3cret", "/") for i in (11, 12, 13)]
    assert brokers[0].amqp_url() == "amqp://nova:s3cret@198.18.7.11:5672/%2F"


def test_transport_url_quotes_vhost_and_credentials():
    app = make_app(3)
    url = RabbitMQOperator().transport_url(app, "a@b", "p:w/", vhost="open/stack")
    assert url.endswith("/open%2Fstack") and url.count("a%40b:p%3Aw%2F@") == 3
    brokers = parse_transport_url(url)
    assert {(b.user, b.password, b.vhost) for b in brokers} == {("a@b", "p:w/", "open/stack")}


def test_parse_transport_url_rejects_other_schemes():
    with pytest.raises(InvalidInput):
        parse_transport_url("http://u:p@198.18.7.11:5672/")


def test_client_credentials_are_stable_secrets():
    app = make_app(3)
    op = RabbitMQOperator()
    user, password = op.client_credentials(app)
    assert user == "stackha-client" and len(password) == 32
    assert op.client_credentials(app) == (user, password)


def test_no_frontends_brokers_are_listed_not_behind_a_vip():
    assert RabbitMQOperator().frontends(make_app(3)) == []

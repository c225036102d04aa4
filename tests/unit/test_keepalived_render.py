"""KeepalivedOperator.render and router-id allocation: pure and as documented."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess

import pytest
from hypothesis import given, strategies as st

from stackha.errors import InvalidInput
from stackha.services import keepalived as kx
from stackha.services.base import AppContext, MemorySecrets, Unit
from stackha.services.keepalived import KeepalivedOperator, allocate_router_id

VIP = ipaddress.IPv4Interface("198.18.42.250/24")


class NoIOHost:
    """A host that fails the test on any I/O: render must not touch hosts."""

    def __init__(self, name: str, address: str):
        self.name = name
        self.address = ipaddress.IPv4Address(address)
        self.vip_interface = "eth0"

    def __getattr__(self, attr):
        raise AssertionError(f"render touched host.{attr}")


def app(tuning: str = "stackha", n: int = 2, options=None, vip=VIP, related=None) -> AppContext:
    units = [Unit(f"vip/{i}", NoIOHost(f"t-h{i + 1}", f"198.18.42.{11 + i}")) for i in range(n)]
    return AppContext("vip", "keepalived", options or {}, units, MemorySecrets(), related=related or {},
                      vip=vip, tuning=tuning)


def conf(a: AppContext, unit: str = "vip/0") -> str:
    return KeepalivedOperator().render(a)[unit][kx.CONFIG_PATH].content


def test_unicast_peers_and_no_multicast():
    a = app(n=3)
    files = KeepalivedOperator().render(a)
    for i, unit in enumerate(("vip/0", "vip/1", "vip/2")):
        text = files[unit][kx.CONFIG_PATH].content
        me = f"198.18.42.{11 + i}"
        assert f"unicast_src_ip {me}" in text
        peers = re.search(r"unicast_peer \{\n(.*?)\n\s*\}", text, re.S).group(1).split()
        assert sorted(peers) == sorted({"198.18.42.11", "198.18.42.12", "198.18.42.13"} - {me})
        assert "mcast" not in text and "vrrp_strict" not in text
        assert "198.18.42.250/24 dev eth0" in text
    assert "priority 150" in files["vip/0"][kx.CONFIG_PATH].content
    assert "priority 140" in files["vip/1"][kx.CONFIG_PATH].content


def test_preemption_policy_nopreempt_with_every_unit_backup():
    for unit in ("vip/0", "vip/1"):
        text = conf(app(), unit)
        assert "state BACKUP" in text and "nopreempt" in text and "state MASTER" not in text
        assert "preempt_delay" not in text


def test_script_security_and_health_url_track_script():
    from stackha.services.base import AppContext as Ctx
    lb = Ctx("lb", "haproxy", {"health_port": 8499}, [], MemorySecrets())
    files = KeepalivedOperator().render(app(related={"lb": lb}))["vip/0"]
    text = files[kx.CONFIG_PATH].content
    assert "enable_script_security" in text and "script_user root" in text
    assert f'script "{kx.CHECK_SCRIPT}"' in text and "weight 0" in text
    check = files[kx.CHECK_SCRIPT]
    assert check.mode == 0o755 and check.owner == "root"
    assert "http://127.0.0.1:8499/healthz" in check.content
    assert "pidof" not in check.content and "killall" not in check.content
    assert f'notify "{kx.NOTIFY_SCRIPT}"' in text and files[kx.NOTIFY_SCRIPT].mode == 0o755


def test_stackha_timers_vs_stock():
    tuned, stock = conf(app("stackha")), conf(app("stock"))
    assert "vrrp_version 3" in tuned and "advert_int 0.2\n" in tuned
    assert re.search(r"chk_haproxy \{[^}]*interval 1\n[^}]*fall 1\n\s*rise 2", tuned)
    assert "max_auto_priority" in tuned and "vrrp_garp_master_delay 1\n" in tuned
    assert "vrrp_version 2" in stock and "advert_int 1\n" in stock
    assert re.search(r"chk_haproxy \{[^}]*interval 2\n", stock)
    assert "max_auto_priority" not in stock and "vrrp_garp_master_delay 5\n" in stock
    # keepalived 2.2.7 wants integer script intervals: a tuned run polls 8 times at 10/s instead
    tuned_check = KeepalivedOperator().render(app("stackha"))["vip/0"][kx.CHECK_SCRIPT].content
    stock_check = KeepalivedOperator().render(app("stock"))["vip/0"][kx.CHECK_SCRIPT].content
    assert "--fail-early" in tuned_check and "--rate 10/s" in tuned_check and tuned_check.count('"$u"') == 8
    assert "--rate" not in stock_check and stock_check.count('"$u"') == 1
    assert re.search(r"chk_haproxy \{[^}]*timeout 2\n", tuned)  # > the run's 0.7 s, so a slow run is not a failure
    t = kx.timers("stackha")
    assert t.master_down_s(150) < 0.7
    assert kx.timers("stock").master_down_s(140) > 3
    with pytest.raises(InvalidInput):
        conf(app("fast"))


def test_router_id_from_option_or_allocated_from_the_vip():
    assert "virtual_router_id 250\n" in conf(app())
    assert "virtual_router_id 7\n" in conf(app(options={"router_id": 7}))
    for bad in (0, 256, "x"):
        with pytest.raises(InvalidInput, match="router_id"):
            conf(app(options={"router_id": bad}))


def test_allocate_router_id():
    assert allocate_router_id(VIP, set()) == 250
    assert allocate_router_id("198.18.42.250/24", {250}) == 251
    assert allocate_router_id(ipaddress.IPv4Address("198.18.42.255"), {255}) == 1  # wraps
    assert allocate_router_id("198.18.42.0/24", set()) == 255  # .0 counts as 255
    with pytest.raises(ValueError, match="no free"):
        allocate_router_id(VIP, set(range(1, 256)))


@given(st.integers(0, 2**32 - 1), st.sets(st.integers(1, 255), max_size=254))
def test_allocate_router_id_is_free_in_range_and_deterministic(ip, taken):
    vrid = allocate_router_id(ipaddress.IPv4Address(ip), taken)
    assert 1 <= vrid <= 255 and vrid not in taken
    assert allocate_router_id(ipaddress.IPv4Address(ip), taken) == vrid


def test_distinct_vips_of_one_subnet_never_collide():
    ids = [allocate_router_id(f"198.18.42.{i}", set()) for i in range(200, 255)]
    assert len(set(ids)) == len(ids)


def test_refuses_without_vip_or_with_one_unit():
    with pytest.raises(InvalidInput, match="vip"):
        KeepalivedOperator().render(app(vip=None))
    with pytest.raises(InvalidInput, match="at least 2"):
        KeepalivedOperator().render(app(n=1))


@pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed")
@pytest.mark.parametrize("tuning", ["stackha", "stock"])
def test_keepalived_accepts_the_rendered_config(tmp_path, tuning):
    files = KeepalivedOperator().render(app(tuning))["vip/0"]
    text = files[kx.CONFIG_PATH].content.replace(kx.CHECK_SCRIPT, "/bin/true").replace(kx.NOTIFY_SCRIPT, "/bin/true")
    path = tmp_path / "keepalived.conf"
    path.write_text(text)
    res = subprocess.run(["keepalived", "-t", "-l", "-f", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr

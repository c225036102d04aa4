"""Issue 10's new faults and the minority check, with a scripted host (no lab): SIGSTOP/SIGCONT
freeze, nftables packet loss, a double fault, and the 2|1 partition check that the cut-off Galera
node leaves the Primary component and refuses a write."""

from __future__ import annotations

import time

import pytest

from stackha.hosts.base import CommandResult, HostError
from stackha.verify import faults
from stackha.verify import scenarios as sc


class ScriptedHost:
    """Just enough of a Host: records signals and commands; ``answers`` maps a substring of a
    command to a list of CommandResults returned in turn (the last one repeats)."""

    def __init__(self, name="h1", answers=None, running=True):
        self.name, self.answers, self.running = name, answers or {}, running
        self.signals: list[tuple[str, str]] = []
        self.commands: list[tuple[str, str | None]] = []

    def signal(self, daemon, sig="TERM"):
        self.signals.append((daemon, sig))
        return self.running

    def is_on(self):
        return True

    def machine(self):
        return self

    def run(self, argv, *, timeout=60.0, input=None, **kw):
        cmd = " ".join(argv) if isinstance(argv, list) else argv
        self.commands.append((cmd, input))
        for key, results in self.answers.items():
            if key in cmd:
                return results.pop(0) if len(results) > 1 else results[0]
        return CommandResult(command=cmd, rc=0, stdout="", stderr="", duration_s=0.0)


def res(rc=0, out="", err=""):
    return CommandResult(command="x", rc=rc, stdout=out, stderr=err, duration_s=0.0)


def test_freeze_stops_and_continues_the_daemon_once():
    h = ScriptedHost()
    f = faults.Freeze(h, "mariadbd")
    f.inject()
    assert h.signals == [("mariadbd", "STOP")]
    f.restore()
    f.restore()  # idempotent
    assert h.signals == [("mariadbd", "STOP"), ("mariadbd", "CONT")]


def test_freeze_of_a_daemon_that_is_not_running_is_an_error():
    with pytest.raises(HostError, match="not running"):
        faults.Freeze(ScriptedHost(running=False), "mariadbd").inject()


def test_packet_loss_installs_a_random_drop_table_sparing_ssh_and_removes_it():
    h = ScriptedHost()
    f = faults.PacketLoss(h, 30)
    rules = f.rules()
    assert "numgen random mod 100 < 30 drop" in rules and rules.count("drop") == 2
    assert "tcp dport 22 accept" in rules and "tcp sport 22 accept" in rules
    f.inject()
    assert any(inp == rules for _, inp in h.commands)
    f.restore()
    assert h.commands[-1][0] == f"nft delete table inet {faults.LOSS_TABLE}"
    with pytest.raises(ValueError):
        faults.PacketLoss(h, 0)


def test_packet_loss_refused_by_nft_is_an_error():
    h = ScriptedHost(answers={"nft -f -": [res(1, err="Error: syntax error")]})
    with pytest.raises(HostError, match="nft refused"):
        faults.PacketLoss(h, 30).inject()


def test_double_fault_injects_in_order_and_restores_in_reverse():
    a, b = ScriptedHost("a"), ScriptedHost("b")
    f = faults.Together([faults.Freeze(a, "x"), faults.Freeze(b, "y")])
    ev = f.inject()
    assert [e.host for e in ev] == ["a", "b"]
    ev = f.restore()
    assert [e.host for e in ev] == ["b", "a"]
    with pytest.raises(ValueError):
        faults.Together([faults.Freeze(a, "x")])


class _Cut:
    def __init__(self, host):
        self.host = host


def test_minority_check_passes_when_the_node_leaves_primary_and_refuses_the_write():
    h = ScriptedHost(answers={
        "wsrep_cluster_status": [res(out="wsrep_cluster_status\tPrimary\n"),
                                 res(out="wsrep_cluster_status\tnon-Primary\n")],
        "CREATE DATABASE": [res(1, err="ERROR 1047 (08S01): WSREP has not yet prepared node for application use")],
    })
    out = sc.minority_stops_writes(None, _Cut(h), time.time() + 5, poll_s=0.01)
    assert out["ok"], out
    assert out["facts"]["status"] == "non-Primary" and out["facts"]["write_refused"]


def test_minority_check_fails_when_the_node_stays_primary():
    h = ScriptedHost(answers={"wsrep_cluster_status": [res(out="wsrep_cluster_status\tPrimary\n")]})
    out = sc.minority_stops_writes(None, _Cut(h), time.time() + 0.3, poll_s=0.05)
    assert not out["ok"] and "stayed Primary" in out["problem"]


def test_minority_check_fails_when_the_cut_off_node_accepts_a_write():
    h = ScriptedHost(answers={"wsrep_cluster_status": [res(out="wsrep_cluster_status\tnon-Primary\n")],
                              "CREATE DATABASE": [res(0)]})
    out = sc.minority_stops_writes(None, _Cut(h), time.time() + 5, poll_s=0.01)
    assert not out["ok"] and "accepted a write" in out["problem"]


def test_at_least_twenty_scenarios_each_with_expectations_or_a_check():
    assert len(sc.SCENARIOS) >= 20
    for s in sc.SCENARIOS.values():
        assert s.needs, s.name
    assert sc.SCENARIOS["partition-controller"].during is sc.minority_stops_writes

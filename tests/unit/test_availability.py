"""Availability math (k of n, majority, serial, failover) and the estimate on bundles."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stackha.model import load_bundle, load_bundle_text
from stackha.model.availability import (
    DEFAULT_FAILOVER_SECONDS,
    Figure,
    estimate,
    failover_unavailability,
    format_duration,
    k_of_groups_unavailability,
    k_of_n,
    majority,
    nines,
    one_of_n,
    serial,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
avail = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def enumerate_k_of_n(k: int, n: int, a: float) -> float:
    """Availability by enumerating every up/down state of n units (independent of the code)."""
    total = 0.0
    for state in itertools.product((True, False), repeat=n):
        p = math.prod(a if up else 1 - a for up in state)
        if sum(state) >= k:
            total += p
    return total


@given(n=st.integers(0, 30), a=avail)
def test_one_of_n_never_decreases_when_a_unit_is_added(n: int, a: float) -> None:
    assert one_of_n(n + 1, a) >= one_of_n(n, a)


@given(n=st.integers(1, 10), a=avail)
def test_majority_equals_the_binomial_sum(n: int, a: float) -> None:
    k = n // 2 + 1
    binomial = sum(math.comb(n, j) * a**j * (1 - a) ** (n - j) for j in range(k, n + 1))
    assert majority(n, a) == pytest.approx(binomial, abs=1e-12)
    assert majority(n, a) == pytest.approx(enumerate_k_of_n(k, n, a), abs=1e-12)


@given(n=st.integers(0, 9), k=st.integers(0, 10), a=avail)
def test_k_of_n_matches_enumeration(n: int, k: int, a: float) -> None:
    assert k_of_n(k, n, a) == pytest.approx(enumerate_k_of_n(k, n, a), abs=1e-12)


@settings(max_examples=200)
@given(sizes=st.lists(st.integers(0, 3), max_size=5), k=st.integers(0, 8), a=avail)
def test_grouped_units_match_enumeration_over_machines(sizes: list[int], k: int, a: float) -> None:
    expected_u = 0.0
    for state in itertools.product((True, False), repeat=len(sizes)):
        p = math.prod(a if up else 1 - a for up in state)
        if sum(s for s, up in zip(sizes, state, strict=True) if up) < k:
            expected_u += p
    assert k_of_groups_unavailability(sizes, k, a) == pytest.approx(expected_u, abs=1e-12)


@given(n=st.integers(2, 6), a=st.floats(0.5, 0.9999))
def test_colocated_units_are_no_better_than_one_machine(n: int, a: float) -> None:
    assert k_of_groups_unavailability([n], 1, a) == pytest.approx(1 - a)
    assert k_of_groups_unavailability([1] * n, 1, a) <= 1 - a


@given(st.lists(avail, max_size=6))
def test_serial_is_the_product_and_never_above_its_weakest(avails: list[float]) -> None:
    s = serial(avails)
    assert s == pytest.approx(math.prod(avails), abs=1e-12)
    if avails:
        assert s <= min(avails) + 1e-12


def test_known_values() -> None:
    # the brief: with 0.99 per unit a majority of 3 is only 0.999702
    assert majority(3, 0.99) == pytest.approx(0.999702, abs=1e-9)
    assert one_of_n(3, 0.99) == pytest.approx(0.999999)
    assert majority(2, 0.99) == pytest.approx(0.99**2)  # both needed
    assert failover_unavailability(0.999, 5, 4) == pytest.approx(0.001 * 5 / 14400)
    with pytest.raises(ValueError):
        one_of_n(2, 1.5)
    with pytest.raises(ValueError):
        majority(0, 0.9)


@pytest.mark.parametrize(("percent", "year", "day"), [
    # seed 001's table of nines (its last per-day figure, 0.0086 s, is off by ten: 0.0864 s)
    (90, "~36.5 days", "~2.4 hours"),
    (99, "~3.65 days", "~14.4 minutes"),
    (99.9, "~8.76 hours", "~1.44 minutes"),
    (99.99, "~52.6 minutes", "~8.64 seconds"),
    (99.999, "~5.26 minutes", "~0.864 seconds"),
    (99.9999, "~31.5 seconds", "~0.0864 seconds"),
])
def test_seed_001_table_of_nines(percent: float, year: str, day: str) -> None:
    f = Figure.from_unavailability(1 - percent / 100)
    assert format_duration(f.downtime_per_year_s) == year
    assert format_duration(f.downtime_per_day_s) == day
    assert round(f.nines, 6) == round(nines(percent / 100), 6)


def test_percent_text_shows_the_nines() -> None:
    assert Figure.from_unavailability(2.98e-4).percent_text() == "99.9702 %"
    assert Figure.from_unavailability(0.01).nines_text() == "2.0"
    assert Figure.from_unavailability(0.0).percent_text() == "100 %"
    assert format_duration(1e-9 * 86400) == "~86.4 µs"
    assert format_duration(0) == "~0 seconds"


def test_lab_estimate_is_honest_arithmetic() -> None:
    b = load_bundle(EXAMPLES / "lab-control-plane.yaml")
    r = estimate(b)
    a, mttr_s = 0.999, 4 * 3600
    u = 1 - a
    failover = DEFAULT_FAILOVER_SECONDS
    galera_u = 3 * u**2 - 2 * u**3 + u * failover["haproxy-backup"] / mttr_s  # majority of 3 + one writer
    haproxy_u = u**2 + u * failover["keepalived"] / mttr_s                     # 1 of 2 + VIP failover
    keystone_u = u**3
    apps = r.applications
    assert apps["galera"].figure.unavailability == pytest.approx(galera_u, rel=1e-3)
    assert apps["haproxy"].figure.unavailability == pytest.approx(haproxy_u, rel=1e-3)
    assert apps["keystone"].figure.unavailability == pytest.approx(keystone_u, rel=1e-3)
    assert r.cloud is not None
    expected = (1 - galera_u) * (1 - haproxy_u) * (1 - keystone_u)
    assert r.cloud.figure.availability == pytest.approx(expected, abs=1e-9)
    assert r.cloud.figure.availability >= 0.9999
    # with the default 0.99 the same design does not reach four nines
    assert estimate(b, unit_availability=0.99).cloud.figure.availability < 0.9999  # type: ignore[union-attr]


def test_per_application_setting_wins() -> None:
    d = yaml.safe_load((EXAMPLES / "lab-control-plane.yaml").read_text())
    d2 = copy.deepcopy(d)
    d2["applications"]["keystone"].setdefault("options", {})["unit_availability"] = 0.9
    r = estimate(load_bundle_text(yaml.safe_dump(d2)), unit_availability=0.999)
    assert r.applications["keystone"].unit_availability == 0.9
    assert r.applications["galera"].unit_availability == 0.999
    assert r.applications["keystone"].figure.unavailability == pytest.approx(0.1**3)


def test_request_path_setting_and_failover_setting() -> None:
    d = yaml.safe_load((EXAMPLES / "lab-control-plane.yaml").read_text())
    d["stackha"]["request_path"] = ["haproxy", "keystone", "galera", "rabbitmq-server"]
    d["stackha"]["failover_seconds"] = 0
    r = estimate(load_bundle_text(yaml.safe_dump(d)))
    assert r.cloud is not None and not r.cloud.derived
    assert r.cloud.path[-1] == "rabbitmq-server"
    assert r.applications["haproxy"].figure.unavailability == pytest.approx(0.001**2)


def test_more_units_never_lower_an_applications_availability() -> None:
    base = "applications:\n  keystone: {charm: ch:keystone, num_units: %d}\n"
    figs = [estimate(load_bundle_text(base % n)).applications["keystone"].figure.availability
            for n in range(1, 6)]
    assert figs == sorted(figs)

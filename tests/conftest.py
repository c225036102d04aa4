"""Shared fixtures.

``lab_factory`` builds real labs (root only) with a unique prefix per test and a private state
directory, and tears each down in a finalizer — also when the test failed half-way.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/lab/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.lab)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def lab_factory(state_dir: Path):
    """``make(n_hosts, subnet=None) -> Lab``: a lab with prefix ``t<random>``; torn down after."""
    if os.geteuid() != 0:
        pytest.fail("lab tests need root: run `make test` as root")
    from stackha.hosts.lab import Lab, teardown

    made: list[str] = []

    def make(n_hosts: int = 3, subnet: str | None = None, prefix: str | None = None) -> "Lab":
        prefix = prefix or "t" + secrets.token_hex(3)
        made.append(prefix)
        return Lab.create(prefix, n_hosts, state_dir=state_dir, subnet=subnet)

    yield make
    for prefix in made:
        teardown(prefix, state_dir)


@pytest.fixture
def vip_overlay(tmp_path: Path):
    """``make(bundle_text_or_path) -> Path``: an overlay moving the example's VIP into a /24 no lab
    holds (198.18.101.0/24 upward), so lab tests can run beside the demo and each other."""
    import yaml

    from stackha.hosts.lab import LEASE_DIR

    def make(app: str = "haproxy") -> tuple[Path, str]:
        taken = {p.name for p in LEASE_DIR.iterdir()} if LEASE_DIR.is_dir() else set()
        for third in range(101, 256):
            if str(third) not in taken:
                break
        else:
            pytest.fail("no free /24 for a test lab")
        vip = f"198.18.{third}.250"
        path = tmp_path / f"overlay-{third}.yaml"
        path.write_text(yaml.safe_dump({"applications": {app: {"options": {"vip": vip}}}}))
        return path, vip

    return make

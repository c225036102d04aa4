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

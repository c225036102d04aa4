"""A cloud deployed once per test module, and the real clients run against it from the client host.

``deployed(bundle, tmp_path_factory, letter)`` deploys a bundle (an example) on a fresh lab whose
VIP lives in a /24 no other lab holds, yields a dict (``d``: the Deployment, ``prefix``,
``overlay``, ``report``, ``seconds``) and destroys the lab afterwards — also when a test failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@contextlib.contextmanager
def deployed(bundle: Path, tmp_path_factory, letter: str, vip_app: str = "haproxy", overlays: tuple[Path, ...] = ()):
    from stackha import cli
    from stackha.cli.deploy import run_deploy
    from stackha.engine.deploy import Deployment
    from stackha.hosts.lab import LEASE_DIR, teardown

    if os.geteuid() != 0:
        pytest.fail("lab tests need root")
    state = tmp_path_factory.mktemp("state")
    taken = {p.name for p in LEASE_DIR.iterdir()} if LEASE_DIR.is_dir() else set()
    third = next((t for t in range(101, 256) if str(t) not in taken), None)
    if third is None:
        pytest.fail("no free /24 for a test lab")
    overlay = tmp_path_factory.mktemp("overlay") / "vip.yaml"
    overlay.write_text(yaml.safe_dump({"applications": {vip_app: {"options": {"vip": f"198.18.{third}.250"}}}}))
    prefix = letter + secrets.token_hex(3)
    old = cli.settings.state_dir
    cli.settings.state_dir = state
    t0 = time.monotonic()
    try:
        report = run_deploy(bundle, [overlay, *overlays], prefix, quiet=True)
        yield {"prefix": prefix, "state": state, "overlay": overlay, "report": report,
               "seconds": time.monotonic() - t0, "d": Deployment.open(prefix, state)}
    finally:
        cli.settings.state_dir = old
        teardown(prefix, state)


def reused(spec: str) -> dict:
    """A cloud deployed by hand, named by ``PREFIX:STATE_DIR`` (``STACKHA_TEST_REUSE``): the
    same dict as :func:`deployed` without ``report``; it is left up."""
    from stackha import cli
    from stackha.engine.deploy import Deployment

    prefix, _, state = spec.partition(":")
    if not state:
        pytest.fail("STACKHA_TEST_REUSE must be PREFIX:STATE_DIR")
    cli.settings.state_dir = Path(state)
    return {"prefix": prefix, "state": Path(state), "report": None, "seconds": 0.0,
            "d": Deployment.open(prefix, Path(state))}


def ctx(d, kind: str):
    """The (first) application context of ``kind``."""
    return next(c for c in d.contexts().values() if c.kind == kind)


def openstack(d, *args: str, timeout: float = 120):
    """The real ``openstack`` CLI on the client host (clouds.yaml written by the deploy)."""
    from stackha.engine.clouds import openstack_argv

    return d.client.run(openstack_argv(d.name, *args), timeout=timeout)


def openstack_json(d, *args: str, timeout: float = 120):
    res = openstack(d, *args, "-f", "json", timeout=timeout)
    assert res.ok, f"openstack {' '.join(args)}: {res.stderr[-1500:]}"
    return json.loads(res.stdout)


def admin_env(d) -> dict[str, str]:
    """OS_* variables of the bootstrap admin (for clients that read no clouds.yaml, e.g. swift)."""
    from stackha.services import operator_for

    ks = ctx(d, "keystone")
    op = operator_for("keystone")
    return {"OS_AUTH_URL": op.auth_url(ks), "OS_USERNAME": "admin", "OS_PASSWORD": op.admin_password(ks),
            "OS_PROJECT_NAME": "admin", "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default",
            "OS_IDENTITY_API_VERSION": "3"}


def all_active(d) -> list[str]:
    """Units not active right now (empty: every unit is active)."""
    return [f"{u.unit}: {u.state.value} {u.message}" for st in d.status() for u in st.units
            if u.state.value != "active"]

"""The CLI's contract with users: one clear line for a user error, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args: str, state_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stackha", "--state-dir", str(state_dir), *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,needle,rc", [
    (("nosuch",), "No such command", 2),
    (("deploy",), "Missing argument", 2),
    (("status", "--lab", "nolab"), "nothing is deployed as 'nolab'", 1),
    (("status", "--lab", "nolab", "--format", "yaml"), "--format", 2),
    (("lab", "show", "nolab"), "no lab 'nolab'", 1),
    (("resolved", "galera/0", "--lab", "nolab"), "nothing is deployed", 1),
    (("supervise", "--lab", "nolab", "--interval", "0"), "--interval", 2),
])
def test_user_errors_are_one_line_without_traceback(tmp_path, args, needle, rc):
    r = run(*args, state_dir=tmp_path)
    assert r.returncode == rc, (r.returncode, r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout

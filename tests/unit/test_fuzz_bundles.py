"""Fuzzing ``stackha analyze`` with mutated example bundles (hypothesis).

Each example takes a bundle from examples/ or tests/data/{lenient,ha-design}, mutates its bytes
(inserted, deleted or replaced ranges; NUL, ESC, deep brackets, anchors, aliases, long digits,
tags, document markers) or its structure (a value anywhere replaced by another — huge or negative
numbers, inf/nan, strings with control characters, nested lists and maps —, a key renamed or
removed), writes it to a file and runs the real CLI on it, as a bundle or as an overlay of seed
004's base.  It asserts what every input must give: an exit code in {0, 1, 2} (never 70, never an
uncaught exception), no traceback, valid JSON on stdout when the bundle was accepted, and each run
within a deadline (hypothesis' ``deadline``, a hang detector set far above the ~20 ms a run takes).

Budget: ``STACKHA_FUZZ_EXAMPLES`` examples per test (default 150: a few seconds in ``make
test``); e.g. ``STACKHA_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/unit/test_fuzz_bundles.py``
for a longer run.  Failing examples are kept in hypothesis' database (.hypothesis/) and replayed first.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stackha.cli import main

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.glob("examples/*.yaml"), *ROOT.glob("tests/data/lenient/*.yaml"),
                  *ROOT.glob("tests/data/ha-design/*.yaml")])
BASE = ROOT / "examples" / "seed-004-openstack-base.yaml"
EXAMPLES = int(os.environ.get("STACKHA_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=20), derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
TIMEOUT = max(120, EXAMPLES // 2)  # seconds for the whole test (pytest-timeout): a hang fails it

TOKENS = [b"\x00", b"\x1b[2J", b"\x07", b"\xff\xfe", b"\xc3", b"[" * 3000, b"{" * 200, b"[" * 80,
          b"&a ", b"*a", b"*zz", b"<<: *a\n", b"!!int ", b"!!float ", b"!!binary ", b"!!python/object ",
          b"9" * 5000, b"9" * 120, b"-", b": ", b"- ", b"\t", b"\n---\n", b"...", b"'", b'"', b"\\e",
          b"? ", b"|", b">", b"~", b"null", b".inf", b".nan", b"2023-02-30", b"1e400", b"0x", b"lxd:",
          b"/", b"include-file:///dev/zero", b"saas:\n  x: {url: a.b}\n", b"bundle: kubernetes\n",
          b"num_units: 100000000", b"scale: 3", b"to: [", b"vip: ''", b"_", "\u202e".encode()]


def _run(bundle: bytes, as_overlay: bool) -> tuple[int, str, str]:
    import contextlib
    import io

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bundle.yaml"
        path.write_bytes(bundle)
        argv = ["analyze", str(BASE), "--overlay", str(path)] if as_overlay else ["analyze", str(path)]
        out, err = io.StringIO(), io.StringIO()
        code: int | str | None = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([*argv, "--format", "json"])
            except SystemExit as exc:
                code = exc.code
        return int(code or 0), out.getvalue(), err.getvalue()


def _check(bundle: bytes, as_overlay: bool) -> None:
    code, out, err = _run(bundle, as_overlay)
    assert "Traceback" not in err + out, err
    assert code in (0, 1, 2), f"exit {code}: {err[-2000:]}"
    if code in (0, 1):
        json.loads(out)
    else:
        assert err.startswith("error: "), err[:500]


@st.composite
def byte_mutants(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SOURCES)).read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "token", "dupline"]))
        if op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif op == "replace":
            data[at:at + draw(st.integers(1, 8))] = draw(st.binary(min_size=1, max_size=8))
        elif op == "token":
            data[at:at] = draw(st.sampled_from(TOKENS))
        else:
            start = data.rfind(b"\n", 0, at) + 1
            end = data.find(b"\n", at)
            end = len(data) if end < 0 else end + 1
            data[end:end] = data[start:end]
    return bytes(data)


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.integers(min_value=0),
    st.sampled_from([0, 1, 2, 3, 10**8, -1, 2**63, 10**99]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(["", " ", "\x1b[31m", "lxd:0", "new", "ch:keystone",
                                           "198.18.0.1", "a:b", "0", "keystone/0", "hacluster"]),
)
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def structure_mutants(draw: st.DrawFn) -> bytes:
    doc = yaml.safe_load(draw(st.sampled_from(SOURCES)).read_text())
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths or not isinstance(doc, dict):
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        key = path[-1]
        op = draw(st.sampled_from(["value", "value", "delete", "rename"]))
        if op == "value":
            parent[key] = draw(_values)
        elif op == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = parent.pop(key)
    return yaml.safe_dump(doc, allow_unicode=True).encode("utf-8", "surrogatepass")


@pytest.mark.timeout(TIMEOUT)
@FUZZ
@given(bundle=byte_mutants(), as_overlay=st.booleans())
@example(bundle=b'machines: {"0": {}, "1": {!!int }}\napplications: {}\n', as_overlay=False)  # pyyaml: IndexError
def test_byte_mutants_exit_0_1_or_2(bundle: bytes, as_overlay: bool) -> None:
    _check(bundle, as_overlay)


@pytest.mark.timeout(TIMEOUT)
@FUZZ
@given(bundle=structure_mutants(), as_overlay=st.booleans())
def test_structure_mutants_exit_0_1_or_2(bundle: bytes, as_overlay: bool) -> None:
    _check(bundle, as_overlay)

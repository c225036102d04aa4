"""The test tree's layout rules that pytest enforces only at collection time.

pytest's default ``prepend`` import mode imports each test file by its basename, so two
files named alike in tests/unit and tests/lab stop the whole collection ("import file
mismatch") — CI failed this way once, when tests/lab/test_instanceha.py joined
tests/unit/test_instanceha.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_modules_have_unique_basenames():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    clashes = sorted(n for n, k in names.items() if k > 1)
    assert not clashes, f"test files sharing a basename (rename one): {clashes}"

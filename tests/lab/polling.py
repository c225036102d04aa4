"""The one polling helper of the lab tests (never sleep-and-hope), on :func:`stackha.polling.wait_until`.

- :func:`poll` returns the predicate's first truthy value, or its last (falsy) value when the
  deadline passes — for ``assert poll(...)`` and for tests that look at what was there at the end;
- :func:`wait_for` returns the first truthy value or fails the test with ``what`` and the last
  value seen.

A predicate that raises fails the test at once (a ``next()`` without a default inside a lambda is
a bug, not "not yet"); pass ``ignore=(SomeError,)`` for errors that mean "not yet".
"""

from __future__ import annotations

from typing import Callable, TypeVar

import pytest

from stackha.polling import WaitTimeout, wait_until

T = TypeVar("T")


def poll(predicate: Callable[[], T], deadline_s: float, interval_s: float = 0.05, *,
         ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Call ``predicate`` every ``interval_s`` s until it returns a truthy value or ``deadline_s``
    seconds pass; returns its last value (falsy on timeout, None if it only ever raised an
    ignored error)."""
    try:
        return wait_until(predicate, deadline_s, interval_s, ignore=ignore)
    except WaitTimeout as exc:
        return None if isinstance(exc.last, BaseException) else exc.last  # type: ignore[return-value]


def wait_for(predicate: Callable[[], T], deadline_s: float, what: str, interval_s: float = 0.1, *,
             ignore: tuple[type[BaseException], ...] = ()) -> T:
    """The first truthy value of ``predicate``; ``pytest.fail`` naming ``what`` after ``deadline_s``."""
    try:
        return wait_until(predicate, deadline_s, interval_s, what=what, ignore=ignore)
    except WaitTimeout as exc:
        pytest.fail(str(exc))

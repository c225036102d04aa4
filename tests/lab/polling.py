"""Polling with a deadline for the lab tests (never sleep-and-hope)."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def poll(predicate: Callable[[], T], deadline_s: float, interval_s: float = 0.05) -> T:
    """Call ``predicate`` every ``interval_s`` s until it returns a truthy value or ``deadline_s``
    seconds pass; returns its last value (falsy on timeout)."""
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            return value
        time.sleep(interval_s)

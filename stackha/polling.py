"""The one polling helper of stackha's code: wait for evidence with a deadline, never sleep-and-hope.

Every "wait until X" in the operators, the hosts, the engine and verify goes through
:func:`wait_until` (built on tenacity's ``Retrying``), so deadlines, intervals and the error a
timeout raises are the same everywhere::

    from stackha.polling import WaitTimeout, wait_until

    status = wait_until(lambda: synced_status(unit), deadline_s=60, interval_s=0.1,
                        what=f"{unit.name}: joining the cluster")

- ``predicate()`` is called at once, then every ``interval_s`` seconds; its first *truthy* value
  is returned.
- After ``deadline_s`` seconds without one, :class:`WaitTimeout` is raised (a ``TimeoutError``)
  naming ``what``, the deadline and the predicate's last value; ``error=`` turns that message
  into the caller's own error type instead (``error=lambda msg: GaleraError(msg)``), so an
  operator still raises its component's error naming the unit.
- An exception from ``predicate`` aborts the wait at once (it is a verdict: "mariadbd exited"),
  unless its type is in ``ignore`` — then it counts as "not yet" (a host being powered off
  mid-read) and is kept as the last value for the message.
- Code that wants the last value rather than an error on timeout (a scenario recording that the
  VIP did *not* move) catches :class:`WaitTimeout` and reads ``.last``.

The lab tests have their own thin wrapper on this function (``tests/lab/polling.py``) that fails
the test with the same message.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from tenacity import RetryError, Retrying, retry_if_exception_type, retry_if_result, stop_after_delay, wait_fixed

T = TypeVar("T")

#: The default time between two calls of the predicate (s).
INTERVAL_S = 0.1


class WaitTimeout(TimeoutError):
    """:func:`wait_until` gave up: ``what`` was not true after ``deadline_s`` seconds.

    ``last`` is the predicate's last return value, or the last ignored exception; ``elapsed_s``
    how long the wait took (s)."""

    def __init__(self, what: str, deadline_s: float, last: object, elapsed_s: float):
        self.what, self.deadline_s, self.last, self.elapsed_s = what, deadline_s, last, elapsed_s
        detail = ""
        if isinstance(last, BaseException):
            detail = f" (last error: {type(last).__name__}: {last})"
        elif isinstance(last, str) and last:
            detail = f" ({last})"
        super().__init__(f"{what}: not done after {deadline_s:g} s{detail}")


def wait_until(predicate: Callable[[], T], deadline_s: float, interval_s: float = INTERVAL_S, *,
               what: str = "condition", ignore: tuple[type[BaseException], ...] = (),
               error: Callable[[str], BaseException] | None = None) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    ``deadline_s`` (s, ≥ 0): total time allowed, counted from the first call; ``interval_s`` (s,
    > 0): sleep between calls.  ``what``: a few words naming the awaited fact, for the error.
    ``ignore``: exception types that mean "not yet" (others propagate at once).  ``error``: a
    factory turning the timeout message into the exception to raise.

    Raises :class:`WaitTimeout` (or ``error(message)``) after ``deadline_s``; :class:`ValueError`
    for a negative deadline or a non-positive interval."""
    if deadline_s < 0:
        raise ValueError(f"deadline_s must be ≥ 0, not {deadline_s}")
    if interval_s <= 0:
        raise ValueError(f"interval_s must be > 0, not {interval_s}")
    last: list[object] = [None]

    def attempt() -> T | None:
        try:
            value = predicate()
        except ignore as exc:  # "not yet": keep it for the message
            last[0] = exc
            raise
        last[0] = value
        return value

    retry = retry_if_result(lambda v: not v)
    if ignore:
        retry = retry | retry_if_exception_type(ignore)
    t0 = time.monotonic()
    try:
        return Retrying(stop=stop_after_delay(deadline_s), wait=wait_fixed(interval_s), retry=retry,
                        reraise=False)(attempt)
    except RetryError:
        exc = WaitTimeout(what, deadline_s, last[0], time.monotonic() - t0)
        if error is not None:
            raise error(str(exc)) from None
        raise exc from None

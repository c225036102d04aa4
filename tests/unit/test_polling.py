"""stackha.polling.wait_until: returns the first truthy value, raises a typed timeout with the last
value, propagates unexpected errors at once, and treats ignored errors as "not yet"."""

from __future__ import annotations

import time

import pytest

from stackha.polling import WaitTimeout, wait_until


def test_returns_first_truthy_value():
    values = iter([0, None, "", {"state": "Synced"}, "later"])
    assert wait_until(lambda: next(values), 5, 0.001, what="synced") == {"state": "Synced"}


def test_timeout_names_what_and_last_value():
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout) as err:
        wait_until(lambda: "", 0.2, 0.02, what="galera/1: joining")
    took = time.monotonic() - t0
    assert 0.2 <= took < 2.0
    assert err.value.what == "galera/1: joining" and err.value.last == ""
    assert "galera/1: joining: not done after 0.2 s" in str(err.value)
    assert isinstance(err.value, TimeoutError)


def test_timeout_can_raise_the_callers_error():
    class ComponentError(Exception):
        pass

    with pytest.raises(ComponentError, match="vip moved: not done"):
        wait_until(lambda: False, 0.05, 0.01, what="vip moved", error=ComponentError)


def test_unexpected_exception_aborts_at_once():
    calls = []

    def pred():
        calls.append(1)
        raise RuntimeError("mariadbd exited")

    with pytest.raises(RuntimeError, match="mariadbd exited"):
        wait_until(pred, 10, 0.01)
    assert len(calls) == 1


def test_ignored_exception_means_not_yet():
    seq = iter([OSError("host powered off"), OSError("again"), 42])

    def pred():
        v = next(seq)
        if isinstance(v, Exception):
            raise v
        return v

    assert wait_until(pred, 5, 0.001, ignore=(OSError,)) == 42
    with pytest.raises(WaitTimeout) as err:
        wait_until(lambda: (_ for _ in ()).throw(OSError("down")), 0.05, 0.01, ignore=(OSError,))
    assert isinstance(err.value.last, OSError) and "last error: OSError: down" in str(err.value)


@pytest.mark.parametrize("deadline, interval", [(-1, 0.1), (1, 0), (1, -0.5)])
def test_bad_arguments(deadline, interval):
    with pytest.raises(ValueError):
        wait_until(lambda: True, deadline, interval)

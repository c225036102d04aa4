"""The benchmarks' frame (:func:`stackha.verify.labs.with_clouds`): every lab it deployed is torn
down — after the runs, after a failed deploy, on Ctrl-C — unless kept."""

from __future__ import annotations

import pytest

from stackha.verify import labs


@pytest.fixture
def torn(monkeypatch):
    down: list[str] = []
    monkeypatch.setattr(labs, "destroy_cloud", lambda r, say: down.append(r["lab"]))
    return down


def test_runs_only_when_every_deploy_worked_and_always_tears_down(torn):
    ran = []
    out = labs.with_clouds(["a", "b"], lambda t: {"lab": t}, ran.append, keep=False, say=print)
    assert ran == [out] and torn == ["a", "b"]
    torn.clear()
    out = labs.with_clouds(["a", "b"], lambda t: {"lab": t, **({"error": "x"} if t == "b" else {})},
                           lambda c: pytest.fail("ran with a failed deploy"), keep=False, say=print)
    assert torn == ["a", "b"]


def test_ctrl_c_marks_the_clouds_interrupted_and_tears_them_down(torn):
    def run(clouds):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        labs.with_clouds(["a"], lambda t: {"lab": t}, run, keep=False, say=print)
    assert torn == ["a"]


def test_keep_leaves_the_labs(torn):
    labs.with_clouds(["a"], lambda t: {"lab": t}, lambda c: None, keep=True, say=print)
    assert torn == []

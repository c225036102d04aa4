"""The checker: from probe logs and the final state, what the cloud acknowledged and kept.

Pure functions, no I/O.  Inputs are the JSONL records the probe agent wrote
(:mod:`stackha.verify.agent`): operation records ``{"probe", "op", "id", "start", "end", "ok",
"error"}`` (times in wall-clock seconds) and event records (``"event"`` key, ignored here).

Per probe the checker gives (:class:`ProbeResult`), over the scenario's window (``since`` to
``until``, wall s; ``fault_at`` the fault's injection):

- ``longest_gap_ms`` — the longest time between two consecutive acknowledged operations (their
  ``end`` times).  The stretch after the last success counts too, up to the window's end
  ``until`` (or, without ``until``, to the end of the last operation): a probe that stopped
  logging, or never succeeded again, has an *open* gap (``gap_open``) running to the window's end
  — it never scores less than the silence it left;
- ``failed`` — operations that were not acknowledged (with ``since``: in the fault's window;
  ``failed_total`` counts the whole run);
- ``lost`` — acknowledged operations missing from the final state (MySQL: rows read back through
  the VIP after recovery; AMQP: messages consumed).  Any → verdict ``"lost"``;
- ``failed_but_committed`` — operations reported failed that the final state holds anyway (a
  timeout after the commit, a confirm lost with its connection: LAB-NOTES "Galera");
- ``duplicates`` — extra copies in the final state (AMQP redeliveries after a consumer's
  connection broke before its ack);
- ``ended_early`` — the log's last operation ended more than ``slack_s`` before ``until`` (the
  probe died or stopped: nothing is known about the rest of the window);
- ``back_after_fault`` — an operation that started at or after ``fault_at`` was acknowledged.

Verdicts, most severe first: ``"lost"`` (an acknowledged operation is missing),
``"no-evidence"`` (the probe's log is missing or holds no operation: nothing was measured),
``"unverified"`` (the final state could not be read, so nothing can be claimed), ``"no-success"``
(the probe never succeeded: the measurement is void), ``"truncated"`` (the log ends before the
window does), ``"not-back"`` (no success after the fault), else ``"ok"``.  Every verdict but
``"ok"`` fails the run, and a probe whose verdict is one of :data:`INCOMPLETE_VERDICTS` meets no
expectation whatever its figures say.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterable

VERDICT_OK = "ok"
VERDICT_LOST = "lost"
VERDICT_UNVERIFIED = "unverified"
VERDICT_NO_SUCCESS = "no-success"
VERDICT_NO_EVIDENCE = "no-evidence"
VERDICT_TRUNCATED = "truncated"
VERDICT_NOT_BACK = "not-back"
#: Verdicts that make ``stackha verify`` exit non-zero.
FAILING_VERDICTS = (VERDICT_LOST, VERDICT_NO_EVIDENCE, VERDICT_UNVERIFIED, VERDICT_NO_SUCCESS,
                    VERDICT_TRUNCATED, VERDICT_NOT_BACK)
#: Verdicts saying the probe's log does not cover the window: its gaps prove nothing, so no
#: expectation on it is met.
INCOMPLETE_VERDICTS = (VERDICT_NO_EVIDENCE, VERDICT_NO_SUCCESS, VERDICT_TRUNCATED, VERDICT_NOT_BACK)
#: Seconds a healthy probe's last record may end before the window's end: the agent finishes the
#: operation in flight when told to stop, so its last record ends at most one interval (≤ 0.25 s)
#: before; the rest allows for reading the stop file and starting the last operation.
SLACK_S = 2.0
MAX_LISTED = 20  # ids listed in a result (counts are always complete)


def parse_jsonl(text: str | bytes | None) -> tuple[list[dict], int]:
    """Records of a JSONL log and the number of lines that did not parse (a torn last line of a
    killed writer).  ``None`` (no file) gives ``([], 0)``."""
    if text is None:
        return [], 0
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    out, bad = [], 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(rec, dict):
            out.append(rec)
        else:
            bad += 1
    return out, bad


def operations(records: Iterable[dict], op: str | None = None) -> list[dict]:
    """Operation records (those with ``op`` and ``id``), optionally only of kind ``op``, by start time."""
    ops = [r for r in records if "op" in r and "id" in r and (op is None or r["op"] == op)]
    return sorted(ops, key=lambda r: (r.get("start", 0.0), r.get("end", 0.0)))


@dataclass
class Gap:
    """The longest gap between acknowledged operations: ``ms``, from ``start`` to ``end`` (wall s).

    ``open``: no success closes it (it runs to the window's end, or to the last operation)."""

    ms: float = 0.0
    start: float | None = None
    end: float | None = None
    open: bool = False


def window(ops: list[dict], since: float | None) -> list[dict]:
    """The operations that ended at or after ``since`` (wall s), plus the last success before it
    (the anchor a gap that spans ``since`` starts from).  ``since`` None: every operation."""
    if since is None:
        return ops
    before = [r for r in ops if float(r.get("end", 0.0)) < since and r.get("ok")]
    anchor = [max(before, key=lambda r: float(r["end"]))] if before else []
    return anchor + [r for r in ops if float(r.get("end", 0.0)) >= since]


def longest_gap(ops: list[dict], since: float | None = None, until: float | None = None) -> Gap:
    """The longest time between consecutive successes' ``end`` times (ms), see the module doc;
    with ``since``, only over :func:`window` (the fault's window, not the probes' warm-up).

    The open gap after the last success runs to ``until`` (the window's end, wall s) when given,
    else to the end of the last operation.  With no success in the window the gap spans the whole
    window (from ``since``, or the first operation, to ``until`` or the last operation), open.
    With no operation and no window: a zero gap (the verdict says "no evidence")."""
    ops = window(ops, since)
    ends = sorted(float(r["end"]) for r in ops if r.get("ok"))
    last_end = max((float(r.get("end", r.get("start", 0.0))) for r in ops), default=None)
    close = until if until is not None else last_end
    if not ends:
        first = since if since is not None else min((float(r.get("start", 0.0)) for r in ops), default=None)
        if first is None or close is None or close <= first:
            return Gap()
        return Gap((close - first) * 1000.0, first, close, True)
    best = Gap()
    for a, b in zip(ends, ends[1:]):
        if (b - a) * 1000.0 > best.ms:
            best = Gap((b - a) * 1000.0, a, b, False)
    if close is not None and close > ends[-1] and (close - ends[-1]) * 1000.0 > best.ms:
        best = Gap((close - ends[-1]) * 1000.0, ends[-1], close, True)
    return best


def top_errors(ops: list[dict], n: int = 3) -> list[tuple[str, int]]:
    """The ``n`` most frequent error messages of failed operations, with their counts."""
    c = Counter((r.get("error") or "failed")[:160] for r in ops if not r.get("ok"))
    return c.most_common(n)


@dataclass
class ProbeResult:
    """What one probe saw during one scenario run (see the module docstring for each figure)."""

    probe: str
    operations: int = 0
    acknowledged: int = 0
    failed: int = 0
    failed_total: int = 0
    since: float | None = None
    longest_gap_ms: float = 0.0
    gap_start: float | None = None
    gap_end: float | None = None
    gap_open: bool = False
    lost: int = 0
    lost_ids: list[str] = field(default_factory=list)
    failed_but_committed: int = 0
    duplicates: int = 0
    final_state: bool = True
    until: float | None = None
    fault_at: float | None = None
    last_end: float | None = None
    ended_early: bool = False
    back_after_fault: bool | None = None
    errors: list[tuple[str, int]] = field(default_factory=list)
    verdict: str = VERDICT_OK

    @property
    def incomplete(self) -> bool:
        """The log does not cover the window (see :data:`INCOMPLETE_VERDICTS`)."""
        return self.verdict in INCOMPLETE_VERDICTS

    def to_dict(self) -> dict:
        return asdict(self)


def _base(probe: str, ops: list[dict], since: float | None = None, until: float | None = None,
          fault_at: float | None = None, slack_s: float = SLACK_S) -> ProbeResult:
    gap = longest_gap(ops, since, until)
    ok = sum(1 for r in ops if r.get("ok"))
    in_window = [r for r in window(ops, since) if since is None or float(r.get("end", 0.0)) >= since]
    last_end = max((float(r.get("end", r.get("start", 0.0))) for r in ops), default=None)
    res = ProbeResult(probe=probe, operations=len(ops), acknowledged=ok,
                      failed=sum(1 for r in in_window if not r.get("ok")),
                      failed_total=len(ops) - ok, since=since,
                      longest_gap_ms=round(gap.ms, 1), gap_start=gap.start, gap_end=gap.end, gap_open=gap.open,
                      until=until, fault_at=fault_at, last_end=last_end, errors=top_errors(in_window))
    if until is not None and last_end is not None:
        res.ended_early = last_end < until - slack_s
    if fault_at is not None:
        res.back_after_fault = any(r.get("ok") and float(r.get("start", 0.0)) >= fault_at for r in ops)
    return res


def _verdict(res: ProbeResult) -> ProbeResult:
    if res.lost:
        res.verdict = VERDICT_LOST
    elif not res.operations:
        res.verdict = VERDICT_NO_EVIDENCE
    elif not res.final_state:
        res.verdict = VERDICT_UNVERIFIED
    elif not res.acknowledged:
        res.verdict = VERDICT_NO_SUCCESS
    elif res.ended_early:
        res.verdict = VERDICT_TRUNCATED
    elif res.back_after_fault is False:
        res.verdict = VERDICT_NOT_BACK
    else:
        res.verdict = VERDICT_OK
    return res


def check_stored(probe: str, ops: list[dict], stored_ids: Iterable[str] | None,
                 since: float | None = None, until: float | None = None,
                 fault_at: float | None = None) -> ProbeResult:
    """A probe whose operations write ids that the final state holds (MySQL INSERTs, AMQP
    messages): ``stored_ids`` lists every copy found after recovery (repeats are duplicates);
    ``None`` means the final state could not be read (verdict ``unverified``).  ``since``,
    ``until`` and ``fault_at`` (wall s) as in the module docstring."""
    res = _base(probe, ops, since, until, fault_at)
    if stored_ids is None:
        res.final_state = False
        return _verdict(res)
    copies = Counter(stored_ids)
    acked = [r["id"] for r in ops if r.get("ok")]
    lost = [i for i in acked if i not in copies]
    res.lost, res.lost_ids = len(lost), lost[:MAX_LISTED]
    res.failed_but_committed = sum(1 for r in ops if not r.get("ok") and r["id"] in copies)
    res.duplicates = sum(n - 1 for n in copies.values() if n > 1)
    return _verdict(res)


def check_mysql(records: list[dict] | None, present_ids: Iterable[str] | None, since: float | None = None,
                until: float | None = None, fault_at: float | None = None) -> ProbeResult:
    """MySQL probe: every acknowledged INSERT's id must be in ``present_ids`` (read back through
    the VIP after recovery; None if that read failed).  ``records`` None: no log."""
    return check_stored("mysql", operations(records or [], "insert"), present_ids, since, until, fault_at)


def check_amqp(publish_records: list[dict] | None, consume_records: list[dict] | None,
               since: float | None = None, until: float | None = None,
               fault_at: float | None = None) -> ProbeResult:
    """AMQP probe: every confirmed publish must have been consumed; deliveries of one message
    beyond the first are duplicates.  ``consume_records`` None: the consumer's log is missing
    (the final state is unknown: ``unverified``)."""
    consumed = None if consume_records is None else [r["id"] for r in operations(consume_records, "consume")]
    return check_stored("amqp", operations(publish_records or [], "publish"), consumed, since, until, fault_at)


def check_keystone(records: list[dict] | None, since: float | None = None, until: float | None = None,
                   fault_at: float | None = None) -> ProbeResult:
    """Keystone probe (token issue + validate): gaps and failures; it stores nothing to lose."""
    return check_calls("keystone", operations(records or [], "token"), since, until, fault_at)


def check_calls(probe: str, ops: list[dict], since: float | None = None, until: float | None = None,
                fault_at: float | None = None) -> ProbeResult:
    """A probe of calls that store nothing (token issue, HTTP GETs through a VIP): gaps,
    failures and the evidence verdicts only."""
    return _verdict(_base(probe, ops, since, until, fault_at))


def first_success_after(ops: list[dict], t: float) -> float | None:
    """Seconds from wall time ``t`` to the end of the first acknowledged operation that started at
    or after ``t`` (None if there is none) — e.g. token issue after a cold start's power-on."""
    ends = [float(r["end"]) for r in ops if r.get("ok") and float(r.get("start", 0.0)) >= t]
    return round(min(ends) - t, 3) if ends else None


def failing(results: Iterable[ProbeResult]) -> list[ProbeResult]:
    """Results whose verdict must make the run fail (:data:`FAILING_VERDICTS`)."""
    return [r for r in results if r.verdict in FAILING_VERDICTS]

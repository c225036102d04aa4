"""Problems (input stackha cannot accept) and findings (what the analysis reports).

A :class:`Problem` makes a bundle invalid: :func:`stackha.model.load_bundle` collects every problem
of a bundle and its overlays and raises one :class:`BundleError` listing them all (exit code 2).
A :class:`Finding` is a remark on a valid bundle (a single point of failure, a key stackha ignores…)
with a severity; errors and warnings make ``stackha analyze`` exit 1.
"""

from __future__ import annotations

import reprlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from stackha.errors import InvalidInput, printable

__all__ = ["BundleError", "Finding", "Problem", "Severity", "excerpt"]

Severity = Literal["error", "warning", "info"]

#: Longest value excerpt in a message, characters.
EXCERPT_CHARS = 60
#: Most problems :class:`BundleError` lists (the others are counted).
MAX_LISTED_PROBLEMS = 50


class _ShortRepr(reprlib.Repr):
    """reprlib's bounded repr, also for integers too long for ``repr`` (Python refuses > 4300 digits)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = 4
        self.maxstring = self.maxother = self.maxlong = EXCERPT_CHARS

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 4 * EXCERPT_CHARS:
            return f"<an integer of {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)


_SHORT = _ShortRepr()


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable ``repr`` of ``value`` for a message: at most about ``limit`` characters.

    Nested containers are cut after 4 items and 3 levels, long strings in the middle, control
    characters escaped.  Bounded time and memory whatever ``value`` is (an alias bomb's expanded
    value, a 10,000-digit integer): never call ``repr`` on user data in a message, call this.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        text = _SHORT.repr_int(value, 0)
    else:
        text = _SHORT.repr(value)
    return printable(text, limit, newlines=False)


class Problem(BaseModel):
    """One reason a bundle cannot be accepted.

    Attributes:
        path: where, as a dotted path into the bundle (``applications.keystone.options.vip``,
            ``relations[2][1]``, ``machines.3``), or ``line L, column C`` for malformed YAML.
        message: what is wrong.
        fix: what to change.
        source: the file (or ``<bundle>`` / ``<overlay N>`` for text) the problem was found in,
            or None when it comes from the merged bundle.
    """

    model_config = ConfigDict(frozen=True)

    path: str
    message: str
    fix: str
    source: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}: {self.path}" if self.source else self.path
        return printable(f"{where}: {self.message} (fix: {self.fix})", 2000, newlines=False)


class BundleError(InvalidInput):
    """A bundle (or overlay) that cannot be loaded; exit code 2.

    Attributes:
        problems: every problem found (never only the first one), document by document.

    ``str(err)`` lists the problems one per line (the first :data:`MAX_LISTED_PROBLEMS`, then
    how many more), each printable (control characters escaped) and at most 2,000 characters.
    """

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("BundleError needs at least one problem")
        self.problems = list(problems)
        lines = [str(p) for p in self.problems[:MAX_LISTED_PROBLEMS]]
        if len(self.problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"… and {len(self.problems) - MAX_LISTED_PROBLEMS} more problem(s) "
                         "(fix the ones above first)")
        super().__init__("\n".join(lines))


class Finding(BaseModel):
    """One result of the analysis of a valid bundle.

    Attributes:
        severity: "error" (the design defeats HA: a single point of failure, a conflict),
            "warning" (a risk: a quorum cluster of 2, a missing relation, an unknown key),
            "info" (a fact worth knowing: a key or charm stackha ignores).
        code: a stable identifier (``spof``, ``quorum``, ``missing-relation``, …).
        path: dotted path into the bundle the finding is about.
        message: what was found and why it matters.
        fix: what to change ("" when nothing needs changing).
    """

    model_config = ConfigDict(frozen=True)

    severity: Severity
    code: str
    path: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        tail = f" (fix: {self.fix})" if self.fix else ""
        return printable(f"{self.severity}: {self.path}: {self.message}{tail}", 2000, newlines=False)

"""Problems (input stackha cannot accept) and findings (what the analysis reports).

A :class:`Problem` makes a bundle invalid: :func:`stackha.model.load_bundle` collects every problem
of a bundle and its overlays and raises one :class:`BundleError` listing them all (exit code 2).
A :class:`Finding` is a remark on a valid bundle (a single point of failure, a key stackha ignores…)
with a severity; errors and warnings make ``stackha analyze`` exit 1.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from stackha.errors import InvalidInput

__all__ = ["BundleError", "Finding", "Problem", "Severity"]

Severity = Literal["error", "warning", "info"]


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
        return f"{where}: {self.message} (fix: {self.fix})"


class BundleError(InvalidInput):
    """A bundle (or overlay) that cannot be loaded; exit code 2.

    Attributes:
        problems: every problem found (never only the first one), document by document.

    ``str(err)`` lists every problem, one per line.
    """

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("BundleError needs at least one problem")
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


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
        return f"{self.severity}: {self.path}: {self.message}{tail}"

"""Service operators, one per component kind (see :mod:`stackha.services.base`).

:func:`operator_for` maps a stackha kind to its operator through the one registry,
:data:`stackha.model.kinds.KINDS` (``KindInfo.operator``).
"""

from __future__ import annotations

import importlib

from stackha.services.base import Operator

_cache: dict[str, Operator] = {}


def operator_for(kind: str | None) -> Operator | None:
    """The operator instance for ``kind``, or None if stackha cannot deploy that kind yet."""
    from stackha.model.kinds import KINDS

    info = KINDS.get(kind or "")
    if info is None or info.operator is None:
        return None
    if kind not in _cache:
        module, cls = info.operator.split(":")
        _cache[kind] = getattr(importlib.import_module(module), cls)()
    return _cache[kind]

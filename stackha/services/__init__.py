"""Service operators, one per component kind (see :mod:`stackha.services.base`).

:func:`operator_for` maps a stackha kind (from :mod:`stackha.model.kinds`) to its operator.
"""

from __future__ import annotations

import importlib

OPERATORS: dict[str, str] = {
    "galera": "stackha.services.galera:GaleraOperator",
    "rabbitmq": "stackha.services.rabbitmq:RabbitMQOperator",
    "haproxy": "stackha.services.haproxy:HAProxyOperator",
    "keepalived": "stackha.services.keepalived:KeepalivedOperator",
    "keystone": "stackha.services.keystone:KeystoneOperator",
    "hacluster": "stackha.services.pacemaker:HAClusterOperator",
}

_cache: dict[str, object] = {}


def operator_for(kind: str | None):
    """The operator instance for ``kind``, or None if stackha cannot deploy that kind yet."""
    if not kind or kind not in OPERATORS:
        return None
    if kind not in _cache:
        module, cls = OPERATORS[kind].split(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                return None
            raise
        _cache[kind] = getattr(mod, cls)()
    return _cache[kind]

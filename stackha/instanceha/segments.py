"""Failover segments from the bundle, resolved to the host names Nova and Masakari know.

The masakari application's ``segments`` option (shape checked by
:func:`stackha.model.options.check_segments`) names nova-compute applications (all their units) or
units (``nova-compute/2``).  A compute unit's Nova host name is its machine's host name
(:mod:`stackha.services.openstack.nova`), and Masakari must use the same name (LAB-NOTES
"Masakari": the host name must agree in Pacemaker, Nova and Masakari).

The nova-compute applications are found through the relation graph: Masakari relates to Keystone
(and the database, RabbitMQ), not to nova-compute (seed 004), so every application reachable from
the masakari application over relations is searched.
"""

from __future__ import annotations

from dataclasses import dataclass

from stackha.errors import InvalidInput
from stackha.services.base import AppContext

#: Bundle spelling → Masakari's API spelling of a recovery method.
API_METHODS = {"reserved_host": "reserved_host", "auto": "auto", "rh_priority": "rh_priority",
               "auto_priority": "auto_priority"}


@dataclass(frozen=True)
class SegmentSpec:
    """One failover segment: ``name``; ``recovery_method`` (Masakari's: reserved_host, auto,
    rh_priority, auto_priority); ``hosts``: Nova host names of its ordinary hosts;
    ``reserved``: Nova host names of its reserved hosts (kept disabled in Nova until Masakari
    takes one); ``enabled``: the segment's ``enabled`` flag (API 1.2)."""

    name: str
    recovery_method: str
    hosts: tuple[str, ...]
    reserved: tuple[str, ...] = ()
    description: str = ""
    enabled: bool = True

    def as_request(self) -> dict:
        """The JSON shape :mod:`.masakari_api` takes."""
        return {"name": self.name, "recovery_method": self.recovery_method, "description": self.description,
                "enabled": self.enabled, "hosts": list(self.hosts), "reserved": list(self.reserved)}


def reachable(app: AppContext) -> dict[str, AppContext]:
    """Every application reachable from ``app`` over relations (``app`` included), by name."""
    seen: dict[str, AppContext] = {}
    todo = [app]
    while todo:
        a = todo.pop()
        if a.name in seen:
            continue
        seen[a.name] = a
        todo.extend(a.related.values())
    return seen


def compute_hosts(app: AppContext) -> dict[str, list[str]]:
    """``{application or unit name: [Nova host names]}`` of every nova-compute application
    reachable from ``app``."""
    out: dict[str, list[str]] = {}
    for other in reachable(app).values():
        if other.kind != "nova-compute":
            continue
        out[other.name] = [u.host.name for u in other.units]
        for u in other.units:
            out[u.name] = [u.host.name]
    return out


def resolve(app: AppContext) -> list[SegmentSpec]:
    """The segments the masakari application ``app`` declares, with Nova host names.

    Raises :class:`InvalidInput` (one line, naming the option) for a name that is no nova-compute
    application or unit, or a Nova host in two segments.  No option: no segments ([])."""
    raw = app.options.get("segments") or []
    known = compute_hosts(app)
    specs: list[SegmentSpec] = []
    owner: dict[str, str] = {}
    for i, seg in enumerate(raw):
        def hosts_of(key: str) -> list[str]:
            value = seg.get(key) or []
            names = [value] if isinstance(value, str) else list(value)
            out: list[str] = []
            for n in names:
                if n not in known:
                    choices = ", ".join(sorted(known)) or "none is related"
                    raise InvalidInput(f"applications.{app.name}.options.segments[{i}].{key}: {n!r} is no "
                                       f"nova-compute application or unit (known: {choices})")
                out += [h for h in known[n] if h not in out]
            return out

        hosts, reserved = hosts_of("hosts"), hosts_of("reserved_hosts")
        hosts = [h for h in hosts if h not in reserved]  # an application may include its reserved unit
        for h in hosts + reserved:
            if owner.setdefault(h, seg["name"]) != seg["name"]:
                raise InvalidInput(f"applications.{app.name}.options.segments[{i}]: host {h} is also in "
                                   f"segment {owner[h]!r}; Masakari finds a host by name, in one segment only")
        specs.append(SegmentSpec(name=seg["name"], recovery_method=API_METHODS[seg["recovery_method"]],
                                 hosts=tuple(hosts), reserved=tuple(reserved),
                                 description=str(seg.get("description", "")), enabled=bool(seg.get("enabled", True))))
    return specs

"""Unit placement: which machine or container each unit runs on.

The rule is documented on :class:`stackha.model.bundle.UnitPlacement`.  :func:`resolve_placements`
is pure; the loader uses its problems to reject a bundle, :meth:`Bundle.units` uses its result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stackha.model.bundle import UnitPlacement
from stackha.model.problems import Problem

if TYPE_CHECKING:
    from stackha.model.bundle import Bundle

__all__ = ["Directive", "parse_directive", "resolve_placements"]

_MACHINE_RE = re.compile(r"^\d+$")
_CONTAINER_RE = re.compile(r"^(?P<ctype>lxd|lxc|kvm)(?::(?P<target>.+))?$")
_UNIT_RE = re.compile(r"^(?P<app>[a-z][a-z0-9-]*)(?:/(?P<unit>\d+))?$")


@dataclass(frozen=True)
class Directive:
    """One parsed ``to:`` entry.

    ``what`` is "machine" (``target`` = machine id), "new" (a new machine), "container"
    (``ctype`` on ``target``: a machine id, "new", or a unit reference) or "unit" (colocation with
    ``target`` = ``app`` or ``app/U``).
    """

    what: str
    target: str = ""
    ctype: str | None = None


def parse_directive(text: str) -> Directive | None:
    """Parse one placement directive; None if it is not one stackha understands.

    Accepted: ``N``, ``new``, ``lxd``/``lxc``/``kvm`` (container on a new machine),
    ``lxd:N``, ``lxd:new``, ``lxd:app/U``, ``app/U``, ``app``.
    """
    text = text.strip()
    if _MACHINE_RE.match(text):
        return Directive("machine", text)
    if text == "new":
        return Directive("new")
    m = _CONTAINER_RE.match(text)
    if m:
        target = m.group("target") or "new"
        if target != "new" and not _MACHINE_RE.match(target) and not _UNIT_RE.match(target):
            return None
        return Directive("container", target, m.group("ctype"))
    if _UNIT_RE.match(text):
        return Directive("unit", text)
    return None


def _unit_ref(ref: str, index: int) -> tuple[str, int]:
    m = _UNIT_RE.match(ref)
    assert m is not None
    unit = m.group("unit")
    return m.group("app"), int(unit) if unit is not None else index


def _app_zone(options: dict[str, object], index: int) -> str | None:
    zone = options.get("zone")
    if isinstance(zone, list):
        return str(zone[index]) if index < len(zone) and zone[index] is not None else None
    if zone is None or isinstance(zone, (dict, bool)):
        return None
    return str(zone)


def resolve_placements(bundle: Bundle) -> tuple[dict[str, list[UnitPlacement]], list[Problem]]:
    """Place every unit of every application.

    Returns ``(units, problems)``: ``units`` maps each application name to its
    :class:`UnitPlacement` list (units whose placement is invalid are placed on a new machine so
    that the result is always complete); ``problems`` lists each invalid directive with its path
    (``applications.<app>.to[<i>]``): unknown syntax, a machine the bundle does not declare, a
    reference to a missing application or unit, to a subordinate, or a cycle.  Never raises.
    """
    apps = bundle.applications
    problems: list[Problem] = []
    placed: dict[tuple[str, int], UnitPlacement] = {}
    counters: dict[tuple[str, str], int] = {}
    deferred: list[tuple[str, int, Directive, str]] = []

    def new_container(machine: str, ctype: str) -> str:
        n = counters.get((machine, ctype), 0)
        counters[(machine, ctype)] = n + 1
        return f"{machine}/{ctype}/{n}"

    def zone_for(app: str, idx: int, machine: str) -> str | None:
        m = bundle.machines.get(machine)
        if m is not None and m.zone is not None:
            return m.zone
        return _app_zone(apps[app].options, idx)

    def put(app: str, idx: int, machine: str, container: str | None, host: str) -> None:
        placed[(app, idx)] = UnitPlacement(
            unit=f"{app}/{idx}", application=app, index=idx, machine=machine,
            container=container, host_key=host, zone=zone_for(app, idx, machine))

    def put_new(app: str, idx: int, ctype: str | None = None) -> None:
        machine = f"new:{app}/{idx}"
        if ctype is None:
            put(app, idx, machine, None, machine)
        else:
            put(app, idx, machine, ctype, f"{machine}/{ctype}/0")

    # Pass 1: directives that name no other unit, in bundle order.
    for name, app in apps.items():
        if app.subordinate:
            continue
        for idx in range(app.num_units):
            path = f"applications.{name}.to[{idx}]"
            text = app.to[idx] if idx < len(app.to) else "new"
            d = parse_directive(text)
            if d is None:
                problems.append(Problem(
                    path=path, message=f"placement {text!r} is not a placement directive",
                    fix="use a machine id (\"1\"), \"lxd:1\", \"lxc:1\", \"new\" or a unit (\"app/0\")"))
                put_new(name, idx)
            elif d.what == "machine":
                if d.target not in bundle.machines:
                    problems.append(Problem(
                        path=path, message=f"placement {text!r} names machine {d.target}, which "
                        "is not in machines", fix=f"add machine '{d.target}' under machines, or "
                        "place the unit on a declared machine"))
                    put_new(name, idx)
                else:
                    put(name, idx, d.target, None, d.target)
            elif d.what == "new":
                put_new(name, idx)
            elif d.what == "container" and d.target == "new":
                put_new(name, idx, d.ctype)
            elif d.what == "container" and _MACHINE_RE.match(d.target):
                if d.target not in bundle.machines:
                    problems.append(Problem(
                        path=path, message=f"placement {text!r} names machine {d.target}, which "
                        "is not in machines", fix=f"add machine '{d.target}' under machines, or "
                        "place the unit on a declared machine"))
                    put_new(name, idx, d.ctype)
                else:
                    put(name, idx, d.target, d.ctype, new_container(d.target, d.ctype or "lxd"))
            else:
                deferred.append((name, idx, d, path))

    # Pass 2: colocation with another unit (resolved in order, following chains).
    pending = {(n, i): (d, p) for n, i, d, p in deferred}
    visiting: set[tuple[str, int]] = set()

    def resolve(key: tuple[str, int]) -> UnitPlacement | None:
        if key in placed:
            return placed[key]
        if key not in pending:
            return None
        name, idx = key
        d, path = pending[key]
        ref = d.target
        if key in visiting:
            problems.append(Problem(path=path, message=f"placement {ref!r} is part of a cycle of "
                                    "colocated units", fix="place one unit of the cycle on a machine"))
            put_new(name, idx)
            return placed[key]
        visiting.add(key)
        other_app, other_idx = _unit_ref(ref, idx)
        target: UnitPlacement | None = None
        if other_app not in apps:
            problems.append(Problem(path=path, message=f"placement {ref!r} names application "
                                    f"{other_app!r}, which is not in the bundle",
                                    fix="name an application of the bundle, or a machine id"))
        elif apps[other_app].subordinate:
            problems.append(Problem(path=path, message=f"placement {ref!r} names subordinate "
                                    f"{other_app!r}, which has no units of its own",
                                    fix="name a unit of a principal application"))
        elif other_idx >= apps[other_app].num_units:
            problems.append(Problem(path=path, message=f"placement {ref!r} names unit "
                                    f"{other_app}/{other_idx}, but {other_app} has "
                                    f"{apps[other_app].num_units} unit(s)",
                                    fix=f"name a unit between {other_app}/0 and "
                                    f"{other_app}/{max(apps[other_app].num_units - 1, 0)}"))
        else:
            target = resolve((other_app, other_idx))
        visiting.discard(key)
        if key in placed:  # placed while resolving a cycle
            return placed[key]
        if target is None:
            put_new(name, idx, d.ctype if d.what == "container" else None)
        elif d.what == "unit":
            placed[key] = UnitPlacement(
                unit=f"{name}/{idx}", application=name, index=idx, machine=target.machine,
                container=target.container, host_key=target.host_key, zone=target.zone)
        else:
            ctype = d.ctype or "lxd"
            placed[key] = UnitPlacement(
                unit=f"{name}/{idx}", application=name, index=idx, machine=target.machine,
                container=ctype, host_key=new_container(target.machine, ctype),
                zone=target.zone)
        return placed[key]

    for key in pending:
        resolve(key)

    units: dict[str, list[UnitPlacement]] = {}
    for name, app in apps.items():
        if not app.subordinate:
            units[name] = [placed[(name, i)] for i in range(app.num_units)]
    for name, app in apps.items():
        if app.subordinate:
            subs: list[UnitPlacement] = []
            for principal in bundle.principals_of(name):
                for pu in units.get(principal, []):
                    i = len(subs)
                    subs.append(UnitPlacement(
                        unit=f"{name}/{i}", application=name, index=i, machine=pu.machine,
                        container=pu.container, host_key=pu.host_key, zone=pu.zone,
                        principal=pu.unit))
            units[name] = subs
    return units, problems

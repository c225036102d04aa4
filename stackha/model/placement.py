"""Unit placement: which machine or container each unit runs on.

The rule is documented on :class:`stackha.model.bundle.UnitPlacement`.  :func:`resolve_placements`
is pure; the loader uses its problems to reject a bundle, :meth:`Bundle.units` uses its result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stackha.model.bundle import UnitPlacement
from stackha.model.problems import Problem, excerpt

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


def _app_zone(options: dict[str, object], index: int) -> str | None:
    zone = options.get("zone")
    if isinstance(zone, list):
        return str(zone[index]) if index < len(zone) and zone[index] is not None else None
    if zone is None or isinstance(zone, (dict, bool)):
        return None
    return str(zone)


def _fill(to: list[str], num_units: int) -> list[str]:
    """One directive per unit, Juju's way (juju/bundlechanges ``placeUnitsForApplication``).

    A ``to`` shorter than ``num_units`` repeats its last directive when that is ``new``,
    ``<container>:new`` or an application without a unit number (``[lxd:]app``); the other units
    get ``new``.  An empty ``to`` gives every unit ``new``.
    """
    if len(to) >= num_units:
        return list(to[:num_units])
    last = "new"
    if to:
        d = parse_directive(to[-1])
        if d is not None and (d.what == "new" or (d.what == "container" and d.target == "new")
                              or (d.target and "/" not in d.target and not _MACHINE_RE.match(d.target))):
            last = to[-1]
    return list(to) + [last] * (num_units - len(to))


def resolve_placements(bundle: Bundle) -> tuple[dict[str, list[UnitPlacement]], list[Problem]]:
    """Place every unit of every application.

    Returns ``(units, problems)``: ``units`` maps each application name to its
    :class:`UnitPlacement` list (units whose placement is invalid are placed on a new machine so
    that the result is always complete); ``problems`` lists each invalid directive once with its
    path (``applications.<app>.to[<i>]``): unknown syntax, a machine the bundle does not declare, a
    reference to a missing application or unit, to a subordinate, or a cycle.  Never raises;
    linear in the number of units (chains of colocated units are followed without recursion).

    The rules are those of :class:`~stackha.model.bundle.UnitPlacement`: Juju's for a ``to``
    shorter than ``num_units`` and for ``[lxd:]app`` without a unit number, stackha's own for
    numbering containers.  A Kubernetes bundle has no machine placements: every unit (pod) is on
    a machine of its own.
    """
    apps = bundle.applications
    problems: list[Problem] = []
    reported: set[str] = set()
    placed: dict[tuple[str, int], UnitPlacement] = {}
    counters: dict[tuple[str, str], int] = {}
    pending: dict[tuple[str, int], tuple[Directive, str, tuple[str, int]]] = {}
    kubernetes = bundle.is_kubernetes

    def problem(path: str, message: str, fix: str) -> None:
        if path not in reported:
            reported.add(path)
            problems.append(Problem(path=path, message=message, fix=fix))

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

    # Pass 1: directives that name no other unit, in bundle order; colocations are recorded with
    # the unit they name (``app`` without a number: the next unit of app, Juju's rule).
    for name, app in apps.items():
        if app.subordinate:
            continue
        directives = ["new"] * app.num_units if kubernetes else _fill(app.to, app.num_units)
        next_of: dict[str, int] = {}
        for idx, text in enumerate(directives):
            path = f"applications.{name}.to[{min(idx, len(app.to) - 1) if app.to else idx}]"
            d = parse_directive(text)
            if d is None:
                problem(path, f"placement {excerpt(text)} is not a placement directive",
                        "use a machine id (\"1\"), \"lxd:1\", \"lxc:1\", \"new\" or a unit (\"app/0\")")
                put_new(name, idx)
            elif d.what == "new":
                put_new(name, idx)
            elif d.what == "container" and d.target == "new":
                put_new(name, idx, d.ctype)
            elif d.what in ("machine", "container") and _MACHINE_RE.match(d.target):
                if d.target not in bundle.machines:
                    problem(path, f"placement {text!r} names machine {d.target}, which is not in "
                            "machines", f"add machine '{d.target}' under machines, or place the "
                            "unit on a declared machine")
                    put_new(name, idx, d.ctype)
                elif d.what == "machine":
                    put(name, idx, d.target, None, d.target)
                else:
                    put(name, idx, d.target, d.ctype, new_container(d.target, d.ctype or "lxd"))
            else:
                other, _, unit = d.target.partition("/")
                if unit:
                    ref = (other, int(unit))
                else:
                    ref = (other, next_of.get(other, 0))
                    next_of[other] = ref[1] + 1
                    target = apps.get(other)
                    if target is not None and not target.subordinate and ref[1] >= target.num_units:
                        put_new(name, idx)  # Juju: no unit of app left to go beside
                        continue
                pending[(name, idx)] = (d, path, ref)

    # Pass 2: colocation with another unit, following chains iteratively.
    def check(key: tuple[str, int]) -> bool:
        d, path, (other, oidx) = pending[key]
        ref = d.target
        if other not in apps:
            problem(path, f"placement {ref!r} names application {other!r}, which is not in the "
                    "bundle", "name an application of the bundle, or a machine id")
        elif apps[other].subordinate:
            problem(path, f"placement {ref!r} names subordinate {other!r}, which has no units "
                    "of its own", "name a unit of a principal application")
        elif oidx >= apps[other].num_units:
            problem(path, f"placement {ref!r} names unit {other}/{oidx}, but {other} has "
                    f"{apps[other].num_units} unit(s)", f"name a unit between {other}/0 and "
                    f"{other}/{max(apps[other].num_units - 1, 0)}")
        else:
            return True
        return False

    def settle(key: tuple[str, int], target: UnitPlacement | None) -> UnitPlacement:
        d, _path, _ref = pending[key]
        name, idx = key
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
                container=ctype, host_key=new_container(target.machine, ctype), zone=target.zone)
        return placed[key]

    for start in pending:
        if start in placed:
            continue
        chain: list[tuple[str, int]] = []
        on_chain: set[tuple[str, int]] = set()
        key = start
        target: UnitPlacement | None = None
        while True:
            if key in placed:
                target = placed[key]
                break
            if key in on_chain:  # a cycle: its first unit goes to a new machine
                _d, path, _ref = pending[key]
                problem(path, f"placement {pending[key][0].target!r} is part of a cycle of "
                        "colocated units", "place one unit of the cycle on a machine")
                cut = chain.index(key)
                target = settle(key, None)
                for member in reversed(chain[cut + 1:]):  # the rest of the cycle follows it
                    settle(member, placed.get(pending[member][2]))
                chain, target = chain[:cut], placed[key]
                break
            if key not in pending:
                break  # a unit that is neither placed nor pending: reported by check()
            chain.append(key)
            on_chain.add(key)
            if not check(key):
                target = settle(chain.pop(), None)
                break
            key = pending[key][2]
        for key in reversed(chain):
            target = settle(key, target)

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

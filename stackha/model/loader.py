"""Load a Juju bundle and its overlays into a validated :class:`~stackha.model.bundle.Bundle`.

Reading files is the only I/O (:mod:`stackha.model.source`, which bounds sizes, nesting and alias
expansion).  Every problem of every document is collected and raised at once as a
:class:`~stackha.model.problems.BundleError` (exit code 2).  Messages quote values only as short
excerpts (:func:`~stackha.model.problems.excerpt`).

Where Juju is lenient stackha is too (checked against juju/charm's bundle verifier,
``bundledata.go``, and the deployer's placement code, juju/bundlechanges ``handlers.go``):

- a mapping key given twice is a warning naming both lines (``duplicate-key``); the last value wins;
- relations may end at a ``saas:`` entry (a cross-model offer); they are kept in
  :attr:`Bundle.cross_model_relations`, not analysed;
- a ``to:`` list shorter than ``num_units`` places the other units as Juju does (see
  :mod:`stackha.model.placement`); a longer one is refused, as Juju refuses it;
- endpoint names follow Juju's syntax, ``[a-z][a-z0-9]*`` then ``-`` or ``_`` separated parts
  (``nova-compute:cloud_compute`` is fine);
- ``scale:`` is another name for ``num_units`` (both non-zero is refused, as Juju does); in a
  Kubernetes bundle (``bundle: kubernetes``) ``to:``/``placement:`` are node selectors, not machine
  placements, ``machines:`` is refused and there are no subordinates;
- ``num_units`` is at most :data:`MAX_UNITS` per application and the bundle's units (subordinate
  units included) at most :data:`MAX_TOTAL_UNITS` — Juju has no such limit, but analysing more
  would not finish in bounded time.

Merge rules (Juju's overlay behaviour; where Juju leaves a case open, stackha's choice is noted):

- A file may hold several YAML documents (``---``): the first is the base, the others overlays
  applied in order, before the files given as overlays (``--overlay``), in order.
- YAML anchors and aliases (including ``<<:`` merge keys) resolve within one document; the
  ``variables:`` section is where OpenStack bundles keep anchored values.
- ``services:`` is the legacy name of ``applications:`` (a document may not have both).
- ``applications``: an application the overlay names with an empty value (``app:``) is removed,
  with every relation it has.  Otherwise the overlay's keys replace the base's, except
  ``options``, ``annotations`` and ``bindings``, which are merged key by key; an option set to null
  in an overlay is removed (stackha's choice).
- ``machines``: merged key by key (an empty value only declares the machine).
- ``relations``: the overlay's are added; a relation already present is not added twice.
- ``series``, ``variables``, ``stackha`` (stackha's settings) and other top-level keys: the
  overlay's values replace the base's (``variables`` and ``stackha`` key by key).
- Option values ``include-file://PATH`` and ``include-base64://PATH`` (Juju) are replaced by the
  file's text (or base64 of its bytes), PATH relative to the bundle file; PATH is read with the
  same limits as a bundle file (a regular file of at most 4 MiB).
"""

from __future__ import annotations

import base64
import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from stackha.model import options as opts
from stackha.model.bundle import Application, Bundle, Machine, Relation, Settings, zone_from_constraints
from stackha.model.kinds import DEPLOYABLE_KINDS, KINDS, kind_for_charm, parse_charm
from stackha.model.placement import resolve_placements
from stackha.model.problems import BundleError, Finding, Problem, excerpt
from stackha.model.source import Duplicate, SourceError, decode, parse_yaml, read_file

__all__ = [
    "MAX_TOTAL_UNITS",
    "MAX_UNITS",
    "APP_JUJU_KEYS",
    "MACHINE_JUJU_KEYS",
    "TOP_JUJU_KEYS",
    "load_bundle",
    "load_bundle_text",
    "suggest",
]

#: Top-level keys stackha reads.
TOP_KEYS = ("series", "variables", "machines", "applications", "services", "relations", "saas",
            "stackha")
#: Top-level keys of the Juju format stackha keeps but does not read.
TOP_JUJU_KEYS = ("description", "type", "default-base", "bundle", "tags", "name")
#: Application keys stackha reads.
APP_KEYS = ("charm", "num_units", "to", "options", "bindings", "constraints", "annotations", "series")
#: Application keys of the Juju format stackha keeps but does not read.
APP_JUJU_KEYS = ("channel", "revision", "base", "expose", "exposed-endpoints", "storage", "devices",
                 "resources", "trust", "plan", "offers", "requires", "scale", "placement")
#: Machine keys stackha reads (``zone`` is a stackha extension).
MACHINE_KEYS = ("series", "constraints", "annotations", "zone")
#: Machine keys of the Juju format stackha keeps but does not read.
MACHINE_JUJU_KEYS = ("base",)

#: Most units one application may have (``num_units`` / ``scale``).
MAX_UNITS = 10_000
#: Most units a bundle may have, subordinate units (one per principal unit they follow) included.
MAX_TOTAL_UNITS = 100_000

# Juju's names: ApplicationSnippet and RelationSnippet of github.com/juju/names.
_APP_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:-(?=[a-z0-9]*[a-z])[a-z0-9]+)*$")
_ENDPOINT_RE = re.compile(r"^[a-z][a-z0-9]*(?:[_-][a-z0-9]+)*$")
_MACHINE_ID_RE = re.compile(r"^\d+$")
_SUGGEST_MAX_CHOICES = 2000


def suggest(word: str, choices: Iterable[str]) -> str:
    """``"did you mean X?"`` for the closest of ``choices`` to ``word``, or ``""``.

    Gives ``""`` without comparing when ``word`` is longer than 100 characters or there are more
    than 2,000 choices (bounded time for hostile input).
    """
    if not isinstance(word, str) or len(word) > 100:
        return ""
    pool = list(choices)
    if len(pool) > _SUGGEST_MAX_CHOICES:
        return ""
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.75)
    return f"did you mean {close[0]!r}? " if close else ""


# ----------------------------------------------------------------------------- raw documents

NonNegInt = Annotated[StrictInt, Field(ge=0)]


class _RawMachine(BaseModel):
    model_config = ConfigDict(extra="allow")

    series: StrictStr | None = None
    constraints: StrictStr | None = None
    annotations: dict[str, Any] | None = None


class _RawApp(BaseModel):
    model_config = ConfigDict(extra="allow")

    charm: StrictStr | None = None
    num_units: NonNegInt | None = None
    scale: NonNegInt | None = None
    options: dict[str, Any] | None = None
    bindings: dict[str, Any] | None = None
    constraints: StrictStr | None = None
    annotations: dict[str, Any] | None = None
    series: StrictStr | None = None


_FIXES = {
    "charm": "give the charm URL as a string, e.g. ch:keystone, cs:percona-cluster or ./charms/galera",
    "num_units": "give a whole number ≥ 0",
    "scale": "give a whole number ≥ 0",
    "series": "give a series name such as focal",
    "constraints": 'give the Juju constraints as one string, e.g. "cores=4 mem=8G"',
    "options": "give options as a mapping of key: value",
    "bindings": "give bindings as a mapping of endpoint: space",
    "annotations": "give annotations as a mapping of key: value",
    "unit_availability": "give a number strictly between 0 and 1, e.g. 0.999",
    "unit_mttr_hours": "give a number of hours > 0, e.g. 4",
    "failover_seconds": "give a number of seconds ≥ 0, e.g. 5",
    "request_path": "give a list of application names",
}


def _pydantic_problems(exc: ValidationError, prefix: str, source: str,
                       known: tuple[str, ...] = ()) -> list[Problem]:
    out: list[Problem] = []
    seen: set[str] = set()
    for err in exc.errors():
        path = prefix
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{excerpt(part) if not isinstance(part, str) else part}"
        if path in seen:
            continue
        seen.add(path)
        last = next((p for p in reversed(err["loc"]) if isinstance(p, str)), "")
        if err["type"] == "extra_forbidden":
            out.append(Problem(path=path, message=f"unknown key {excerpt(last)}",
                               fix=suggest(last, known) + "known keys: " + ", ".join(known),
                               source=source))
            continue
        fix = _FIXES.get(last, f"correct {last or 'the value'}")
        out.append(Problem(path=path, message=f"{err['msg']} (got {excerpt(err['input'])})", fix=fix,
                           source=source))
    return out


@dataclass
class _Doc:
    """One document, types checked and normalised to plain data."""

    source: str
    present: set[str] = field(default_factory=set)
    series: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)
    applications: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    relations: list[tuple[str, str, str, str]] = field(default_factory=list)  # a, b, path a, path b
    saas: dict[str, Any] = field(default_factory=dict)
    stackha: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _normalise_to(value: Any, path: str, source: str, problems: list[Problem]) -> list[str] | None:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for i, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            problems.append(Problem(path=f"{path}[{i}]" if isinstance(value, list) else path,
                                    message=f"placement {excerpt(item)} is not a string",
                                    fix='give each placement as a string: "1", "lxd:1", "new"',
                                    source=source))
            return None
        out.append(str(item))
    return out


def _resolve_includes(options: dict[str, Any], path: str, base_dir: Path | None, source: str,
                      problems: list[Problem]) -> None:
    for key, value in list(options.items()):
        if not isinstance(value, str):
            continue
        for scheme in ("include-file://", "include-base64://"):
            if value.startswith(scheme):
                rel = value[len(scheme):]
                if base_dir is None:
                    problems.append(Problem(path=f"{path}.{key}", message=f"{scheme} needs a "
                                            "bundle file to be relative to", fix="load the "
                                            "bundle from a file, or give the value inline",
                                            source=source))
                    break
                try:
                    data = read_file(base_dir / rel)
                except (SourceError, ValueError) as exc:  # ValueError: a NUL in the path
                    why = exc.message if isinstance(exc, SourceError) else "not a valid path"
                    problems.append(Problem(path=f"{path}.{key}", message=f"cannot read "
                                            f"{excerpt(rel)}: {why}", fix="give a readable file "
                                            "of at most 4 MiB, relative to the bundle", source=source))
                    break
                options[key] = (data.decode("utf-8", "replace") if scheme == "include-file://"
                                else base64.b64encode(data).decode("ascii"))
                break


_BUNDLE_TYPES = ("", "kubernetes")


def _check_doc(raw: Any, source: str, base_dir: Path | None, is_base: bool,
               kubernetes: bool = False) -> tuple[_Doc, list[Problem]]:
    doc = _Doc(source=source)
    problems: list[Problem] = []

    def bad(path: str, message: str, fix: str) -> None:
        problems.append(Problem(path=path, message=message, fix=fix, source=source))

    if raw is None:
        if is_base:
            bad("(document)", "the bundle is empty", "declare at least applications:")
        return doc, problems
    if not isinstance(raw, dict):
        bad("(document)", f"a bundle must be a mapping, not {type(raw).__name__}",
            "write the bundle as a mapping with applications:, machines:, relations:")
        return doc, problems
    raw = dict(raw)
    for key in list(raw):
        if not isinstance(key, str):
            bad(excerpt(key), f"top-level key {excerpt(key)} is not a string", "remove it")
            raw.pop(key)
    if "applications" in raw and "services" in raw:
        bad("services", "both applications: and its legacy name services: are given",
            "move the services: entries under applications:")
    if "services" in raw and "applications" not in raw:
        raw["applications"] = raw.pop("services")
    doc.present = set(raw)
    for key, value in raw.items():
        if key not in TOP_KEYS:
            doc.extra[key] = value
    if "bundle" in raw and (raw["bundle"] if raw["bundle"] is not None else "") not in _BUNDLE_TYPES:
        bad("bundle", f"bundle type {excerpt(raw['bundle'])} is not one Juju knows",
            "give bundle: kubernetes for a Kubernetes bundle, or remove the key (machines)")
    kubernetes = kubernetes or raw.get("bundle") == "kubernetes"
    if "series" in raw:
        if raw["series"] is not None and not isinstance(raw["series"], str):
            bad("series", f"series {excerpt(raw['series'])} is not a string", _FIXES["series"])
        else:
            doc.series = raw["series"]
    if raw.get("variables") is not None:
        if isinstance(raw["variables"], dict):
            doc.variables = dict(raw["variables"])
        else:
            bad("variables", "variables must be a mapping", "give variables as name: value pairs "
                "(anchors: name: &anchor value)")
    if raw.get("stackha") is not None:
        if not isinstance(raw["stackha"], dict):
            bad("stackha", "the stackha section must be a mapping",
                "give e.g. stackha: {unit_availability: 0.999}")
        else:
            try:
                Settings.model_validate(raw["stackha"])
                doc.stackha = dict(raw["stackha"])
            except ValidationError as exc:
                problems.extend(_pydantic_problems(exc, "stackha", source,
                                                   tuple(Settings.model_fields)))
    saas = raw.get("saas")
    if saas is not None and not isinstance(saas, dict):
        bad("saas", "saas must be a mapping of name to offer", "give saas as name: {url: "
            "controller:user/model.offer}")
    elif saas:
        for name, spec in saas.items():
            spath = f"saas.{excerpt(name) if not isinstance(name, str) else name}"
            if not isinstance(name, str) or not _APP_NAME_RE.match(name):
                bad(spath, f"SAAS name {excerpt(name)} is not a valid Juju application name",
                    "use lowercase letters, digits and hyphens, starting with a letter")
                continue
            if spec is not None and (not isinstance(spec, dict) or not isinstance(spec.get("url", ""), str)):
                bad(spath, f"SAAS {name} must be a mapping with url: (got {excerpt(spec)})",
                    "give e.g. url: admin/other-model.mysql")
                continue
            doc.saas[name] = dict(spec or {})
    machines = raw.get("machines")
    if machines is not None and not isinstance(machines, dict):
        bad("machines", "machines must be a mapping of machine id to machine",
            "give machines as '0': {series: focal}")
    elif machines and kubernetes:
        bad("machines", "a Kubernetes bundle (bundle: kubernetes) has no machines",
            "remove machines: (pods are scheduled by Kubernetes), or remove bundle: kubernetes")
    elif machines:
        for mid, m in machines.items():
            mpath = f"machines.{excerpt(mid) if not isinstance(mid, (str, int)) else mid}"
            if isinstance(mid, bool) or not isinstance(mid, (str, int)) or not _MACHINE_ID_RE.match(str(mid)):
                bad(mpath, f"machine id {excerpt(mid)} is not a non-negative whole number",
                    "number machines '0', '1', '2', …")
                continue
            mid = str(mid)
            if m is None:
                doc.machines[mid] = {}
                continue
            if not isinstance(m, dict):
                bad(mpath, "a machine must be a mapping", "give e.g. '0': {series: focal}")
                continue
            zone = m.get("zone")
            if "zone" in m and (zone is None or isinstance(zone, bool) or not isinstance(zone, (str, int))):
                bad(f"{mpath}.zone", f"zone {excerpt(zone)} is not a zone name", "give a zone name, e.g. az1")
                continue
            try:
                rm = _RawMachine.model_validate(m)
            except ValidationError as exc:
                problems.extend(_pydantic_problems(exc, mpath, source))
                continue
            d = {k: getattr(rm, k) for k in ("series", "constraints", "annotations")
                 if k in rm.model_fields_set and getattr(rm, k) is not None}
            if "zone" in m:
                d["zone"] = str(zone)
            extra = {k: v for k, v in (rm.model_extra or {}).items() if k != "zone"}
            if extra:
                d["extra"] = extra
            doc.machines[mid] = d
    apps = raw.get("applications")
    if apps is not None and not isinstance(apps, dict):
        bad("applications", "applications must be a mapping of name to application",
            "give applications as name: {charm: …, num_units: …}")
    elif apps:
        for name, a in apps.items():
            apath = f"applications.{name if isinstance(name, str) else excerpt(name)}"
            if not isinstance(name, str) or not _APP_NAME_RE.match(name):
                bad(apath if isinstance(name, str) and len(name) <= 100 else "applications",
                    f"application name {excerpt(name)} is not a valid Juju application name",
                    "use lowercase letters, digits and hyphens, starting with a letter (a part "
                    "after a hyphen may not be only digits)")
                continue
            if a is None:
                if is_base:
                    bad(apath, "the application has no definition", "give at least its charm:")
                doc.applications[name] = None
                continue
            if not isinstance(a, dict):
                bad(apath, "an application must be a mapping", "give e.g. charm: ch:keystone")
                continue
            try:
                ra = _RawApp.model_validate(a)
            except ValidationError as exc:
                problems.extend(_pydantic_problems(exc, apath, source))
                continue
            d: dict[str, Any] = {}
            for k in ("charm", "num_units", "constraints", "series"):
                if k in ra.model_fields_set and getattr(ra, k) is not None:
                    d[k] = getattr(ra, k)
            if ra.scale:  # Juju: scale is num_units by another name
                if ra.num_units:
                    bad(f"{apath}.scale", f"both scale ({ra.scale}) and num_units ({ra.num_units}) "
                        "are given", "keep one of them (scale is num_units by another name)")
                    continue
                d["num_units"] = ra.scale
            if d.get("num_units", 0) > MAX_UNITS:
                bad(f"{apath}.{'scale' if ra.scale else 'num_units'}",
                    f"{d['num_units']} units is more than the {MAX_UNITS:,} stackha analyses in "
                    "one application", f"give at most {MAX_UNITS:,} units")
                continue
            for k in ("options", "bindings", "annotations"):
                if k in ra.model_fields_set:
                    d[k] = dict(getattr(ra, k) or {})
            extra = dict(ra.model_extra or {})
            if "placement" in extra and not kubernetes:
                bad(f"{apath}.placement", "placement: is a Kubernetes node selector, not valid in "
                    "a machine bundle", "use to: for machine placements, or set bundle: kubernetes")
                continue
            if kubernetes:
                selector = extra.get("to")
                if selector is not None and (not isinstance(selector, list) or len(selector) > 1
                                             or not all(isinstance(x, str) for x in selector)):
                    bad(f"{apath}.to", "in a Kubernetes bundle to: is one node selector, "
                        f"key=value[,key=value] (got {excerpt(selector)})",
                        'give e.g. to: ["kubernetes.io/hostname=node1"]')
                    continue
                if selector and extra.get("placement"):
                    bad(f"{apath}.to", "both to: and placement: are given",
                        "keep one of them (both are the node selector)")
                    continue
            elif "to" in extra:
                to = _normalise_to(extra.pop("to"), f"{apath}.to", source, problems)
                if to is None:
                    continue
                d["to"] = to
            extra.pop("scale", None)
            if extra:
                d["extra"] = extra
            if "options" in d:
                _resolve_includes(d["options"], f"{apath}.options", base_dir, source, problems)
            doc.applications[name] = d
    rels = raw.get("relations")
    if rels is not None and not isinstance(rels, list):
        bad("relations", "relations must be a list of pairs",
            "give relations as a list of pairs, each pair a two-item list such as keystone:shared-db, galera:shared-db")
    elif rels:
        for i, rel in enumerate(rels):
            rpath = f"relations[{i}]"
            if not isinstance(rel, list) or len(rel) != 2:
                bad(rpath, f"relation {excerpt(rel)} is not a pair",
                    "give each relation as a two-item list, e.g. keystone:shared-db, galera:shared-db")
                continue
            a, b = rel
            # legacy form: one end related to a list of ends
            ends_b = [(e, f"{rpath}[1][{j}]") for j, e in enumerate(b)] if isinstance(b, list) \
                else [(b, f"{rpath}[1]")]
            ok = True
            for end, epath in [(a, f"{rpath}[0]"), *ends_b]:
                if not isinstance(end, str) or not _parse_end(end):
                    bad(epath, f"relation end {excerpt(end)} is not app or app:endpoint",
                        "give each end as application[:endpoint], e.g. keystone:shared-db "
                        "(an endpoint: lowercase letters and digits, parts joined by - or _)")
                    ok = False
            if ok:
                for end, epath in ends_b:
                    doc.relations.append((a, end, f"{rpath}[0]", epath))
    return doc, problems


def _end_app(end: str) -> str:
    return end.partition(":")[0]


def _parse_end(end: str) -> tuple[str, str | None] | None:
    """``(application, endpoint or None)`` for ``app[:endpoint]`` in Juju's syntax, else None."""
    app, _, ep = end.partition(":")
    if not _APP_NAME_RE.match(app) or (ep and not _ENDPOINT_RE.match(ep)):
        return None
    return app, (ep or None)


# ----------------------------------------------------------------------------- merge


def _merge_maps(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


@dataclass
class _Merged:
    series: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)
    machine_src: dict[str, str] = field(default_factory=dict)
    applications: dict[str, dict[str, Any]] = field(default_factory=dict)
    app_src: dict[str, str] = field(default_factory=dict)
    relations: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # a, b, paths, source
    saas: dict[str, dict[str, Any]] = field(default_factory=dict)
    saas_src: dict[str, str] = field(default_factory=dict)
    stackha: dict[str, Any] = field(default_factory=dict)
    stackha_src: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _merge(docs: list[_Doc]) -> _Merged:
    m = _Merged()
    for n, doc in enumerate(docs):
        overlay = n > 0
        if "series" in doc.present:
            m.series = doc.series
        m.variables.update(doc.variables)
        if doc.stackha:
            m.stackha.update(doc.stackha)
            m.stackha_src = doc.source
        m.extra.update(doc.extra)
        for name, spec in doc.saas.items():
            m.saas[name] = spec
            m.saas_src[name] = doc.source
        for mid, md in doc.machines.items():
            cur = m.machines.get(mid, {})
            merged = dict(cur)
            for k, v in md.items():
                merged[k] = _merge_maps(cur.get(k, {}), v) if k in ("annotations", "extra") else v
            m.machines[mid] = merged
            m.machine_src[mid] = doc.source
        removed: set[str] = set()
        for name, ad in doc.applications.items():
            if ad is None:
                if overlay:
                    m.applications.pop(name, None)
                    m.app_src.pop(name, None)
                    removed.add(name)
                continue
            cur = m.applications.get(name)
            if cur is None or not overlay:
                m.applications[name] = dict(ad)
            else:
                merged = dict(cur)
                for k, v in ad.items():
                    if k in ("options", "annotations", "bindings", "extra"):
                        merged[k] = _merge_maps(cur.get(k, {}), v)
                    else:
                        merged[k] = v
                m.applications[name] = merged
            m.app_src[name] = doc.source
        if removed:  # an application removed by an overlay takes its relations with it
            m.relations = [r for r in m.relations
                           if _end_app(r[0]) not in removed and _end_app(r[1]) not in removed]
        seen = {frozenset((r[0], r[1])) for r in m.relations}
        for a, b, path_a, path_b in doc.relations:
            key = frozenset((a, b))
            if key not in seen:
                seen.add(key)
                m.relations.append((a, b, path_a, path_b, doc.source))
    return m


# ----------------------------------------------------------------------------- build + validate


def _build(m: _Merged) -> tuple[Bundle | None, list[Problem]]:
    problems: list[Problem] = []
    kubernetes = m.extra.get("bundle") == "kubernetes"
    machines: dict[str, Machine] = {}
    for mid, md in m.machines.items():
        zone = md.get("zone") or zone_from_constraints(md.get("constraints"))
        machines[mid] = Machine(id=mid, series=md.get("series"), constraints=md.get("constraints"),
                                zone=zone, annotations=md.get("annotations", {}),
                                extra=md.get("extra", {}))
    apps: dict[str, Application] = {}
    for name, ad in m.applications.items():
        src = m.app_src[name]
        path = f"applications.{name}"

        def bad(sub: str, message: str, fix: str, src: str = src, path: str = path) -> None:
            problems.append(Problem(path=f"{path}{sub}", message=message, fix=fix, source=src))

        charm = ad.get("charm")
        if charm is None:
            bad(".charm", "the application has no charm", "give charm:, e.g. ch:keystone")
            charm = ""
        elif parse_charm(charm) is None:
            bad(".charm", f"charm {excerpt(charm)} is not a charm URL",
                "give ch:NAME, cs:[SERIES/]NAME[-REV] or a local path such as ./charms/NAME")
        if name in m.saas:
            bad("", f"{name} is both an application and a SAAS (saas.{name})",
                "rename one of them: relations could not tell them apart")
        kind = kind_for_charm(charm) if charm else None
        info = KINDS.get(kind or "")
        to = list(ad.get("to", []))
        given_units = ad.get("num_units")
        if kubernetes:
            subordinate = False  # Kubernetes charms are sidecars: no subordinates
        elif info is not None:
            subordinate = info.subordinate
        else:  # an unknown charm: a subordinate when the bundle gives it no units
            subordinate = not given_units and not to
        if subordinate:
            if given_units or to:
                bad(".num_units" if given_units else ".to",
                    f"{name} is a subordinate ({kind}): its units follow its principals, it "
                    "cannot have units or placements of its own",
                    "remove num_units and to, and relate it to the application it should run beside")
            num_units = 0
            to = []
        else:
            num_units = given_units if given_units is not None else len(to)
            if len(to) > num_units:  # Juju: "too many units specified in unit placement"
                bad(".to", f"to lists {len(to)} placements but num_units is {num_units}",
                    f"give at most one placement per unit, or set num_units: {len(to)}")
        apps[name] = Application(
            name=name, charm=charm, kind=kind, num_units=num_units, to=to,
            options=ad.get("options", {}), bindings=ad.get("bindings", {}),
            constraints=ad.get("constraints"), annotations=ad.get("annotations", {}),
            series=ad.get("series"), subordinate=subordinate,
            deployable=kind in DEPLOYABLE_KINDS, extra=ad.get("extra", {}))
        for p in opts.check_options(name, kind, apps[name].options):
            problems.append(p.model_copy(update={"source": src}))

    relations: list[Relation] = []
    cross_model: list[Relation] = []
    suggestions = 0
    for a, b, path_a, path_b, src in m.relations:
        (aa, ae), (ba, be) = _parse_end(a), _parse_end(b)  # type: ignore[misc]
        ok = True
        for app, epath in ((aa, path_a), (ba, path_b)):
            if app not in apps and app not in m.saas:
                suggestions += 1
                hint = suggest(app, [*apps, *m.saas]) if suggestions <= 20 else ""
                problems.append(Problem(
                    path=epath, message=f"relation names application {app!r}, which is not in "
                    "the bundle (nor in saas:)", fix=hint + "add the application, or remove the "
                    "relation", source=src))
                ok = False
        if ok and aa == ba:
            problems.append(Problem(path=path_a.rsplit("[", 1)[0], message=f"relation of {aa} "
                                    "with itself", fix="peer relations are implicit in Juju: "
                                    "remove it", source=src))
            ok = False
        if ok and aa in m.saas and ba in m.saas:
            problems.append(Problem(path=path_a.rsplit("[", 1)[0], message=f"relation between "
                                    f"two SAAS entries ({aa}, {ba}): neither is in this model",
                                    fix="relate an application of the bundle to the SAAS", source=src))
            ok = False
        if ok:
            rel = Relation(a=aa, a_endpoint=ae, b=ba, b_endpoint=be)
            (cross_model if aa in m.saas or ba in m.saas else relations).append(rel)

    settings = Settings.model_validate(m.stackha)
    if settings.request_path:
        for i, app in enumerate(settings.request_path):
            if app not in apps:
                problems.append(Problem(path=f"stackha.request_path[{i}]", message=f"request_path "
                                        f"names application {excerpt(app)}, which is not in the bundle",
                                        fix=suggest(app, apps) + "name applications of the bundle",
                                        source=m.stackha_src))
    bundle = Bundle(series=m.series, variables=m.variables, machines=machines, applications=apps,
                    relations=relations, cross_model_relations=cross_model, saas=m.saas,
                    settings=settings, extra=m.extra)
    total = sum(a.num_units for a in apps.values())
    total += sum(apps[p].num_units for n, a in apps.items() if a.subordinate
                 for p in bundle.principals_of(n))
    if total > MAX_TOTAL_UNITS:
        problems.append(Problem(path="applications", message=f"the bundle has {total:,} units "
                                "(subordinate units included), more than the "
                                f"{MAX_TOTAL_UNITS:,} stackha analyses", fix="split the cloud "
                                "into several bundles", source=None))
        return None, problems
    _units, placement_problems = resolve_placements(bundle)
    for p in placement_problems:
        app = p.path.split(".")[1]
        problems.append(p.model_copy(update={"source": m.app_src.get(app)}))

    # duplicate VIPs: one address, two applications (a keepalived subordinate may repeat the VIP
    # of the principal it holds it for, as ``virtual_ip``)
    owners: dict[str, str] = {}
    for name, app in apps.items():
        declared = [("vip", v) for v in opts.vip_addresses({"vip": app.options.get("vip")})]
        if app.kind == "keepalived":
            declared += [("virtual_ip", v) for v in opts.vip_addresses(
                {"virtual_ip": app.options.get("virtual_ip")}, "keepalived")]
        for key, vip in declared:
            first = owners.setdefault(str(vip), name)
            if first == name:
                continue
            keepalived_pair = "keepalived" in (app.kind, apps[first].kind) and first in bundle.related(name)
            if not keepalived_pair:
                problems.append(Problem(
                    path=f"applications.{name}.options.{key}", message=f"VIP {vip} is also the "
                    f"VIP of {first}: two applications cannot answer on one address",
                    fix="give each application its own VIP", source=m.app_src[name]))
    if not problems:
        bundle._units = _units
    return (bundle if not problems else None), problems


def _duplicate_findings(dups: list[Duplicate], source: str) -> list[Finding]:
    out = []
    for d in dups:
        (l1, c1), (l2, c2) = d.first, d.second
        out.append(Finding(
            severity="warning", code="duplicate-key", path=f"{source}: line {l2}, column {c2}",
            message=f"key {excerpt(d.key)} is given twice in one mapping, at line {l1} (column "
            f"{c1}) and at line {l2}: the value at line {l2} is used (the last one, as Juju does)",
            fix=f"remove one of the two entries (line {l1} or line {l2})"))
    return out


def _load(texts: list[tuple[str, str, Path | None]]) -> Bundle:
    problems: list[Problem] = []
    docs: list[_Doc] = []
    warnings: list[Finding] = []
    kubernetes = False
    for n, (text, source, base_dir) in enumerate(texts):
        raw_docs, yproblems, dups = parse_yaml(text, source)
        problems.extend(yproblems)
        warnings.extend(_duplicate_findings(dups, source))
        if yproblems:
            continue
        if not raw_docs:
            raw_docs = [None]
        for k, raw in enumerate(raw_docs):
            label = source if len(raw_docs) == 1 else f"{source} (document {k + 1})"
            is_base = n == 0 and k == 0
            if is_base and isinstance(raw, dict):
                kubernetes = raw.get("bundle") == "kubernetes"
            doc, dproblems = _check_doc(raw, label, base_dir, is_base=is_base, kubernetes=kubernetes)
            problems.extend(dproblems)
            docs.append(doc)
    if problems:
        raise BundleError(problems)
    bundle, bproblems = _build(_merge(docs))
    if bproblems or bundle is None:
        raise BundleError(bproblems)
    bundle._load_findings = warnings
    return bundle


def load_bundle_text(text: str, overlays_texts: Iterable[str] = (), *, source: str = "<bundle>") -> Bundle:
    """Load a bundle from YAML text, with overlays given as YAML texts (applied in order).

    Problems name their source as ``source`` for the bundle and ``<overlay N>`` (N from 1) for the
    overlays.

    Raises:
        BundleError: listing every problem (exit code 2).
    """
    texts = [(text, source, None)]
    texts += [(t, f"<overlay {i}>", None) for i, t in enumerate(overlays_texts, 1)]
    return _load(texts)


def load_bundle(path: str | Path, overlays: Iterable[str | Path] = ()) -> Bundle:
    """Load a bundle file and overlay files (applied in order), merged with Juju's rules.

    Args:
        path: the bundle YAML file.
        overlays: overlay YAML files.

    Returns:
        The validated :class:`~stackha.model.bundle.Bundle`; warnings found while loading (a key
        given twice) are :meth:`~stackha.model.bundle.Bundle.load_findings`.

    Raises:
        BundleError: listing every problem of every file, each with its path and fix — including
            a file that cannot be read, is not a regular file (a directory, a FIFO, a device) or
            is larger than :data:`stackha.model.source.MAX_FILE_BYTES` (exit code 2).
    """
    texts: list[tuple[str, str, Path | None]] = []
    problems: list[Problem] = []
    for p in [path, *overlays]:
        p = Path(p)
        try:
            texts.append((decode(read_file(p)), str(p), p.parent))
        except SourceError as exc:
            problems.append(Problem(path=str(p), message=exc.message, fix=exc.fix, source=None))
        except ValueError:  # a NUL in the path
            problems.append(Problem(path=excerpt(str(p)), message="not a valid path",
                                    fix="give the path of a YAML file", source=None))
    if problems:
        raise BundleError(problems)
    return _load(texts)

"""stackha.model — what the user declares, validated, with no I/O beyond reading the bundle files.

A bundle is a subset of the Juju bundle format (seed 000 and seed 004 load as they are):
``machines``, ``applications`` (or the legacy ``services``) with ``charm``, ``num_units``, ``to``,
``options``, ``bindings``, ``constraints``, ``annotations``, ``series``, and ``relations``; plus
stackha's own top-level ``stackha:`` section (:class:`Settings`) and the options listed in
:mod:`stackha.model.options`.

Public API:

- :func:`load_bundle` / :func:`load_bundle_text` → :class:`Bundle`, or :class:`BundleError`
  (an :class:`stackha.errors.InvalidInput`, exit code 2) listing every :class:`Problem`.
- :class:`Bundle`, :class:`Machine`, :class:`Application`, :class:`Relation`,
  :class:`UnitPlacement`, :class:`Settings`.
- :func:`stackha.model.analysis.analyze` → :class:`stackha.model.analysis.AnalysisReport`.
- :mod:`stackha.model.availability` — the k-of-n math and the estimate.
- :mod:`stackha.model.kinds` — charm URL → service kind, and what each kind is.
"""

from stackha.model.bundle import Application, Bundle, Machine, Relation, Settings, UnitPlacement
from stackha.model.kinds import DEPLOYABLE_KINDS, KINDS, kind_for_charm, parse_charm
from stackha.model.loader import load_bundle, load_bundle_text
from stackha.model.problems import BundleError, Finding, Problem

__all__ = [
    "DEPLOYABLE_KINDS",
    "KINDS",
    "Application",
    "Bundle",
    "BundleError",
    "Finding",
    "Machine",
    "Problem",
    "Relation",
    "Settings",
    "UnitPlacement",
    "kind_for_charm",
    "load_bundle",
    "load_bundle_text",
    "parse_charm",
]

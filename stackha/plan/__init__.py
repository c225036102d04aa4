"""Plans: the order in which a bundle's applications are deployed.

The dependency graph (networkx DiGraph, an edge ``a → b`` meaning "deploy a before b") comes from
the relations and the tiers of DESIGN.md: network → database and queue → load balancer and VIP →
identity → other API services → compute → instance HA.  For a relation between two applications of
different tiers, the lower tier goes first; a subordinate goes after its principal.  Applications of
one tier with no path between them may be deployed in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from stackha.errors import InvalidInput

DEFAULT_TIER = 6


def tier(kind: str | None) -> int:
    """The tier of a service kind (``KindInfo.tier``: lower deploys first); unknown kinds sit with
    the API services."""
    from stackha.model.kinds import KINDS

    info = KINDS.get(kind or "")
    return info.tier if info is not None else DEFAULT_TIER


@dataclass
class Plan:
    """Applications in deployment order, with the graph they were ordered by.

    ``order``: application names; ``graph``: networkx DiGraph (edge a→b: a before b).
    """

    order: list[str]
    graph: nx.DiGraph = field(repr=False)
    tiers: dict[str, int] = field(default_factory=dict)

    def ready(self, app: str, finished: set[str]) -> bool:
        """Whether ``app`` may start once the applications in ``finished`` are done: all its
        dependencies and every application of a lower (effective) tier have finished.  The tier
        barrier keeps DESIGN.md's order for applications without a relation (a VIP before the
        identity service that registers endpoints on it)."""
        if not self.dependencies(app) <= finished:
            return False
        t = self.tiers.get(app, DEFAULT_TIER)
        return all(o in finished for o, ot in self.tiers.items() if ot < t and o != app)

    def dependants(self, app: str) -> set[str]:
        """Every application that must wait for ``app`` (transitively)."""
        return set(nx.descendants(self.graph, app))

    def dependencies(self, app: str) -> set[str]:
        """Every application ``app`` waits for (transitively)."""
        return set(nx.ancestors(self.graph, app))


def build_plan(bundle) -> Plan:
    """Order ``bundle``'s applications (a :class:`stackha.model.Bundle`).

    Raises :class:`InvalidInput` if the relations form a cycle across tiers (cannot happen with
    tier-ordered edges, kept as a guard for subordinate chains).
    """
    g = nx.DiGraph()
    apps = bundle.applications
    for name in apps:
        g.add_node(name)
    for rel in bundle.relations:
        a, b = apps.get(rel.a), apps.get(rel.b)
        if a is None or b is None or rel.a == rel.b:
            continue
        if a.subordinate != b.subordinate:
            principal, sub = (rel.b, rel.a) if a.subordinate else (rel.a, rel.b)
            g.add_edge(principal, sub)
            continue
        ta, tb = tier(a.kind), tier(b.kind)
        if ta < tb:
            g.add_edge(rel.a, rel.b)
        elif tb < ta:
            g.add_edge(rel.b, rel.a)
        elif (b.kind or "") in _depends_on(a.kind):  # same tier: a calls b (glance → swift-proxy)
            g.add_edge(rel.b, rel.a)
        elif (a.kind or "") in _depends_on(b.kind):
            g.add_edge(rel.a, rel.b)
    try:
        order = list(nx.lexicographical_topological_sort(g, key=lambda n: (tier(apps[n].kind), list(apps).index(n))))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(g)
        raise InvalidInput(f"relations form a dependency cycle: {' -> '.join(a for a, _ in cycle)}") from None
    # A subordinate deploys with (after) its principal: its effective tier is at least the
    # principal's, so the tier barrier never holds a principal back for its own subordinate.
    tiers = {n: tier(apps[n].kind) for n in order}
    for n in order:
        for p in g.predecessors(n):
            if apps[n].subordinate and not apps[p].subordinate:
                tiers[n] = max(tiers[n], tiers[p])
    return Plan(order=order, graph=g, tiers=tiers)


def _depends_on(kind: str | None) -> tuple[str, ...]:
    from stackha.model.kinds import KINDS

    info = KINDS.get(kind or "")
    return info.depends_on if info is not None else ()

"""``mysql-router`` (seed 004's ``masakari-mysql-router``): the database relation, routed to Galera.

The OpenStack charms put a MySQL Router subordinate beside each service (``masakari:shared-db`` ↔
``masakari-mysql-router:shared-db``, ``masakari-mysql-router:db-router`` ↔
``mysql-innodb-cluster:db-router``) because their database is MySQL InnoDB Cluster, whose router
follows the primary.  stackha's database is Galera behind HAProxy's VIP, which already sends every
connection to one writer (``galera`` operator), and Debian 12 ships no MySQL Router.  So a
``mysql-router`` application deploys nothing: it offers the ``database`` relation of the Galera
application it is related to (``db-router``) — the service's databases and users are created on
that Galera, and the service connects to its VIP.

Without the ``db-router`` relation (seed 004's overlay as its author first wrote it: the analysis
reports ``missing-relation``) apply fails naming the relation to add.
"""

from __future__ import annotations

from typing import Any

from stackha.errors import InvalidInput
from stackha.services.base import AppContext, AppStatus, BaseOperator, UnitStatus, WorkloadState

KIND = "mysql-router"


class MysqlRouterOperator(BaseOperator):
    """Operator of kind ``mysql-router`` (see the module docstring); a ``DatabaseProvider``."""

    kind = KIND

    def backend(self, app: AppContext) -> tuple[AppContext, Any]:
        """The Galera application behind the router, with its operator; InvalidInput naming the
        missing ``db-router`` relation."""
        from stackha.services import operator_for

        for other in sorted(app.related.values(), key=lambda a: a.name):
            if other.kind == "galera":
                return other, operator_for("galera")
        raise InvalidInput(f"applications.{app.name}: a mysql-router routes to a database: add the relation "
                           f"`- [{app.name}:db-router, galera:db-router]`")

    def render(self, app: AppContext) -> dict:
        return {u.name: {} for u in app.units}

    def apply(self, app: AppContext) -> list[str]:
        """Nothing runs; checks the ``db-router`` relation (InvalidInput without it)."""
        self.backend(app)
        return []

    def observe(self, app: AppContext) -> AppStatus:
        try:
            db_app, _ = self.backend(app)
            state, msg = WorkloadState.ACTIVE, f"routes to {db_app.name} through its VIP"
        except InvalidInput as exc:
            state, msg = WorkloadState.BLOCKED, str(exc)
        return AppStatus(app=app.name, units=[UnitStatus(u.name, state, msg) for u in app.units], facts={})

    def ensure_database(self, app: AppContext, db_name: str, user: str) -> str:
        """The Galera application's :meth:`~stackha.services.galera.GaleraOperator.ensure_database`."""
        db_app, db_op = self.backend(app)
        return db_op.ensure_database(db_app, db_name, user)

    def client_address(self, app: AppContext) -> str:
        """The Galera application's client address (its VIP)."""
        db_app, db_op = self.backend(app)
        return db_op.client_address(db_app)

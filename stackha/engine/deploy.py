"""The deploy engine: a bundle → hosts → operators, recorded in the state store.

A :class:`Deployment` is one named cloud on the machines of one
:class:`~stackha.hosts.provider.Provider` (a lab, or machines reached over SSH from an inventory);
the engine talks to the provider and the hosts through their interfaces only.  ``deploy`` runs the
plan's applications concurrently where the plan allows it (:meth:`stackha.plan.Plan.ready`: every
dependency and every lower tier finished; at most :data:`DEPLOY_WORKERS` at once): each operator's
``apply`` is idempotent, so deploying the same
bundle again changes nothing and says so.  A failed application leaves its units in ``error`` with
the message, and every application that depends on it waits (``waiting``) rather than being
half-applied; ``stackha resolved UNIT`` deploys again from there.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from stackha.errors import InvalidInput, UserError
from stackha.hosts.base import Host
from stackha.hosts.provider import CLIENT_HOST, MachineSpec, Provider, default_state_dir, host_named, open_provider
from stackha.plan import Plan, build_plan
from stackha.polling import WaitTimeout, wait_until
from stackha.services import operator_for
from stackha.services.base import AppContext, AppStatus, Unit, UnitStatus, WorkloadState

DEPLOY_WORKERS = 4  # applications applied at once (bench/deploy.py measures the effect)
SETTLE_S = 30.0  # how long a deploy waits for "waiting" units to settle once everything is applied
LB_KINDS = ("haproxy",)
VIP_KINDS = ("keepalived", "hacluster")


def deployment_dir(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / "deployments" / name


def parse_vip(options: dict, path: str) -> ipaddress.IPv4Interface | None:
    """The VIP an application's options declare (``vip``/``virtual_ip`` + ``vip_cidr``), or None.

    Raises :class:`InvalidInput` naming ``path`` for a malformed address."""
    raw = options.get("vip") or options.get("virtual_ip")
    if not raw:
        return None
    first = str(raw).split()[0]  # Juju's vip may list several, one per network
    cidr = options.get("vip_cidr", 24)
    try:
        return ipaddress.IPv4Interface(first if "/" in first else f"{first}/{cidr}")
    except ValueError as exc:
        raise InvalidInput(f"{path}.options.vip: {exc}; give an IPv4 address such as 198.18.100.250") from None


@dataclass
class DeployReport:
    """What a deploy did: per application the changes (empty: nothing changed), and the failures."""

    changes: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    app_seconds: dict[str, float] = field(default_factory=dict)  # apply time per application, s

    @property
    def changed(self) -> bool:
        return any(self.changes.values())


class Deployment:
    """One cloud called ``name``.  Create with :meth:`for_bundle`, find with :meth:`open`.

    ``provider``: where its machines come from; when None it is rebuilt from the state store
    (what :meth:`record_bundle` recorded; a deployment recorded without one is on the lab).
    """

    def __init__(self, name: str, state_dir: Path | None = None, provider: Provider | None = None):
        self.name = name
        self.state_dir = Path(state_dir or default_state_dir())
        self.dir = deployment_dir(self.state_dir, name)
        self._store = None
        self._bundle = None
        self._provider = provider

    @property
    def store(self):
        """The state store (created on first use, so refused input leaves nothing on disk)."""
        from stackha.engine.state import StateStore

        if self._store is None:
            self._store = StateStore(self.dir)
        return self._store

    @classmethod
    def for_bundle(cls, name: str, bundle, state_dir: Path | None = None,
                   provider: Provider | None = None) -> "Deployment":
        """A deployment object for ``bundle`` called ``name`` on ``provider`` (default: the lab
        of prefix ``name``), nothing written yet."""
        d = cls(name, state_dir, provider)
        d._bundle = bundle
        return d

    @property
    def provider(self) -> Provider:
        """The machine provider (see the class docstring)."""
        if self._provider is None:
            record = self.store.get("provider") if self.exists(self.name, self.state_dir) else None
            self._provider = open_provider(record, self.name, self.state_dir)
        return self._provider

    def check(self) -> None:
        """Refuse a bundle the provider's machines cannot carry (InvalidInput / UserError naming
        the field or machine), before anything starts: for the lab, VIPs outside its /24; for
        SSH, an inventory that misses a machine or a machine that does not answer."""
        self.provider.check(self.machines(), self.vips())

    # ----------------------------------------------------------------- loading
    @classmethod
    def exists(cls, name: str, state_dir: Path | None = None) -> bool:
        return (deployment_dir(Path(state_dir or default_state_dir()), name) / "state.db").exists()

    @classmethod
    def open(cls, name: str, state_dir: Path | None = None) -> "Deployment":
        """The recorded deployment ``name``; :class:`UserError` if there is none."""
        if not cls.exists(name, state_dir):
            raise UserError(f"nothing is deployed as {name!r}; run `stackha deploy BUNDLE --lab {name}` "
                            f"(or `--inventory FILE`)")
        d = cls(name, state_dir)
        if d.store.get("bundle") is None:
            raise UserError(f"deployment {name!r} has no recorded bundle; deploy again")
        return d

    @property
    def bundle(self):
        if self._bundle is None:
            from stackha.model import load_bundle_text

            self._bundle = load_bundle_text(yaml.safe_dump(self.store.get("bundle"), sort_keys=False))
        return self._bundle

    @property
    def tuning(self) -> str:
        return self.store.get("tuning", "stackha")

    def plan(self) -> Plan:
        return build_plan(self.bundle)

    # ----------------------------------------------------------------- preparation
    def record_bundle(self, bundle, *, tuning: str = "stackha", sources: list[str] | None = None) -> None:
        """Record ``bundle`` (a loaded :class:`stackha.model.Bundle`) as the desired state."""
        if tuning not in ("stackha", "stock"):
            raise InvalidInput(f"--tuning {tuning!r}: use stackha or stock")
        self.store.set("bundle", bundle.dump())
        self.store.set("provider", self.provider.record())
        self.store.set("tuning", tuning)
        self.store.set("sources", sources or [])
        self._bundle = bundle

    def vips(self) -> dict[str, ipaddress.IPv4Interface]:
        """Each application's VIP: its own ``vip`` option; else, for a VIP provider (keepalived,
        hacluster) or a load balancer, the VIP of the one it is related to; else, for an
        application served by a load balancer (related to haproxy), the load balancer's VIP."""
        out: dict[str, ipaddress.IPv4Interface] = {}
        b = self.bundle
        apps = b.applications
        for name, app in apps.items():
            vip = parse_vip(app.options, f"applications.{name}")
            if vip is not None:
                out[name] = vip
        # A VIP provider (keepalived, hacluster) moves the VIP of the application it serves.
        for name, app in apps.items():
            if name in out or app.kind not in VIP_KINDS:
                continue
            for other in sorted(b.related(name)):
                if other in out:
                    out[name] = out[other]
                    break
        # A load balancer without a VIP of its own binds its VIP provider's.
        for name, app in apps.items():
            if name in out or app.kind not in LB_KINDS:
                continue
            for other in sorted(b.related(name)):
                if other in out and apps[other].kind in VIP_KINDS:
                    out[name] = out[other]
                    break
        # Applications behind a load balancer are reached on its VIP.
        for name, app in apps.items():
            if name in out:
                continue
            for other in sorted(b.related(name)):
                if other in out and apps[other].kind in LB_KINDS:
                    out[name] = out[other]
                    break
        return out

    def machines(self) -> list[MachineSpec]:
        """Every host the bundle's units need (machines, containers, ``new`` placements), in
        placement order; subordinates need none of their own."""
        b = self.bundle
        out: dict[str, MachineSpec] = {}
        for name, app in b.applications.items():
            if app.subordinate:
                continue
            for pl in b.units(name):
                if pl.host_key not in out:
                    out[pl.host_key] = MachineSpec(pl.host_key, pl.machine, pl.machine if pl.container else None)
        return list(out.values())

    def host_map(self) -> dict[str, dict]:
        """Bundle machines/containers → host names: ``{host_key: {"host", "parent", "machine"}}``."""
        p = self.provider
        return {m.key: {"host": p.host_name(m.key), "parent": p.host_name(m.parent) if m.parent else None,
                        "machine": m.machine} for m in self.machines()}

    def ensure_hosts(self, progress: Callable[[str], None] = lambda s: None) -> list[str]:
        """Make every host the bundle's machines need exist (the lab creates them; SSH checks
        them), plus a client host; returns the hosts created."""
        return self.provider.ensure(self.machines(), self.vips(), progress)

    @property
    def client(self) -> Host:
        """The host probes and clients run from (never part of the cloud)."""
        return self.provider.client()

    def host(self, name: str) -> Host:
        """The provider's host called ``name``; :class:`UserError` naming the known ones otherwise."""
        return host_named(self.provider, name)

    # ----------------------------------------------------------------- contexts
    def contexts(self) -> dict[str, AppContext]:
        """An :class:`AppContext` per application, related to one another, with frontends."""
        from stackha.engine.state import FileSecrets

        b = self.bundle
        vips = self.vips()
        ctxs: dict[str, AppContext] = {}
        for name, app in b.applications.items():
            units = []
            for pl in b.units(name):
                key = pl.host_key
                if app.subordinate and pl.principal:
                    key = next(p.host_key for p in b.units(pl.principal.split("/")[0]) if p.unit == pl.principal)
                units.append(Unit(pl.unit, self.provider.host(key)))
            ctxs[name] = AppContext(
                name=name, kind=app.kind or "", options=dict(app.options), units=units,
                secrets=FileSecrets(self.dir / "secrets" / name), vip=vips.get(name), tuning=self.tuning,
            )
        for name, ctx in ctxs.items():
            ctx.related = {o: ctxs[o] for o in sorted(b.related(name)) if o in ctxs}
        for name, ctx in ctxs.items():
            if ctx.kind in LB_KINDS:
                for other in ctx.related.values():
                    op = operator_for(other.kind)
                    if op is not None:
                        for fe in op.frontends(other):
                            if other.options.get("balance"):
                                fe = type(fe)(**{**fe.__dict__, "balance": other.options["balance"]})
                            ctx.frontends.append(fe)
        return ctxs

    # ----------------------------------------------------------------- deploy
    def deploy(self, progress: Callable[[str, str], None] = lambda app, msg: None,
               only: set[str] | None = None) -> DeployReport:
        """Apply the recorded bundle; ``progress(app, message)`` is called as steps start and end.

        ``only``: deploy just these applications (and nothing that depends on a failed one).
        Returns a :class:`DeployReport`.  Operator failures never raise: they are recorded on the
        units (``error`` + message) and reported.
        """
        t0 = time.monotonic()
        report = DeployReport()
        plan = self.plan()
        ctxs = self.contexts()
        blocked: set[str] = set()
        finished: set[str] = set()
        lock = threading.Lock()
        todo = [n for n in plan.order if only is None or n in only]
        # Applications outside ``only`` are treated as deployed already.
        finished.update(n for n in plan.order if n not in todo)

        def gate(name: str) -> bool:
            """Record an application that cannot be applied; True when it was gated."""
            ctx = ctxs[name]
            waiting_on = sorted(plan.dependencies(name) & blocked)
            if waiting_on:
                msg = f"waiting for {', '.join(waiting_on)}"
            elif operator_for(ctx.kind) is None:
                msg = f"stackha cannot deploy charm {self.bundle.applications[name].charm} yet"
            else:
                return False
            state = WorkloadState.WAITING if waiting_on else WorkloadState.BLOCKED
            self._set_units(ctx, state, msg)
            report.waiting[name] = msg
            blocked.add(name)
            progress(name, msg)
            return True

        def run(name: str) -> None:
            ctx = ctxs[name]
            op = operator_for(ctx.kind)
            started = time.monotonic()
            progress(name, "deploying")
            self._set_units(ctx, WorkloadState.MAINTENANCE, "deploying", only_if_new=True)
            try:
                changes = op.apply(ctx)
            except Exception as exc:  # an operator failure is recorded on its units, never raised
                msg = f"{type(exc).__name__}: {exc}".strip()
                self.store.event(name, "apply failed: " + traceback.format_exc(limit=3)[-2000:])
                self._set_units(ctx, WorkloadState.ERROR, msg, unit=getattr(exc, "unit", None))
                with lock:
                    report.failed[name] = msg
                    blocked.add(name)
                progress(name, "error: " + msg)
                return
            finally:
                report.app_seconds[name] = time.monotonic() - started
            for c in changes:
                self.store.event(name, c)
            status = self.observe_app(ctx, op)
            broken = [u for u in status.units if u.state in (WorkloadState.ERROR, WorkloadState.BLOCKED)]
            pending = [u for u in status.units if u.state in (WorkloadState.WAITING, WorkloadState.MAINTENANCE)]
            with lock:
                report.changes[name] = list(changes)
                if broken:
                    report.failed[name] = "; ".join(f"{u.unit}: {u.state.value} {u.message}" for u in broken)
                    blocked.add(name)
                elif pending:
                    # Juju's "waiting": on something deployed later (HAProxy waits for its backends).
                    report.waiting[name] = "; ".join(f"{u.unit}: {u.message}" for u in pending)
            progress(name, f"{len(changes)} change(s)" if changes else "no changes")

        # Applications whose dependencies (relations, and every lower tier) have finished run
        # concurrently, at most DEPLOY_WORKERS at a time: operators touch only their own units'
        # files and daemons, and the state store serialises its writes.
        running: dict[Future, str] = {}
        with ThreadPoolExecutor(max_workers=DEPLOY_WORKERS, thread_name_prefix="deploy") as pool:
            while todo or running:
                for name in list(todo):
                    with lock:
                        ready = plan.ready(name, finished | blocked)
                    if not ready:
                        continue
                    todo.remove(name)
                    with lock:
                        gated = gate(name)
                        if gated:
                            finished.add(name)
                    if not gated:
                        running[pool.submit(run, name)] = name
                if not running:
                    if todo:  # cannot happen for an acyclic plan; never spin
                        raise RuntimeError(f"deploy plan stuck on {', '.join(todo)}")
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    name = running.pop(fut)
                    fut.result()
                    with lock:
                        finished.add(name)
        # Applications that waited on later ones are observed again once everything is applied,
        # until they settle (a load balancer marks a new backend UP after its `rise` checks).
        def settled() -> bool:
            for name in list(report.waiting):
                if name in blocked or (only is not None and name not in only):
                    continue
                status = self.observe_app(ctxs[name])
                if all(u.state == WorkloadState.ACTIVE for u in status.units):
                    del report.waiting[name]
            return not [n for n in report.waiting if n not in blocked and (only is None or n in only)]

        with contextlib.suppress(WaitTimeout):  # what still waits stays in report.waiting
            wait_until(settled, SETTLE_S, 0.5, what="waiting applications active")
        report.seconds = time.monotonic() - t0
        return report

    def _set_units(self, ctx: AppContext, state: WorkloadState, message: str, *, unit: str | None = None,
                   only_if_new: bool = False) -> None:
        for u in ctx.units:
            if unit is not None and u.name != unit:
                continue
            if only_if_new and self.store.unit(u.name) is not None:
                continue
            self.store.set_unit(u.name, ctx.name, u.host.name, state.value, message)

    # ----------------------------------------------------------------- observe and recover
    def observe_app(self, ctx: AppContext, op=None) -> AppStatus:
        """Observe one application (records the unit states); never raises for a dead unit."""
        op = op or operator_for(ctx.kind)
        if op is None:
            rec = {r.unit: r for r in self.store.units() if r.app == ctx.name}
            return AppStatus(ctx.name, [UnitStatus(u.name, WorkloadState(rec[u.name].state) if u.name in rec
                                                   else WorkloadState.UNKNOWN, rec[u.name].message if u.name in rec else "")
                                        for u in ctx.units])
        try:
            status = op.observe(ctx)
        except Exception as exc:
            status = AppStatus(ctx.name, [UnitStatus(u.name, WorkloadState.UNKNOWN, f"observe failed: {exc}")
                                          for u in ctx.units])
        for us in status.units:
            rec = self.store.unit(us.unit)
            # A unit left in error by a failed apply stays in error until `resolved`.
            if rec is not None and rec.state == WorkloadState.ERROR.value and us.state != WorkloadState.ACTIVE:
                us.state, us.message = WorkloadState.ERROR, rec.message
            host = next((u.host.name for u in ctx.units if u.name == us.unit), "")
            self.store.set_unit(us.unit, ctx.name, host, us.state.value, us.message)
        return status

    def status(self) -> list[AppStatus]:
        """Every application's observed status, in plan order."""
        ctxs = self.contexts()
        return [self.observe_app(ctxs[name]) for name in self.plan().order]

    def recover(self, apps: set[str] | None = None,
                progress: Callable[[str, str], None] = lambda app, msg: None) -> dict[str, list[str]]:
        """Run each operator's ``recover`` for applications with a unit not active: Galera cold
        start, RabbitMQ rejoin, daemons restarted.  Returns what each did.

        An application is recovered as soon as the applications it depends on (the plan's graph)
        are done, in parallel with independent ones: after a cold start Keystone waits for Galera
        and HAProxy, not for RabbitMQ."""
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        plan = self.plan()
        ctxs = self.contexts()
        names = [n for n in plan.order if (apps is None or n in apps) and operator_for(ctxs[n].kind) is not None]
        done: dict[str, list[str]] = {}

        def one(name: str) -> list[str] | None:
            ctx = ctxs[name]
            op = operator_for(ctx.kind)
            status = self.observe_app(ctx, op)
            if all(u.state == WorkloadState.ACTIVE for u in status.units):
                return None
            progress(name, "recovering")
            try:
                result = list(op.recover(ctx))
            except Exception as exc:
                result = [f"recover failed: {type(exc).__name__}: {exc}"]
            self.observe_app(ctx, op)
            progress(name, "; ".join(result) or "nothing to do")
            return result

        finished: set[str] = set()
        pending = list(names)
        with ThreadPoolExecutor(max_workers=4) as pool:
            running: dict = {}
            while pending or running:
                for name in list(pending):
                    if plan.dependencies(name) & set(names) <= finished:
                        running[pool.submit(one, name)] = name
                        pending.remove(name)
                ready, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in ready:
                    name = running.pop(fut)
                    finished.add(name)
                    result = fut.result()
                    if result is not None:
                        done[name] = result
        return {n: done[n] for n in names if n in done}

    def resolved(self, unit: str) -> None:
        """Clear ``unit``'s error so the next deploy retries it (Juju's ``resolved``)."""
        rec = self.store.unit(unit)
        if rec is None:
            known = ", ".join(r.unit for r in self.store.units()) or "none"
            raise UserError(f"no unit {unit!r} in deployment {self.name!r} (units: {known})")
        if rec.state != WorkloadState.ERROR.value:
            raise UserError(f"unit {unit} is {rec.state}, not in error; nothing to resolve")
        self.store.set_unit(unit, rec.app, rec.host, WorkloadState.MAINTENANCE.value, "resolved: retrying")

    # ----------------------------------------------------------------- destroy
    def destroy(self) -> list[str]:
        """Tear down what the provider made (the lab: everything; SSH: stackha's daemons) and
        forget the deployment (secrets included).  Returns what the provider removed."""
        provider = self.provider
        if self._store is not None:
            self._store.close()
        removed = provider.teardown()
        provider.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return removed

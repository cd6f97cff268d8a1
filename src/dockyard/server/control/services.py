"""Services in the store: create, update, scale, remove, and the controller loop.

The controller (leader only, like the scheduler) reads every live service and
its replicas, asks the pure ``core.rollout.plan`` what to do, and writes the
result in one transaction per service: new pending replica tasks (the
scheduler places them and allocates their host ports), stop requests (the
agents converge), reverts and the rollout state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from dockyard.core.ids import new_id
from dockyard.core.rollout import (
    STOP_SCALED_DOWN,
    STOP_SERVICE_REMOVED,
    STOP_UNHEALTHY,
    STOP_UPDATED,
    Plan,
    Replica,
    Rollout,
    RolloutStatus,
    ended_on_its_own,
    plan,
)
from dockyard.core.services import Health, ServiceSpec
from dockyard.core.states import ACTIVE_STATES, TERMINAL_STATES, DesiredState, TaskState
from dockyard.scheduler.constraints import parse_constraints
from dockyard.server.errors import Conflict
from dockyard.server.loop import Loop
from dockyard.server.state.auth import Principal
from dockyard.server.state.batch import chunks
from dockyard.server.state.events import EventKind, record
from dockyard.server.state.jobs import request_stop, scheduling_fields
from dockyard.server.state.services import SERVICE, instance_parts, live_services
from dockyard.server.state.tasks import end_pending
from dockyard.store.db import Database
from dockyard.store.errors import NotFound
from dockyard.store.tables import Task, Workload

log = logging.getLogger(__name__)

#: Ended replicas younger than this are read (back-off, rollout failure detection).
HISTORY_S = 600.0


def find_service(session: Session, principal: Principal, name: str) -> Workload:
    """A live service by name (or id) that ``principal`` may see; NotFound otherwise."""
    query = live_services().where(or_(Workload.name == name, Workload.id == name))
    if not principal.is_admin:
        query = query.where(Workload.owner_id == principal.user_id)
    found = session.scalars(query.limit(1)).first()
    if found is None:
        raise NotFound("service", name)
    return found  # type: ignore[no-any-return]


def create_service(
    session: Session,
    owner: Principal,
    spec: ServiceSpec,
    policy: dict[str, Any] | None,
    *,
    template: str = "",
    expires_at: float | None = None,
) -> Workload:
    """Store a service (version 1); the controller starts its replicas.

    Names of live services are unique across the cluster: the name is the route
    (``/svc/NAME/``)."""
    parse_constraints(spec.task.constraints)
    taken = session.scalar(
        select(func.count()).select_from(
            live_services().where(Workload.name == spec.name).subquery()
        )
    )
    if taken:
        raise Conflict(f"a service named {spec.name} exists", code="name_taken")
    now = time.time()
    workload = Workload(
        id=new_id(),
        owner_id=owner.user_id,
        name=spec.name,
        kind=SERVICE,
        spec={**spec.to_dict(), "policy": policy},
        created_at=now,
        version=1,
        previous_spec=None,
        rollout=Rollout().to_dict(),
        template=template,
        expires_at=expires_at,
    )
    session.add(workload)
    session.flush()
    record(
        session,
        EventKind.TASK,
        "service_created",
        f"service {spec.name} created: {spec.replicas} x {spec.task.image}",
        owner_id=owner.user_id,
    )
    return workload


def update_service(
    session: Session, workload: Workload, spec: ServiceSpec, policy: dict[str, Any] | None
) -> str:
    """Replace the spec. Returns ``"unchanged"``, ``"scaled"`` (same containers) or
    ``"rolling"`` (a new version rolls out under the spec's update config)."""
    parse_constraints(spec.task.constraints)
    if spec.name != workload.name:
        raise Conflict("a service cannot be renamed", code="rename")
    current = ServiceSpec.from_dict(workload.spec)
    new_raw = {**spec.to_dict(), "policy": policy}
    if new_raw == workload.spec:
        return "unchanged"
    if spec.container_equal(current) and workload.spec.get("policy") == policy:
        workload.spec = new_raw
        record(
            session,
            EventKind.TASK,
            "service_scaled",
            f"service {spec.name}: {current.replicas} -> {spec.replicas} replicas",
            owner_id=workload.owner_id,
        )
        return "scaled"
    now = time.time()
    workload.previous_spec = workload.spec
    workload.spec = new_raw
    workload.version += 1
    workload.rollout = Rollout(
        RolloutStatus.UPDATING,
        workload.version - 1,
        workload.version,
        now,
        f"rolling out version {workload.version}",
    ).to_dict()
    record(
        session,
        EventKind.TASK,
        "rollout_started",
        f"service {spec.name}: version {workload.version - 1} -> {workload.version}",
        owner_id=workload.owner_id,
    )
    return "rolling"


def remove_service(session: Session, workload: Workload, why: str = "removed") -> set[str]:
    """Mark the service removed and stop its replicas. Returns the nodes to push."""
    workload.deleted_at = time.time()
    touched: set[str] = set()
    for task in session.scalars(
        select(Task).where(
            Task.workload_id == workload.id, Task.state.in_([s.value for s in ACTIVE_STATES])
        )
    ):
        stop_replica(session, task, STOP_SERVICE_REMOVED, f"service {why}")
        if task.node_id:
            touched.add(task.node_id)
    record(
        session,
        EventKind.TASK,
        f"service_{why}",
        f"service {workload.name} {why}",
        owner_id=workload.owner_id,
    )
    return touched


def stop_replica(session: Session, task: Task, reason: str, message: str) -> None:
    """Stop one replica: a pending one ends at once, a placed one via its agent."""
    if task.state == TaskState.PENDING:
        end_pending(session, task, reason, message)
    else:
        request_stop(session, task, reason, message)


def new_replica(
    workload: Workload, spec: ServiceSpec, attempt: int, not_before: float | None
) -> Task:
    """A pending task of the service's current version; host ports are allocated at
    placement (``port_map`` host sides are 0 until then)."""
    task = spec.task
    return Task(
        id=new_id(),
        workload_id=workload.id,
        owner_id=workload.owner_id,
        name=workload.name,
        attempt=attempt,
        image=task.image,
        cpu_millis=task.resources.cpu_millis,
        memory_bytes=task.resources.memory_bytes,
        state=TaskState.PENDING,
        desired_state=DesiredState.RUN,
        reason="backoff" if not_before else "submitted",
        message="",
        created_at=time.time(),
        not_before=not_before,
        stop_reason="",
        # Services publish on allocated ports (no fixed host ports) and spread.
        **{**scheduling_fields(task), "ports": "", "algorithm": "spread"},
        version=workload.version,
        port_map=[[p, 0] for p in spec.ports],
    )


def replica_view(task: Task) -> Replica:
    return Replica(
        task_id=task.id,
        version=task.version,
        state=TaskState(task.state),
        desired_run=task.desired_state == DesiredState.RUN,
        health=Health(task.health or ""),
        created_at=task.created_at,
        finished_at=task.finished_at,
        stop_reason=task.stop_reason,
        reason=task.reason,
    )


def replicas_of(session: Session, workload_ids: list[str], now: float) -> dict[str, list[Task]]:
    """The services' replicas the planner looks at: active ones and those that ended in
    the last :data:`HISTORY_S` (back-off, rollout failures), by workload id."""
    out: dict[str, list[Task]] = {}
    for chunk in chunks(workload_ids):
        for task in session.scalars(
            select(Task).where(
                Task.workload_id.in_(chunk),
                or_(
                    Task.state.in_([s.value for s in ACTIVE_STATES]),
                    Task.finished_at > now - HISTORY_S,
                ),
            )
        ):
            out.setdefault(task.workload_id, []).append(task)
    return out


def _expired(workload: Workload, now: float) -> bool:
    return workload.expires_at is not None and workload.expires_at <= now


def ran_once(session: Session, workloads: list[Workload]) -> set[str]:
    """The run-once services (``run_once``) whose replica of their current version has
    ended on its own, at any time: they start no other."""
    versions = {w.id: w.version for w in workloads if w.spec.get("run_once")}
    done: set[str] = set()
    for chunk in chunks(list(versions)):
        for task in session.scalars(
            select(Task).where(
                Task.workload_id.in_(chunk), Task.state.in_([s.value for s in TERMINAL_STATES])
            )
        ):
            if task.version == versions[task.workload_id] and ended_on_its_own(replica_view(task)):
                done.add(task.workload_id)
    return done


def _plan(workload: Workload, tasks: list[Task], now: float, ran: bool = False) -> Plan:
    spec = ServiceSpec.from_dict(workload.spec)
    return plan(
        version=workload.version,
        replicas_wanted=spec.replicas,
        checked=spec.health is not None,
        update=spec.update,
        rollout=Rollout.from_dict(workload.rollout),
        replicas=[replica_view(t) for t in tasks],
        now=now,
        can_revert=workload.previous_spec is not None,
        ran=ran,
    )


class ServiceController(Loop):
    """Keeps every service at its replicas, rolls out new versions, expires instances."""

    name = "services"

    def __init__(
        self,
        db: Database,
        push: Callable[[set[str]], None],
        wake_scheduler: Callable[[], None],
        interval: float = 0.5,
    ) -> None:
        super().__init__(interval)
        self._db = db
        self._push = push
        self._wake_scheduler = wake_scheduler

    def step(self) -> None:
        """Plan every live service from one read; write only those with something to do
        (each in its own transaction, planned again there on fresh rows)."""
        now = time.time()
        with self._db.read() as session:
            services = list(session.scalars(live_services()))
            replicas = replicas_of(session, [w.id for w in services], now)
            ran = ran_once(session, services)
            due = [
                w.id
                for w in services
                if _expired(w, now) or not _plan(w, replicas.get(w.id, []), now, w.id in ran).idle
            ]
        touched: set[str] = set()
        started = 0
        for workload_id in due:
            with self._db.write() as session:
                moved, count = self._converge(session, workload_id, now)
            touched |= moved
            started += count
        if touched:
            self._push(touched)
        if started:
            self._wake_scheduler()

    def _converge(self, session: Session, workload_id: str, now: float) -> tuple[set[str], int]:
        workload = session.get(Workload, workload_id)
        if workload is None or workload.deleted_at is not None:
            return set(), 0
        if _expired(workload, now):  # a template instance's services expire together
            touched: set[str] = set()
            for part in instance_parts(session, workload):
                touched |= remove_service(session, part, "expired")
            return touched, 0
        spec = ServiceSpec.from_dict(workload.spec)
        tasks = replicas_of(session, [workload.id], now).get(workload.id, [])
        decision = _plan(workload, tasks, now, bool(ran_once(session, [workload])))
        touched = set()
        by_id = {t.id: t for t in tasks}
        for task_id, reason in decision.stop:
            task = by_id[task_id]
            stop_replica(session, task, reason, _stop_message(reason, workload))
            if task.node_id:
                touched.add(task.node_id)
        if decision.revert and workload.previous_spec is not None:
            failed = workload.spec
            workload.spec = workload.previous_spec
            workload.previous_spec = failed
            workload.version += 1
        if decision.rollout is not None:
            workload.rollout = decision.rollout.to_dict()
        for reason, message in decision.events:
            record(
                session,
                EventKind.TASK,
                reason,
                f"service {workload.name}: {message}",
                owner_id=workload.owner_id,
            )
        if decision.start and not decision.revert:
            attempt = int(
                session.scalar(
                    select(func.max(Task.attempt)).where(Task.workload_id == workload.id)
                )
                or 0
            )
            not_before = now + decision.delay_s if decision.delay_s > 0 else None
            for index in range(decision.start):
                task = new_replica(workload, spec, attempt + index + 1, not_before)
                session.add(task)
                session.flush()
                record(
                    session,
                    EventKind.TASK,
                    "replica_created",
                    f"service {workload.name} version {workload.version}"
                    + (f", after a {decision.delay_s:g}s back-off" if not_before else ""),
                    task=task,
                )
        return touched, decision.start


def _stop_message(reason: str, workload: Workload) -> str:
    return {
        STOP_UNHEALTHY: "failed its health checks; replaced",
        STOP_UPDATED: f"replaced by version {workload.version}",
        STOP_SCALED_DOWN: "service scaled down",
        STOP_SERVICE_REMOVED: "service removed",
    }.get(reason, reason)

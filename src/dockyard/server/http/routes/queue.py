"""The queue and the scheduler: order, lock, deleting queued entries, dry-run plans."""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from dockyard.scheduler.eta import DEFAULT_HORIZON, estimate_starts
from dockyard.scheduler.placement import place
from dockyard.scheduler.queue import QueuedTask, order
from dockyard.server.control import preemption, scheduling
from dockyard.server.http.deps import AdminUser, CurrentUser, server_context
from dockyard.server.http.schemas import ErrorOut, JobCreate
from dockyard.server.state import queue as queue_ops
from dockyard.server.state import tasks as task_ops
from dockyard.server.state.events import EventKind, record
from dockyard.server.state.policy import caller_policy, enforce

router = APIRouter()


class QueueEntryOut(BaseModel):
    position: int = Field(description="1 = tried first by the next scheduling pass")
    id: str
    name: str
    owner: str
    priority: int
    factor: float = Field(description="the owner's fair-share factor at this position")
    submitted_at: float
    cpu: float
    memory_bytes: int
    gpus: int
    max_runtime_s: float | None
    reason: str = Field(description="unschedulable, quota, queue_locked, submitted, ...")
    message: str = Field(description="why it waits, e.g. 0/12 nodes fit: 8 insufficient memory")
    pending_detail: dict[str, Any] | None
    estimated_start: float | None = Field(
        default=None,
        description="expected start (epoch s) from declared runtimes and queue order "
        "(docs/scheduler.md, Queue ETAs); null: not before work without a declared end "
        "finishes, or beyond the first 1,000 queued tasks",
    )


class QueueOut(BaseModel):
    locked: bool
    locked_by: str | None
    total: int = Field(description="queued tasks in all (yours only unless admin)")
    entries: list[QueueEntryOut]


class LockOut(BaseModel):
    locked: bool
    locked_by: str | None


class PlanOut(BaseModel):
    fits: bool = Field(description="it would be placed now if submitted")
    node_id: str | None
    node: str | None
    gpus: list[int]
    reason: str = Field(description="why not, e.g. 0/3 nodes fit: 3 insufficient memory")
    pending_detail: dict[str, Any] | None
    queue_position: int = Field(description="where it would join the queue (1 = first)")
    queued_ahead: int = Field(description="queued tasks that would be tried before it")
    queue_locked: bool
    evictions: list[dict[str, str]] = Field(
        default_factory=list,
        description="with preempt=true: the running tasks it would evict now "
        "({task_id, node, why}; only when the server has preemption on)",
    )


@router.get("/api/v1/queue", response_model=QueueOut)
def queue(
    request: Request,
    who: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
) -> QueueOut:
    """Queued (pending) tasks in the order the scheduler tries them: priority, then the
    owner's fair-share factor, then age. Users see their own entries, with global positions."""
    now = time.time()
    with server_context(request).db.read() as session:
        lock = scheduling.queue_lock(session)
        rows = scheduling.pending_rows(session, now)
        fair = scheduling.fair_share_now(session, now)
        ranked = order(
            scheduling.queued(rows),
            fair.usage,
            scheduling.shares(session),
            scheduling.fair_share_config(),
        )
        etas = _etas(session, rows, ranked, now)
        if not who.is_admin:
            ranked = [r for r in ranked if r.task.owner_id == who.user_id]
        page = ranked[:limit]
        extra = queue_ops.entry_details(session, [r.task.task_id for r in page])
        names = queue_ops.owner_names(session)
    entries = []
    for r in page:
        info = extra.get(r.task.task_id)
        if info is None:
            continue
        entries.append(
            QueueEntryOut(
                position=r.position,
                id=r.task.task_id,
                name=info.name,
                owner=names.get(r.task.owner_id, "?"),
                priority=r.task.priority,
                factor=r.factor,
                submitted_at=r.task.submitted_at,
                cpu=r.task.cpu_millis / 1000,
                memory_bytes=r.task.memory_bytes,
                gpus=r.task.gpus,
                max_runtime_s=r.task.max_runtime_s,
                reason=info.reason,
                message=info.message,
                pending_detail=info.pending_detail,
                estimated_start=_finite(etas.get(r.task.task_id)),
            )
        )
    return QueueOut(
        locked=lock is not None,
        locked_by=lock["by"] if lock else None,
        total=len(ranked),
        entries=entries,
    )


def _etas(session: Any, rows: Any, ranked: Any, now: float) -> dict[str, float]:
    """Estimated starts of the first queued tasks (scheduler/eta.py), in queue order."""
    if not ranked:
        return {}
    by_id = {r.id: r for r in rows}
    build = scheduling.Requests()
    requests = [build.build(by_id[r.task.task_id]) for r in ranked[:DEFAULT_HORIZON]]
    views = scheduling.node_views(session)
    return estimate_starts(requests, views, scheduling.running_tasks(session), now)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _set_lock(request: Request, locked: bool, who: str) -> LockOut:
    ctx = server_context(request)
    with ctx.db.write() as session:
        scheduling.set_queue_lock(session, locked, who)
        record(
            session,
            EventKind.USER,
            "queue_locked" if locked else "queue_unlocked",
            f"queue {'locked' if locked else 'unlocked'} by {who}",
        )
    ctx.wake_scheduler()
    return LockOut(locked=locked, locked_by=who if locked else None)


@router.post("/api/v1/queue/lock", response_model=LockOut, responses={403: {"model": ErrorOut}})
def lock_queue(request: Request, who: AdminUser) -> LockOut:
    """Nothing new starts (running work continues) until the queue is unlocked."""
    return _set_lock(request, True, who.name)


@router.post("/api/v1/queue/unlock", response_model=LockOut, responses={403: {"model": ErrorOut}})
def unlock_queue(request: Request, who: AdminUser) -> LockOut:
    return _set_lock(request, False, who.name)


@router.delete(
    "/api/v1/queue/{ref}",
    response_model=QueueEntryOut,
    responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
)
def delete_queued(request: Request, ref: str, who: CurrentUser) -> QueueEntryOut:
    """Remove a queued task (yours; admins: anyone's). It ends as ``killed`` with reason
    ``dequeued``; its history stays. A task already placed is a 409 (use kill)."""
    ctx = server_context(request)
    with ctx.db.write() as session:
        task = task_ops.dequeue(session, who, ref)
        owner = queue_ops.owner_name(session, task.owner_id)
        return QueueEntryOut(
            position=0,
            id=task.id,
            name=task.name,
            owner=owner if owner is not None else "?",
            priority=task.priority,
            factor=0.0,
            submitted_at=task.created_at,
            cpu=task.cpu_millis / 1000,
            memory_bytes=task.memory_bytes,
            gpus=task.gpus,
            max_runtime_s=task.max_runtime_s,
            reason=task.reason,
            message=task.message,
            pending_detail=None,
        )


@router.post("/api/v1/plan", response_model=PlanOut)
def plan(request: Request, body: JobCreate, who: CurrentUser, preempt: bool = False) -> PlanOut:
    """Dry run: where this job would go if submitted now, or why not. Writes nothing.
    ``preempt``: also which running work it would evict (if it does not fit)."""
    ctx = server_context(request)
    spec = body.to_spec()
    now = time.time()
    with ctx.db.read() as session:
        spec = enforce(spec, caller_policy(session, who, ctx.cluster_policy))
        build = scheduling.Requests()
        probe = build.build(
            _ProbeRow(
                id="(plan)",
                cpu_millis=spec.resources.cpu_millis,
                memory_bytes=spec.resources.memory_bytes,
                gpus=spec.gpus,
                ports=",".join(str(p) for p in spec.ports),
                constraints=list(spec.constraints),
                algorithm=spec.algorithm,
                max_runtime_s=spec.max_runtime_s,
                image=spec.image,
                port_map=[],
            )
        )
        lock = scheduling.queue_lock(session)
        rows = scheduling.pending_rows(session, now)
        fair = scheduling.fair_share_now(session, now)
        mine = QueuedTask(
            "(plan)",
            who.user_id,
            spec.priority,
            now,
            spec.resources.cpu_millis,
            spec.resources.memory_bytes,
            spec.gpus,
            spec.max_runtime_s,
        )
        ranked = order(
            [*scheduling.queued(rows), mine],
            fair.usage,
            scheduling.shares(session),
            scheduling.fair_share_config(),
        )
        position = next(r.position for r in ranked if r.task.task_id == "(plan)")
        views = scheduling.node_views(session)
        result = place([probe], views)
        evictions = []
        if preempt and "(plan)" not in result.assignments:
            evictions = preemption.decide(
                session,
                [preemption.contender(_PreemptProbe(who.user_id, spec), probe.constraints)],
                views,
                fair.usage,
                scheduling.shares(session),
                now,
            )
    node_id = result.assignments.get("(plan)")
    names = {v.node_id: v.name for v in views}
    return PlanOut(
        fits=node_id is not None and lock is None,
        node_id=node_id,
        node=names.get(node_id) if node_id else None,
        gpus=list(result.gpus.get("(plan)", ())),
        reason=(
            f"queue locked by {lock['by']}: nothing new starts"
            if lock is not None
            else result.pending_reasons.get("(plan)", "")
        ),
        pending_detail=result.pending_detail.get("(plan)"),
        queue_position=position,
        queued_ahead=position - 1,
        queue_locked=lock is not None,
        evictions=[
            {"task_id": e.victim, "node": names.get(e.node_id, e.node_id), "why": e.why}
            for e in evictions
        ],
    )


class _ProbeRow:
    """A stand-in for a pending-task row, for the dry run."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


class _PreemptProbe:
    """The dry run's job as a preemption contender's row."""

    def __init__(self, owner_id: str, spec: Any) -> None:
        self.id = "(plan)"
        self.owner_id = owner_id
        self.priority = spec.priority
        self.cpu_millis = spec.resources.cpu_millis
        self.memory_bytes = spec.resources.memory_bytes
        self.gpus = spec.gpus

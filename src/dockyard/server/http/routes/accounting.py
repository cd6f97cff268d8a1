"""Accounting, per-user statistics, quotas and admin maintenance routes."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import delete, func, select

from dockyard.core.accounting import AccountingRecord, to_csv, to_sge_line
from dockyard.core.quota import DEFAULT_PERIOD_S, Quota
from dockyard.core.states import TERMINAL_STATES, TaskState
from dockyard.server.control.scheduling import fair_share_now
from dockyard.server.errors import Forbidden
from dockyard.server.http.deps import AdminUser, CurrentUser, server_context
from dockyard.server.http.schemas import ErrorOut, GcOut, GcRequest, UserStatsOut
from dockyard.server.state.accounting import consumed_cpu_seconds
from dockyard.server.state.events import EventKind, record
from dockyard.store.errors import NotFound
from dockyard.store.tables import Accounting, Event, LogLine, Task, User, Workload

router = APIRouter()


def _records(
    request: Request,
    who_id: str,
    is_admin: bool,
    user: str | None,
    since: float | None,
    limit: int,
) -> list[AccountingRecord]:
    query = select(Accounting)
    with server_context(request).db.read() as session:
        if user:
            target = session.scalar(select(User).where(User.name == user))
            if target is None:
                raise NotFound("user", user)
            if target.id != who_id and not is_admin:
                raise Forbidden("only admins read other users' accounting")
            query = query.where(Accounting.owner_id == target.id)
        elif not is_admin:
            query = query.where(Accounting.owner_id == who_id)
        if since is not None:
            query = query.where(Accounting.ended_at >= since)
        rows = session.scalars(query.order_by(Accounting.seq).limit(limit))
        return [
            AccountingRecord(
                seq=r.seq,
                task_id=r.task_id,
                workload_id=r.workload_id,
                job_name=r.job_name,
                owner=r.owner,
                node=r.node,
                image=r.image,
                attempt=r.attempt,
                state=r.state,
                reason=r.reason,
                exit_code=r.exit_code,
                submitted_at=r.submitted_at,
                started_at=r.started_at,
                ended_at=r.ended_at,
                wall_s=r.wall_s,
                cpu_s=r.cpu_s,
                max_memory_bytes=r.max_memory_bytes,
                memory_gib_s=r.memory_gib_s,
                gpu_s=r.gpu_s,
                cpu_limit=r.cpu_limit,
                memory_limit_bytes=r.memory_limit_bytes,
                quota=dict(r.quota or {}),
            )
            for r in rows
        ]


Limit = Annotated[int, Query(ge=1, le=100_000)]


@router.get(
    "/api/v1/accounting",
    response_model=list[AccountingRecord],
    responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)
def accounting(
    request: Request,
    who: CurrentUser,
    user: str | None = None,
    since: Annotated[float | None, Query(description="epoch seconds")] = None,
    limit: Limit = 10_000,
) -> list[AccountingRecord]:
    """Accounting records of finished tasks (your own; admins: anyone's)."""
    return _records(request, who.user_id, who.is_admin, user, since, limit)


@router.get(
    "/api/v1/accounting/export",
    response_class=PlainTextResponse,
    responses={403: {"model": ErrorOut}},
)
def export_accounting(
    request: Request,
    who: CurrentUser,
    format: Annotated[str, Query(pattern="^(sge|csv)$")] = "sge",
    user: str | None = None,
    since: Annotated[float | None, Query(description="epoch seconds")] = None,
    limit: Limit = 100_000,
) -> PlainTextResponse:
    """Accounting as an SGE accounting file (qacct format) or CSV."""
    records = _records(request, who.user_id, who.is_admin, user, since, limit)
    if format == "csv":
        return PlainTextResponse(to_csv(records), media_type="text/csv")
    return PlainTextResponse("".join(to_sge_line(r) + "\n" for r in records))


@router.get("/api/v1/users/stats", response_model=list[UserStatsOut])
def user_stats(request: Request, who: CurrentUser) -> list[UserStatsOut]:
    """Per user: running, queued, finished tasks, usage in the quota period, quota."""
    now = time.time()
    terminal = [s.value for s in TERMINAL_STATES]
    with server_context(request).db.read() as session:
        users = list(session.scalars(select(User).order_by(User.name)))
        fair = fair_share_now(session, now)
        if not who.is_admin:
            users = [u for u in users if u.id == who.user_id]
        out = []
        for user in users:
            counts = dict(
                (str(state), int(n))
                for state, n in session.execute(
                    select(Task.state, func.count())
                    .where(Task.owner_id == user.id)
                    .group_by(Task.state)
                ).all()
            )
            quota = Quota.from_dict(user.quota) if user.quota else Quota()
            period = quota.period_s if user.quota else DEFAULT_PERIOD_S
            charged = session.execute(
                select(
                    func.coalesce(func.sum(Accounting.cpu_s), 0.0),
                    func.coalesce(func.sum(Accounting.memory_gib_s), 0.0),
                ).where(Accounting.owner_id == user.id, Accounting.ended_at >= now - period)
            ).one()
            out.append(
                UserStatsOut(
                    name=user.name,
                    running=counts.get(TaskState.RUNNING, 0),
                    queued=counts.get(TaskState.PENDING, 0),
                    finished=sum(n for s, n in counts.items() if s in terminal),
                    cpu_seconds=float(charged[0]),
                    memory_gib_s=float(charged[1]),
                    quota=dict(user.quota or {}),
                    quota_cpu_hours_used=consumed_cpu_seconds(session, user.id, period, now) / 3600,
                    share=user.share,
                    usage=fair.usage.get(user.id, 0.0),
                    factor=fair.factors.get(user.id, 1.0),
                )
            )
        return out


@router.post("/api/v1/admin/gc", response_model=GcOut, responses={403: {"model": ErrorOut}})
def gc(request: Request, body: GcRequest, who: AdminUser) -> GcOut:
    """Remove finished work (tasks, their logs and events, empty jobs) past the retention."""
    now = time.time()
    cutoff = now - body.retention_s
    terminal = [s.value for s in TERMINAL_STATES]
    with server_context(request).db.write() as session:
        old = list(
            session.scalars(
                select(Task.id).where(Task.state.in_(terminal), Task.finished_at < cutoff)
            )
        )
        lines = events = tasks = workloads = acct = 0
        for start in range(0, len(old), 500):
            chunk = old[start : start + 500]
            lines += session.execute(delete(LogLine).where(LogLine.task_id.in_(chunk))).rowcount  # type: ignore[attr-defined]
            events += session.execute(delete(Event).where(Event.task_id.in_(chunk))).rowcount  # type: ignore[attr-defined]
            tasks += session.execute(delete(Task).where(Task.id.in_(chunk))).rowcount  # type: ignore[attr-defined]
        empty = select(Workload.id).where(~Workload.id.in_(select(Task.workload_id)))
        workloads = session.execute(delete(Workload).where(Workload.id.in_(empty))).rowcount  # type: ignore[attr-defined]
        if body.accounting_retention_s is not None:
            acct = session.execute(
                delete(Accounting).where(Accounting.ended_at < now - body.accounting_retention_s)
            ).rowcount  # type: ignore[attr-defined]
        record(
            session,
            EventKind.USER,
            "gc",
            f"gc by {who.name}: {tasks} tasks, {lines} log lines, {acct} accounting records",
        )
    asked = server_context(request).prune_nodes()
    return GcOut(
        nodes_pruned=asked,
        tasks=tasks,
        workloads=workloads,
        events=events,
        log_lines=lines,
        accounting=acct,
    )

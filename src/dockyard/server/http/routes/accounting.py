"""Accounting, per-user statistics, quotas and admin maintenance routes."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse

from dockyard.core.accounting import AccountingRecord, to_csv, to_sge_line
from dockyard.core.quota import DEFAULT_PERIOD_S, Quota
from dockyard.core.states import TERMINAL_STATES, TaskState
from dockyard.server.control.scheduling import fair_share_now
from dockyard.server.http.deps import AdminUser, CurrentUser, server_context
from dockyard.server.http.schemas import GcOut, GcRequest, UserStatsOut, errors
from dockyard.server.state import accounting as accounting_ops
from dockyard.server.state import gc as gc_ops
from dockyard.server.state.accounting import consumed_cpu_seconds
from dockyard.server.state.auth import Principal
from dockyard.server.state.events import EventKind, record
from dockyard.server.state.users import list_users

router = APIRouter()


def _records(
    request: Request,
    who: Principal,
    user: str | None,
    since: float | None,
    limit: int,
) -> list[AccountingRecord]:
    with server_context(request).db.read() as session:
        rows = accounting_ops.records(session, who, user, since, limit)
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
                array_index=r.array_index,
            )
            for r in rows
        ]


Limit = Annotated[int, Query(ge=1, le=100_000)]
#: Epoch seconds: finite (``inf``/``nan`` are a 422).
Since = Annotated[float | None, Query(allow_inf_nan=False, description="epoch seconds")]


@router.get(
    "/api/v1/accounting",
    response_model=list[AccountingRecord],
    responses=errors(403, 404),
)
def accounting(
    request: Request,
    who: CurrentUser,
    user: str | None = None,
    since: Since = None,
    limit: Limit = 10_000,
) -> list[AccountingRecord]:
    """Accounting records of finished tasks (your own; admins: anyone's)."""
    return _records(request, who, user, since, limit)


@router.get(
    "/api/v1/accounting/export",
    response_class=PlainTextResponse,
    responses=errors(403, 404),
)
def export_accounting(
    request: Request,
    who: CurrentUser,
    format: Annotated[str, Query(pattern="^(sge|csv)$")] = "sge",
    user: str | None = None,
    since: Since = None,
    limit: Limit = 100_000,
) -> PlainTextResponse:
    """Accounting as an SGE accounting file (qacct format) or CSV."""
    records = _records(request, who, user, since, limit)
    if format == "csv":
        return PlainTextResponse(to_csv(records), media_type="text/csv")
    return PlainTextResponse("".join(to_sge_line(r) + "\n" for r in records))


@router.get("/api/v1/users/stats", response_model=list[UserStatsOut])
def user_stats(request: Request, who: CurrentUser) -> list[UserStatsOut]:
    """Per user: running, queued, finished tasks, usage in the quota period, quota."""
    now = time.time()
    terminal = [s.value for s in TERMINAL_STATES]
    with server_context(request).db.read() as session:
        users = list_users(session)
        fair = fair_share_now(session, now)
        if not who.is_admin:
            users = [u for u in users if u.id == who.user_id]
        out = []
        for user in users:
            counts = accounting_ops.task_counts(session, user.id)
            quota = Quota.from_dict(user.quota) if user.quota else Quota()
            period = quota.period_s if user.quota else DEFAULT_PERIOD_S
            cpu_s, memory_gib_s = accounting_ops.charged_since(session, user.id, now - period)
            out.append(
                UserStatsOut(
                    name=user.name,
                    running=counts.get(TaskState.RUNNING, 0),
                    queued=counts.get(TaskState.PENDING, 0),
                    finished=sum(n for s, n in counts.items() if s in terminal),
                    cpu_seconds=cpu_s,
                    memory_gib_s=memory_gib_s,
                    quota=dict(user.quota or {}),
                    quota_cpu_hours_used=consumed_cpu_seconds(session, user.id, period, now) / 3600,
                    share=user.share,
                    usage=fair.usage.get(user.id, 0.0),
                    factor=fair.factors.get(user.id, 1.0),
                )
            )
        return out


@router.post("/api/v1/admin/gc", response_model=GcOut, responses=errors(403))
def gc(request: Request, body: GcRequest, who: AdminUser) -> GcOut:
    """Remove finished work (tasks, their logs and events, empty jobs) past the retention."""
    now = time.time()
    accounting_before = (
        now - body.accounting_retention_s if body.accounting_retention_s is not None else None
    )
    with server_context(request).db.write() as session:
        removed = gc_ops.collect(session, now - body.retention_s, accounting_before)
        record(
            session,
            EventKind.USER,
            "gc",
            f"gc by {who.name}: {removed.tasks} tasks, {removed.log_lines} log lines,"
            f" {removed.accounting} accounting records",
        )
    asked = server_context(request).prune_nodes()
    return GcOut(
        nodes_pruned=asked,
        tasks=removed.tasks,
        workloads=removed.workloads,
        events=removed.events,
        log_lines=removed.log_lines,
        accounting=removed.accounting,
    )

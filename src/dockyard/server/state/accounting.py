"""Usage samples, accounting records and consumed-quota enforcement."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol, cast

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.orm import Session

from dockyard.core.quota import Quota
from dockyard.core.states import TaskState
from dockyard.protocol.messages import TaskUsage, UsageSample
from dockyard.server.errors import Forbidden
from dockyard.server.state.auth import Principal
from dockyard.server.state.batch import chunks
from dockyard.server.state.jobs import request_stop
from dockyard.server.state.lifecycle import Ended
from dockyard.server.state.usage_history import UsageBuffer
from dockyard.server.state.users import find_user
from dockyard.store.tables import Accounting, Node, Task, User

QUOTA_EXCEEDED = "quota_exceeded"


def apply_usage(
    session: Session,
    node_id: str,
    samples: Sequence[UsageSample],
    history: UsageBuffer | None = None,
) -> set[str]:
    """Store the latest totals of running tasks on ``node_id``; return their owners.
    With ``history``, what each task used since its previous sample goes there too.

    One SELECT for the whole batch and one bulk UPDATE by primary key: the gateway
    thread handles these for every node every sample interval, so it must stay cheap.
    """
    latest: dict[str, tuple[float, int, float]] = {}
    for task_id, cpu_s, max_memory_bytes, memory_gib_s in samples:
        latest[task_id] = (cpu_s, max_memory_bytes, memory_gib_s)
    if not latest:
        return set()
    live = [s.value for s in TaskState if not s.terminal]
    rows = session.execute(
        select(
            Task.id,
            Task.owner_id,
            Task.cpu_seconds,
            Task.max_memory_bytes,
            Task.memory_gib_s,
            Task.last_sample_at,
        ).where(Task.id.in_(list(latest)), Task.node_id == node_id, Task.state.in_(live))
    ).all()
    if not rows:
        return set()
    now = time.time()
    if history is not None:
        for row in rows:
            cpu_s, peak, mem = latest[row.id]
            history.add_task(
                row.id,
                now,
                (row.cpu_seconds, row.memory_gib_s, row.last_sample_at),
                (cpu_s, mem, max(row.max_memory_bytes, peak)),
                str(row.owner_id),
            )
    session.execute(
        update(Task),
        [
            {
                "id": row.id,
                "cpu_seconds": max(row.cpu_seconds, latest[row.id][0]),
                "max_memory_bytes": max(row.max_memory_bytes, latest[row.id][1]),
                "memory_gib_s": max(row.memory_gib_s, latest[row.id][2]),
                "last_sample_at": now,
            }
            for row in rows
        ],
    )
    return {str(row.owner_id) for row in rows}


class Metered(Protocol):
    cpu_seconds: float
    max_memory_bytes: int
    memory_gib_s: float


def take_final_usage(task: Metered, usage: TaskUsage | None) -> None:
    """Keep an ended task's final totals (none reported: what the samples said)."""
    if usage is None:
        return
    task.cpu_seconds = max(task.cpu_seconds, float(usage.cpu_s))
    task.max_memory_bytes = max(task.max_memory_bytes, usage.max_memory_bytes)
    task.memory_gib_s = max(task.memory_gib_s, float(usage.memory_gib_s))


class Charged(Ended, Protocol):
    """What an accounting record reads of an ended task (a row or an ORM object)."""

    @property
    def id(self) -> str: ...
    @property
    def node_id(self) -> str | None: ...
    @property
    def workload_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def owner_id(self) -> str: ...
    @property
    def image(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def created_at(self) -> float: ...
    @property
    def cpu_seconds(self) -> float: ...
    @property
    def max_memory_bytes(self) -> int: ...
    @property
    def memory_gib_s(self) -> float: ...
    @property
    def cpu_millis(self) -> int: ...
    @property
    def memory_bytes(self) -> int: ...


def accounting_row(task: Charged, owner: str, quota: dict[str, Any], node: str) -> dict[str, Any]:
    """The columns of an ended task's accounting record (``Accounting``)."""
    started, ended = task.started_at, task.finished_at or 0.0
    return {
        "task_id": task.id,
        "workload_id": task.workload_id,
        "job_name": task.name,
        "owner_id": task.owner_id,
        "owner": owner,
        "node": node,
        "image": task.image,
        "attempt": task.attempt,
        "state": task.state,
        "reason": task.reason,
        "exit_code": task.exit_code,
        "submitted_at": task.created_at,
        "started_at": started,
        "ended_at": ended,
        "wall_s": max(0.0, ended - started) if started else 0.0,
        "cpu_s": task.cpu_seconds,
        "max_memory_bytes": task.max_memory_bytes,
        "memory_gib_s": task.memory_gib_s,
        "gpu_s": 0.0,
        "cpu_limit": task.cpu_millis / 1000,
        "memory_limit_bytes": task.memory_bytes,
        "quota": quota,
        "array_index": getattr(task, "array_index", None),
    }


def charge_all(session: Session, ended: Sequence[Charged]) -> None:
    """Write the accounting records of tasks that ended, once each (the task id is
    unique): the ids already charged, the owners and the nodes are read in one query
    each, and the records written with one executemany."""
    charged = {
        str(task_id)
        for chunk in chunks([t.id for t in ended])
        for task_id in session.scalars(
            select(Accounting.task_id).where(Accounting.task_id.in_(chunk))
        )
    }
    due = [t for t in ended if t.id not in charged and t.node_id and t.finished_at]
    if not due:
        return
    owners = {
        str(user_id): (str(name), dict(quota or {}))
        for chunk in chunks(list({t.owner_id for t in due}))
        for user_id, name, quota in session.execute(
            select(User.id, User.name, User.quota).where(User.id.in_(chunk))
        )
    }
    nodes = {
        str(node_id): str(name)
        for chunk in chunks(list({str(t.node_id) for t in due}))
        for node_id, name in session.execute(select(Node.id, Node.name).where(Node.id.in_(chunk)))
    }
    records = [
        accounting_row(
            t, *owners.get(t.owner_id, ("?", {})), nodes.get(str(t.node_id), str(t.node_id))
        )
        for t in due
    ]
    session.connection().execute(insert(cast(Table, Accounting.__table__)), records)


def consumed_cpu_seconds(session: Session, owner_id: str, period_s: float, now: float) -> float:
    """CPU seconds charged in the period plus what running tasks used so far."""
    finished = session.scalar(
        select(func.coalesce(func.sum(Accounting.cpu_s), 0.0)).where(
            Accounting.owner_id == owner_id, Accounting.ended_at >= now - period_s
        )
    )
    running = session.scalar(
        select(func.coalesce(func.sum(Task.cpu_seconds), 0.0)).where(
            Task.owner_id == owner_id,
            Task.state.in_([s.value for s in TaskState if not s.terminal]),
        )
    )
    return float(finished or 0.0) + float(running or 0.0)


def enforce_consumed(session: Session, owner_ids: set[str]) -> set[str]:
    """Stop the running tasks of owners past their CPU-hours quota; return touched nodes."""
    now = time.time()
    touched: set[str] = set()
    for owner_id in owner_ids:
        user = session.get(User, owner_id)
        if user is None or not user.quota:
            continue
        quota = Quota.from_dict(user.quota)
        if quota.cpu_hours is None:
            continue
        used = consumed_cpu_seconds(session, owner_id, quota.period_s, now)
        if used <= quota.cpu_hours * 3600:
            continue
        for task in session.scalars(
            select(Task).where(
                Task.owner_id == owner_id,
                Task.state.in_([s.value for s in TaskState if not s.terminal]),
                Task.node_id.is_not(None),
                Task.desired_state == "run",
            )
        ):
            request_stop(
                session,
                task,
                QUOTA_EXCEEDED,
                f"{user.name} used {used / 3600:.4f} of {quota.cpu_hours:g} CPU-hours",
            )
            touched.add(task.node_id or "")
    touched.discard("")
    return touched


def records(
    session: Session, principal: Principal, user: str | None, since: float | None, limit: int
) -> list[Accounting]:
    """Accounting records in order: of ``user`` (by name; others' only for admins), else
    the caller's own (admins: everyone's), ended at ``since`` or later."""
    query = select(Accounting)
    if user:
        target = find_user(session, user)
        if target.id != principal.user_id and not principal.is_admin:
            raise Forbidden("only admins read other users' accounting")
        query = query.where(Accounting.owner_id == target.id)
    elif not principal.is_admin:
        query = query.where(Accounting.owner_id == principal.user_id)
    if since is not None:
        query = query.where(Accounting.ended_at >= since)
    return list(session.scalars(query.order_by(Accounting.seq).limit(limit)))


def task_counts(session: Session, owner_id: str) -> dict[str, int]:
    """How many of the owner's tasks are in each state (states with none left out)."""
    return {
        str(state): int(n)
        for state, n in session.execute(
            select(Task.state, func.count()).where(Task.owner_id == owner_id).group_by(Task.state)
        ).all()
    }


def charged_since(session: Session, owner_id: str, since: float) -> tuple[float, float]:
    """CPU seconds and memory GiB-seconds of the owner's records ended at ``since`` or later."""
    cpu_s, memory_gib_s = session.execute(
        select(
            func.coalesce(func.sum(Accounting.cpu_s), 0.0),
            func.coalesce(func.sum(Accounting.memory_gib_s), 0.0),
        ).where(Accounting.owner_id == owner_id, Accounting.ended_at >= since)
    ).one()
    return float(cpu_s), float(memory_gib_s)

"""The one gate for task state: every change of ``Task.state`` is made here.

Each change is checked against :mod:`dockyard.core.states`: the imperative ones
(assign, end pending, mark lost) with :func:`~dockyard.core.states.check_transition`
(a wrong move is a bug and raises), the reported ones (:func:`advance`) with
:func:`~dockyard.core.states.can_transition` (a stale or re-sent report is ignored).
Writes are conditional on the state the task was read in, so two writers (the
node monitor and a late status report, say) never undo each other.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from dockyard.core.states import (
    DesiredState,
    Reason,
    TaskState,
    can_transition,
    check_transition,
    run_seconds,
)
from dockyard.protocol.messages import TaskStatus
from dockyard.server.errors import Conflict
from dockyard.server.state.accounting import take_final_usage
from dockyard.server.state.auth import Principal
from dockyard.server.state.batch import chunks
from dockyard.server.state.events import EventKind, event_row, insert_events, record
from dockyard.server.state.jobs import bump_generations, find_task, request_stop
from dockyard.store.bulk import executemany
from dockyard.store.tables import Task


@dataclass(slots=True)
class TaskRow:
    """The task columns a status report reads or writes, as plain values.

    Status reports are the hottest write path (every task sends three or more),
    so they are applied to these rows and written back with one executemany,
    not through ORM objects and the unit of work.
    """

    id: str
    node_id: str | None
    state: str
    stop_reason: str
    reason: str
    message: str
    container_id: str
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    log_lines_total: int | None
    cpu_seconds: float
    max_memory_bytes: int
    memory_gib_s: float
    owner_id: str
    workload_id: str
    name: str
    image: str
    attempt: int
    created_at: float
    cpu_millis: int
    memory_bytes: int
    assigned_at: float | None = None
    array_index: int | None = None


READ_COLUMNS = [f.name for f in fields(TaskRow)]
#: Written back (the same columns for every row, so one statement serves the batch).
WRITTEN_COLUMNS = (
    "state",
    "reason",
    "message",
    "container_id",
    "started_at",
    "finished_at",
    "exit_code",
    "log_lines_total",
    "cpu_seconds",
    "max_memory_bytes",
    "memory_gib_s",
)
_TASKS = cast(Table, Task.__table__)
#: Guarded by the state the row was read in: a row some other writer moved in the
#: meantime (the node monitor marked it lost, say) is left as that writer left it.
_UPDATE = (
    update(_TASKS)
    .where(_TASKS.c.id == bindparam("row_id"), _TASKS.c.state == bindparam("was"))
    .values({name: bindparam(name) for name in WRITTEN_COLUMNS})
)
_ASSIGN = (
    update(_TASKS)
    .where(_TASKS.c.id == bindparam("tid"), _TASKS.c.state == TaskState.PENDING.value)
    .values(
        state=TaskState.ASSIGNED.value,
        node_id=bindparam("node"),
        assigned_at=bindparam("now"),
        reason=Reason.PLACED,
        message="",
        pending_detail=None,
        gpu_indices=bindparam("gpu_indices"),
        ports=bindparam("host_ports"),
        port_map=bindparam("port_map"),
    )
)


#: What :func:`advance` did: nothing, a new message only (a pull's progress: the
#: row is written, nothing else follows), a change of state, or the task ended (the
#: node's desired set lost it; the caller bumps the node's generation).
UNCHANGED, PROGRESS, CHANGED, ENDED = 0, 1, 2, 3


def advance(row: TaskRow, update: TaskStatus, events: list[dict[str, Any]]) -> int:
    """Apply one status report to ``row`` (already checked to come from its node):
    UNCHANGED, PROGRESS, CHANGED or ENDED; the events it causes are appended to
    ``events``.

    A report that would move the task backwards is ignored. Times are this
    server's receive times: an agent's clock may be off.
    """
    try:
        new = TaskState(update.state)
    except ValueError:
        return UNCHANGED
    current = TaskState(row.state)
    if new == current == TaskState.PULLING:  # progress of a pull: the message moves on
        row.message = update.message[:4000]
        return PROGRESS
    if not can_transition(current, new):  # stale or re-sent: ignored, not an error
        return UNCHANGED
    now = time.time()
    reason = (update.reason or new.value)[:64]
    if new == TaskState.KILLED and row.stop_reason == Reason.MAX_RUNTIME_EXCEEDED:
        new, reason = TaskState.EXPIRED, Reason.MAX_RUNTIME_EXCEEDED
    elif new == TaskState.KILLED and row.stop_reason:
        reason = row.stop_reason
    row.state = new.value
    row.reason = reason
    row.message = update.message[:4000]
    if update.container_id:
        row.container_id = update.container_id[:80]
    if new == TaskState.RUNNING:
        row.started_at = now
    if new.terminal:
        row.exit_code = update.exit_code
        row.finished_at = now
        if row.started_at is None:  # its RUNNING report was lost: the runtime's duration
            ran = run_seconds(update.started_at, update.finished_at)
            if ran is not None:  # judged on this server's clock, never before placement
                row.started_at = max(row.assigned_at or row.created_at, now - ran)
        row.log_lines_total = update.log_lines_total
        take_final_usage(row, update.usage)
    message = row.message or f"{current} -> {new}"
    if new.terminal and row.exit_code is not None:
        message = f"exit code {row.exit_code}" + (f": {row.message}" if row.message else "")
    ids = {"task_id": row.id, "node_id": row.node_id, "owner_id": row.owner_id}
    events.append(event_row(EventKind.TASK, row.reason, message, **ids))
    if update.forced:
        events.append(
            event_row(
                EventKind.INCIDENT,
                Reason.FORCED_KILL,
                "process ignored SIGTERM; SIGKILL sent after the grace period",
                **ids,
            )
        )
    return ENDED if new.terminal else CHANGED


def read_rows(session: Session, task_ids: Iterable[str]) -> dict[str, TaskRow]:
    """The tasks ``task_ids`` as plain rows, by id (unknown ids are left out)."""
    return {
        row[0]: TaskRow(*row)
        for chunk in chunks(list(task_ids))
        for row in session.execute(
            select(*(_TASKS.c[name] for name in READ_COLUMNS)).where(_TASKS.c.id.in_(chunk))
        )
    }


def write_rows(session: Session, rows: Iterable[TaskRow], was: dict[str, str]) -> None:
    """Write rows :func:`advance` changed, one executemany; ``was`` is each row's state
    when it was read (the write's guard)."""
    params = [
        {"row_id": r.id, "was": was[r.id], **{name: getattr(r, name) for name in WRITTEN_COLUMNS}}
        for r in rows
    ]
    if params:
        executemany(session.connection(), _UPDATE, params)


def assign(session: Session, placements: list[dict[str, Any]], now: float) -> None:
    """``pending -> assigned`` for many tasks at once, each guarded by still being
    pending. Each placement: ``tid``, ``node``, ``gpu_indices``, ``host_ports``,
    ``port_map``."""
    check_transition(TaskState.PENDING, TaskState.ASSIGNED)
    if placements:
        executemany(session.connection(), _ASSIGN, [{**p, "now": now} for p in placements])


def end_pending(
    session: Session, task: Task, reason: str, message: str, stop_reason: str | None = None
) -> None:
    """A pending task that must not run ends at once (killed), with ``reason``."""
    check_transition(TaskState(task.state), TaskState.KILLED)
    now = time.time()
    task.state = TaskState.KILLED
    task.reason = reason
    task.message = message
    task.finished_at = now
    task.desired_state = DesiredState.STOP
    task.stop_requested_at = now
    task.stop_reason = stop_reason or reason
    record(session, EventKind.TASK, reason, message, task=task)


def release_held(session: Session, owners: dict[str, str]) -> None:
    """Held tasks whose dependencies are met may be placed (they stay pending);
    ``owners``: task id -> owner id."""
    task_ids = list(owners)
    for chunk in chunks(task_ids):
        session.execute(
            update(_TASKS)
            .where(_TASKS.c.id.in_(chunk), _TASKS.c.state == TaskState.PENDING.value)
            .values(held=False, reason=Reason.SUBMITTED, message="dependencies met")
        )
    if task_ids:
        insert_events(
            session,
            [
                event_row(
                    EventKind.TASK,
                    "dependencies_met",
                    "dependencies met",
                    task_id=tid,
                    owner_id=owners[tid],
                )
                for tid in task_ids
            ],
        )


def fail_held(session: Session, why: dict[str, tuple[str, str]]) -> None:
    """Held tasks whose dependencies can never be met end ``failed`` (reason
    ``dependency_never_satisfied``); ``why``: task id -> (message, owner id)."""
    check_transition(TaskState.PENDING, TaskState.FAILED)
    if not why:
        return
    now = time.time()
    session.execute(
        update(_TASKS)
        .where(_TASKS.c.id == bindparam("tid"), _TASKS.c.state == TaskState.PENDING.value)
        .values(
            state=TaskState.FAILED.value,
            reason=Reason.DEPENDENCY_NEVER_SATISFIED,
            message=bindparam("message"),
            finished_at=now,
            desired_state=DesiredState.STOP.value,
            held=False,
        ),
        [{"tid": tid, "message": text[:4000]} for tid, (text, _) in why.items()],
    )
    insert_events(
        session,
        [
            event_row(
                EventKind.TASK,
                Reason.DEPENDENCY_NEVER_SATISFIED,
                text,
                task_id=tid,
                owner_id=owner,
            )
            for tid, (text, owner) in why.items()
        ],
    )


def mark_lost(session: Session, tasks: Iterable[Task], message: str) -> None:
    """Placed tasks of a node declared down end as ``lost`` (``node_lost``)."""
    now = time.time()
    for task in tasks:
        check_transition(TaskState(task.state), TaskState.LOST)
        task.state = TaskState.LOST
        task.reason = Reason.NODE_LOST
        task.message = message
        task.finished_at = now
        record(session, EventKind.TASK, Reason.NODE_LOST, message, task=task)


def kill(session: Session, principal: Principal, ref: str, grace_s: float | None = None) -> Task:
    """Ask for a task to stop. Pending tasks end at once; placed ones via their agent,
    SIGKILL after ``grace_s`` (``stop --time``) or else the job's kill grace. A second
    request with a grace replaces the first's (``stop -t 0`` hurries a slow stop)."""
    task = find_task(session, principal, ref)
    state = TaskState(task.state)
    if state.terminal:
        raise Conflict(f"task {task.id} already ended ({task.state})")
    if state == TaskState.PENDING:
        end_pending(
            session, task, Reason.KILLED, f"killed by {principal.name} before it was placed"
        )
        return task
    if grace_s is not None and grace_s != task.stop_grace_s:
        task.stop_grace_s = grace_s
        if task.desired_state == DesiredState.STOP:  # already stopping: tell the node
            bump_generations(session, [task.node_id])
    grace = "" if grace_s is None else f" (grace {grace_s:g}s)"
    request_stop(session, task, Reason.KILLED, f"kill requested by {principal.name}{grace}")
    return task


def dequeue(session: Session, principal: Principal, ref: str) -> Task:
    """Remove a queued task: it ends as ``killed`` with reason ``dequeued``. A task
    already placed is a :class:`Conflict` (use kill)."""
    task = find_task(session, principal, ref)
    if task.state != TaskState.PENDING:
        raise Conflict(f"task {task.id} is not queued ({task.state}); use kill")
    end_pending(
        session,
        task,
        "dequeued",
        f"removed from the queue by {principal.name}",
        stop_reason=Reason.KILLED,
    )
    return task

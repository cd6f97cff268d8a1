"""Applying what agents report: task state changes and log lines. Idempotent."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dockyard.core.states import Reason, TaskState, can_transition
from dockyard.server.state.accounting import charge_all, take_final_usage
from dockyard.server.state.batch import chunks
from dockyard.server.state.events import EventKind, event_row, insert_events
from dockyard.server.state.jobs import bump_generations
from dockyard.server.state.lifecycle import follow_up, may_replace
from dockyard.server.state.workload_specs import workload_specs
from dockyard.store.tables import LogLine, Task

MAX_LINE = 64 * 1024


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


_READ = [f.name for f in fields(TaskRow)]
#: Written back (the same columns for every row, so one statement serves the batch).
_WRITTEN = (
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
_UPDATE = (
    update(_TASKS)
    .where(_TASKS.c.id == bindparam("row_id"))
    .values({name: bindparam(name) for name in _WRITTEN})
)


def apply_statuses(
    session: Session, reports: list[tuple[str, dict[str, Any]]]
) -> tuple[bool, set[str]]:
    """Apply many ``(node id, update)`` status reports, in order, in one transaction.

    The tasks are read in one query and changed in memory; then the changed rows,
    their events and the accounting records of tasks that ended are written with
    one executemany each, and each node whose desired set lost a task gets one
    generation bump. Jobs whose policy asks for another attempt get it
    (:func:`follow_up`). Returns whether any task changed state, and the nodes
    whose tasks ended (they must converge).
    """
    rows = {
        row[0]: TaskRow(*row)
        for chunk in chunks(list({str(u.get("task_id", "")) for _, u in reports}))
        for row in session.execute(
            select(*(_TASKS.c[name] for name in _READ)).where(_TASKS.c.id.in_(chunk))
        )
    }
    events: list[dict[str, Any]] = []
    written: dict[str, TaskRow] = {}
    ended: dict[str, TaskRow] = {}
    changed = False
    for node_id, report in reports:
        row = rows.get(str(report.get("task_id", "")))
        if row is None or row.node_id != node_id:
            continue  # a stale copy's report, or an unknown task
        outcome = advance(row, report, events)
        if outcome != UNCHANGED:
            written[row.id] = row
        changed = changed or outcome in (CHANGED, ENDED)
        if outcome == ENDED:
            ended[row.id] = row
    if written:
        session.connection().execute(
            _UPDATE,
            [
                {"row_id": r.id, **{name: getattr(r, name) for name in _WRITTEN}}
                for r in written.values()
            ],
        )
    insert_events(session, events)
    charge_all(session, list(ended.values()))
    workloads = workload_specs(session, {r.workload_id for r in ended.values()})
    for row in ended.values():
        if may_replace(workloads.get(row.workload_id), row):
            task = session.get(Task, row.id, populate_existing=True)
            if task is not None:
                follow_up(session, task)
    nodes = {r.node_id for r in ended.values() if r.node_id}
    bump_generations(session, nodes)
    return changed, nodes


#: What :func:`advance` did: nothing, a new message only (a pull's progress: the
#: row is written, nothing else follows), a change of state, or the task ended (the
#: node's desired set lost it; the caller bumps the node's generation).
UNCHANGED, PROGRESS, CHANGED, ENDED = 0, 1, 2, 3


def advance(row: TaskRow, update: dict[str, Any], events: list[dict[str, Any]]) -> int:
    """Apply one status report to ``row`` (already checked to come from its node):
    UNCHANGED, PROGRESS, CHANGED or ENDED; the events it causes are appended to
    ``events``.

    A report that would move the task backwards is ignored. Times are this
    server's receive times: an agent's clock may be off.
    """
    try:
        new = TaskState(str(update.get("state")))
    except ValueError:
        return UNCHANGED
    current = TaskState(row.state)
    if new == current == TaskState.PULLING:  # progress of a pull: the message moves on
        row.message = str(update.get("message") or "")[:4000]
        return PROGRESS
    if not can_transition(current, new):
        return UNCHANGED
    now = time.time()
    reason = str(update.get("reason") or new.value)[:64]
    if new == TaskState.KILLED and row.stop_reason == Reason.MAX_RUNTIME_EXCEEDED:
        new, reason = TaskState.EXPIRED, Reason.MAX_RUNTIME_EXCEEDED
    elif new == TaskState.KILLED and row.stop_reason:
        reason = row.stop_reason
    row.state = new.value
    row.reason = reason
    row.message = str(update.get("message") or "")[:4000]
    if update.get("container_id"):
        row.container_id = str(update["container_id"])[:80]
    if new == TaskState.RUNNING:
        row.started_at = now
    if new.terminal:
        code = update.get("exit_code")
        row.exit_code = int(code) if code is not None else None
        row.finished_at = now
        total = update.get("log_lines_total")
        row.log_lines_total = int(total) if total is not None else None
        take_final_usage(row, update)
    message = row.message or f"{current} -> {new}"
    if new.terminal and row.exit_code is not None:
        message = f"exit code {row.exit_code}" + (f": {row.message}" if row.message else "")
    ids = {"task_id": row.id, "node_id": row.node_id, "owner_id": row.owner_id}
    events.append(event_row(EventKind.TASK, row.reason, message, **ids))
    if update.get("forced"):
        events.append(
            event_row(
                EventKind.INCIDENT,
                Reason.FORCED_KILL,
                "process ignored SIGTERM; SIGKILL sent after the grace period",
                **ids,
            )
        )
    return ENDED if new.terminal else CHANGED


def store_logs(session: Session, shipped: list[tuple[str, list[Any]]], dialect: str) -> int:
    """Insert log lines shipped by nodes, ``(node id, lines)`` per batch, in one
    statement; lines of tasks not placed on the node that sent them are dropped,
    and lines already stored (same task, stream, seq) are ignored."""
    task_ids = {str(line[0]) for _, lines in shipped for line in lines}
    if not task_ids:
        return 0
    placed_on = {
        (str(task_id), str(node_id))
        for chunk in chunks(list(task_ids))
        for task_id, node_id in session.execute(
            select(Task.id, Task.node_id).where(Task.id.in_(chunk))
        )
    }
    rows = [
        {
            "task_id": str(task_id),
            "stream": "stderr" if stream == "stderr" else "stdout",
            "seq": int(seq),
            "ts": str(ts)[:40],
            "line": str(text)[:MAX_LINE],
        }
        for node_id, lines in shipped
        for task_id, stream, seq, ts, text in lines
        if (str(task_id), node_id) in placed_on
    ]
    if not rows:
        return 0
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # executemany of one cached statement: a multi-row VALUES clause is compiled
    # anew for every batch size (that compile was a fifth of the apply thread's time).
    table = cast(Table, LogLine.__table__)
    result = session.connection().execute(insert(table).on_conflict_do_nothing(), rows)
    inserted = getattr(result, "rowcount", -1)  # rows really inserted (duplicates skipped)
    return int(inserted) if isinstance(inserted, int) and inserted >= 0 else len(rows)

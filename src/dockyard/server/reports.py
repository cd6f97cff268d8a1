"""Applying what agents report: task state changes and log lines. Idempotent."""

from __future__ import annotations

import time
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dockyard.core.states import Reason, TaskState, can_transition
from dockyard.server.accounting import charge, take_final_usage
from dockyard.server.batch import EndingBatch, chunks
from dockyard.server.events import EventKind, record
from dockyard.server.jobs import bump_generations
from dockyard.server.lifecycle import follow_up
from dockyard.store.tables import LogLine, Task

MAX_LINE = 64 * 1024


def apply_statuses(
    session: Session, reports: list[tuple[str, dict[str, Any]]]
) -> tuple[bool, set[str]]:
    """Apply many ``(node id, update)`` status reports, in order, in one transaction.

    What the reports need is read up front (:class:`EndingBatch`) and the changes
    are flushed once, at the end (not once per report, before each check query);
    each node whose desired set lost a task gets one generation bump. Returns the
    whether any task changed state, and the nodes whose tasks ended (they must converge).
    """
    batch = EndingBatch.of(
        session, (str(u.get("task_id", "")) for _, u in reports), (n for n, _ in reports)
    )
    changed = False
    ended: set[str] = set()
    with session.no_autoflush:
        for node_id, report in reports:
            outcome = apply_status(session, node_id, report, batch.charged)
            changed = changed or outcome != UNCHANGED
            if outcome == ENDED:
                ended.add(node_id)
    bump_generations(session, ended)
    return changed, ended


#: What :func:`apply_status` did: nothing, a change, or the task ended (the node's
#: desired set lost it; the caller bumps the node's generation).
UNCHANGED, CHANGED, ENDED = 0, 1, 2


def apply_status(
    session: Session, node_id: str, update: dict[str, Any], charged: set[str] | None = None
) -> int:
    """Apply one task status report from ``node_id``: UNCHANGED, CHANGED or ENDED.

    Reports from a node the task is not placed on (a stale copy) or that would
    move the task backwards are ignored. An ENDED task's node must get a
    generation bump from the caller (batched: once per node).
    """
    task = session.get(Task, str(update.get("task_id", "")))
    if task is None or task.node_id != node_id:
        return UNCHANGED
    try:
        new = TaskState(str(update.get("state")))
    except ValueError:
        return UNCHANGED
    current = TaskState(task.state)
    if new == current == TaskState.PULLING:  # progress of a pull: the message moves on
        task.message = str(update.get("message") or "")[:4000]
        return UNCHANGED
    if not can_transition(current, new):
        return UNCHANGED
    # Times are this server's receive times: an agent's clock may be off.
    now = time.time()
    reason = str(update.get("reason") or new.value)[:64]
    if new == TaskState.KILLED and task.stop_reason == Reason.MAX_RUNTIME_EXCEEDED:
        new, reason = TaskState.EXPIRED, Reason.MAX_RUNTIME_EXCEEDED
    elif new == TaskState.KILLED and task.stop_reason:
        reason = task.stop_reason
    task.state = new
    task.reason = reason
    task.message = str(update.get("message") or "")[:4000]
    if update.get("container_id"):
        task.container_id = str(update["container_id"])[:80]
    if new == TaskState.RUNNING:
        task.started_at = now
    if new.terminal:
        code = update.get("exit_code")
        task.exit_code = int(code) if code is not None else None
        task.finished_at = now
        total = update.get("log_lines_total")
        task.log_lines_total = int(total) if total is not None else None
        take_final_usage(task, update)
        charge(session, task, charged)
    message = task.message or f"{current} -> {new}"
    if new.terminal and task.exit_code is not None:
        message = f"exit code {task.exit_code}" + (f": {task.message}" if task.message else "")
    record(session, EventKind.TASK, task.reason, message, task=task)
    if update.get("forced"):
        record(
            session,
            EventKind.INCIDENT,
            Reason.FORCED_KILL,
            "process ignored SIGTERM; SIGKILL sent after the grace period",
            task=task,
        )
    if new.terminal:
        follow_up(session, task)
        return ENDED
    return CHANGED


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

"""Applying what agents report: task state changes and log lines. Idempotent."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dockyard.core.states import Reason, TaskState, can_transition
from dockyard.server.accounting import charge, take_final_usage
from dockyard.server.events import EventKind, record
from dockyard.server.jobs import bump_generation
from dockyard.server.lifecycle import follow_up
from dockyard.store.tables import LogLine, Task

MAX_LINE = 64 * 1024


def apply_status(session: Session, node_id: str, update: dict[str, Any]) -> bool:
    """Apply one task status report from ``node_id``; returns True if it changed anything.

    Reports from a node the task is not placed on (a stale copy) or that would
    move the task backwards are ignored.
    """
    task = session.get(Task, str(update.get("task_id", "")))
    if task is None or task.node_id != node_id:
        return False
    try:
        new = TaskState(str(update.get("state")))
    except ValueError:
        return False
    current = TaskState(task.state)
    if new == current == TaskState.PULLING:  # progress of a pull: the message moves on
        task.message = str(update.get("message") or "")[:4000]
        return False
    if not can_transition(current, new):
        return False
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
        charge(session, task)
        bump_generation(session, node_id)
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
    return True


def store_logs(session: Session, node_id: str, lines: list[Any], dialect: str) -> int:
    """Insert shipped log lines, ignoring ones already stored (same task, stream, seq)."""
    if not lines:
        return 0
    task_ids = {str(line[0]) for line in lines}
    allowed = set(
        session.scalars(select(Task.id).where(Task.id.in_(task_ids), Task.node_id == node_id))
    )
    rows = [
        {
            "task_id": str(task_id),
            "stream": "stderr" if stream == "stderr" else "stdout",
            "seq": int(seq),
            "ts": str(ts)[:40],
            "line": str(text)[:MAX_LINE],
        }
        for task_id, stream, seq, ts, text in lines
        if task_id in allowed
    ]
    if not rows:
        return 0
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(LogLine).values(rows).on_conflict_do_nothing()
    result = session.execute(statement)
    inserted = getattr(result, "rowcount", -1)  # rows really inserted (duplicates skipped)
    return int(inserted) if isinstance(inserted, int) and inserted >= 0 else len(rows)

"""Garbage collection: removing finished work past its retention."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dockyard.core.states import TERMINAL_STATES, TaskState
from dockyard.server.errors import Conflict
from dockyard.server.state.auth import Principal
from dockyard.server.state.jobs import find_task
from dockyard.server.state.usage_history import forget_tasks
from dockyard.store.tables import Accounting, Event, LogLine, Task, Workload

#: Tasks deleted (with their log lines and events) per statement.
CHUNK = 500


@dataclass(frozen=True, slots=True)
class Collected:
    """How many rows of each kind were removed."""

    tasks: int
    workloads: int
    events: int
    log_lines: int
    accounting: int


def collect(session: Session, finished_before: float, accounting_before: float | None) -> Collected:
    """Delete tasks that ended before ``finished_before`` with their log lines and events,
    then workloads left without tasks, and (``accounting_before`` given) accounting
    records that ended before it."""
    terminal = [s.value for s in TERMINAL_STATES]
    old = list(
        session.scalars(
            select(Task.id).where(Task.state.in_(terminal), Task.finished_at < finished_before)
        )
    )
    lines = events = tasks = acct = 0
    for start in range(0, len(old), CHUNK):
        chunk = old[start : start + CHUNK]
        lines += session.execute(delete(LogLine).where(LogLine.task_id.in_(chunk))).rowcount  # type: ignore[attr-defined]
        events += session.execute(delete(Event).where(Event.task_id.in_(chunk))).rowcount  # type: ignore[attr-defined]
        tasks += session.execute(delete(Task).where(Task.id.in_(chunk))).rowcount  # type: ignore[attr-defined]
        forget_tasks(session, chunk)  # their usage history
    empty = select(Workload.id).where(~Workload.id.in_(select(Task.workload_id)))
    workloads = session.execute(delete(Workload).where(Workload.id.in_(empty))).rowcount  # type: ignore[attr-defined]
    if accounting_before is not None:
        acct = session.execute(
            delete(Accounting).where(Accounting.ended_at < accounting_before)
        ).rowcount  # type: ignore[attr-defined]
    return Collected(tasks, workloads, events, lines, acct)


def remove_task(session: Session, principal: Principal, ref: str) -> Task:
    """``dockyard rm``: delete one ended task you may see, its log lines and events (its
    accounting record stays, as with ``collect``), and its job once no attempt is
    left. A task not yet ended is a :class:`Conflict` (kill it first)."""
    task = find_task(session, principal, ref)
    if not TaskState(task.state).terminal:
        raise Conflict(f"task {task.id} is {task.state}; kill it first (or rm --force)")
    session.execute(delete(LogLine).where(LogLine.task_id == task.id))
    session.execute(delete(Event).where(Event.task_id == task.id))
    session.execute(delete(Task).where(Task.id == task.id))
    forget_tasks(session, [task.id])
    others = session.scalar(select(Task.id).where(Task.workload_id == task.workload_id).limit(1))
    if others is None:
        session.execute(
            delete(Workload).where(Workload.id == task.workload_id, Workload.kind == "job")
        )
    return task

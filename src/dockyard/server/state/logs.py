"""Reading a task's stored log lines (shipped by its agent, ``log_lines``)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dockyard.core.states import TaskState
from dockyard.server.state.reads import cursor
from dockyard.store.tables import LogLine, Task


@dataclass(frozen=True, slots=True)
class LogPage:
    lines: list[LogLine]
    #: Every line the task will ever have is stored and none follow this page.
    complete: bool
    #: The task has ended (or is gone): no more lines will be written after a drain.
    ended: bool
    #: The task's state now ("unknown" when it is gone).
    state: str


def read_lines(
    session: Session, task_id: str, after: int, limit: int, stream: str | None = None
) -> list[LogLine]:
    query = select(LogLine).where(LogLine.task_id == task_id, LogLine.id > cursor(after))
    if stream is not None:
        query = query.where(LogLine.stream == stream)
    return list(session.scalars(query.order_by(LogLine.id).limit(limit)))


def tail_lines(
    session: Session, task_id: str, count: int, stream: str | None = None
) -> list[LogLine]:
    """The task's last ``count`` lines (of ``stream``, if given), oldest first."""
    query = select(LogLine).where(LogLine.task_id == task_id)
    if stream is not None:
        query = query.where(LogLine.stream == stream)
    return list(reversed(list(session.scalars(query.order_by(LogLine.id.desc()).limit(count)))))


def logs_complete(session: Session, task: Task) -> bool:
    """The task ended and every line it reported is stored."""
    if not TaskState(task.state).terminal:
        return False
    if task.log_lines_total is None:
        return True
    stored = session.scalar(select(func.count()).where(LogLine.task_id == task.id)) or 0
    return stored >= task.log_lines_total


def page(
    session: Session, task_id: str, after: int, limit: int, stream: str | None = None
) -> LogPage:
    """Lines after line id ``after`` (at most ``limit``), and whether more can come."""
    lines = read_lines(session, task_id, after, limit, stream)
    task = session.get(Task, task_id)
    if task is None:
        return LogPage(lines, True, True, "unknown")
    complete = logs_complete(session, task) and len(lines) < limit
    return LogPage(lines, complete, TaskState(task.state).terminal, task.state)

"""Reading what a batch of task endings needs in a few queries, not a few per task.

Ending a task touches its workload (restart policy), owner and node (the
accounting record) and asks whether it was already charged. Done one task at a
time, each of those is a query, and each query first flushes what the batch has
changed so far. :class:`EndingBatch` reads them all up front and holds them
(the session's identity map keeps objects only while something refers to them),
so the per-task work finds them in memory and the batch flushes once.

:func:`chunks` is the one way the server splits an ``IN (...)`` list to stay under
SQLite's bound-parameter limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.store.tables import Accounting, Node, Task, User, Workload


def chunks(ids: list[str], size: int = 900) -> Iterator[list[str]]:
    """Slices that stay under SQLite's bound-parameter limit."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def rows_by_id(session: Session, entity: Any, ids: Iterable[str]) -> list[Any]:
    """Rows of ``entity`` with these ids, read in chunks."""
    return [
        row
        for chunk in chunks(list(set(ids)))
        for row in session.scalars(select(entity).where(entity.id.in_(chunk)))
    ]


class EndingBatch:
    """The tasks of a batch, with their workloads, owners and nodes held in the session,
    and ``charged``: the ids among them that already have an accounting record."""

    def __init__(self, session: Session, tasks: list[Task], node_ids: Iterable[str] = ()) -> None:
        self.tasks = tasks
        self._held = [
            *rows_by_id(session, Workload, (t.workload_id for t in tasks)),
            *rows_by_id(session, User, (t.owner_id for t in tasks)),
            *rows_by_id(session, Node, {*node_ids, *(t.node_id for t in tasks if t.node_id)}),
        ]
        self.charged: set[str] = {
            str(task_id)
            for chunk in chunks([t.id for t in tasks])
            for task_id in session.scalars(
                select(Accounting.task_id).where(Accounting.task_id.in_(chunk))
            )
        }

    @classmethod
    def of(
        cls, session: Session, task_ids: Iterable[str], node_ids: Iterable[str] = ()
    ) -> EndingBatch:
        return cls(session, rows_by_id(session, Task, task_ids), node_ids)

"""Recording events: every state change is an event with a reason."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert
from sqlalchemy.orm import Session

from dockyard.store.bulk import executemany
from dockyard.store.tables import Event, Task


class EventKind:
    TASK = "task"
    NODE = "node"
    INCIDENT = "incident"
    USER = "user"


def record(
    session: Session,
    kind: str,
    reason: str,
    message: str = "",
    *,
    task: Task | None = None,
    task_id: str | None = None,
    node_id: str | None = None,
    owner_id: str | None = None,
) -> Event:
    """Add an event; ``task`` fills in its task, node and owner unless given."""
    event = Event(
        **event_row(
            kind,
            reason,
            message,
            task_id=task_id if task_id is not None else (task.id if task else None),
            node_id=node_id if node_id is not None else (task.node_id if task else None),
            owner_id=owner_id if owner_id is not None else (task.owner_id if task else None),
        )
    )
    session.add(event)
    return event


def event_row(
    kind: str,
    reason: str,
    message: str = "",
    *,
    task_id: str | None = None,
    node_id: str | None = None,
    owner_id: str | None = None,
) -> dict[str, Any]:
    """The columns of one event, for :func:`insert_events` (or an ORM ``Event``)."""
    return {
        "at": time.time(),
        "kind": kind,
        "reason": reason,
        "message": message,
        "task_id": task_id,
        "node_id": node_id,
        "owner_id": owner_id,
    }


_EVENT_KEYS = frozenset(("at", "kind", "reason", "message", "task_id", "node_id", "owner_id"))
_INSERT = insert(cast(Table, Event.__table__)).values(
    {k: bindparam(k) for k in sorted(_EVENT_KEYS)}
)


def insert_events(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Record many events in one statement (an executemany: no ORM objects). Rows of
    :func:`event_row`'s columns go through ``store.bulk`` (compiled once); others
    the ordinary way (SQLAlchemy fills in the columns they leave out)."""
    if not rows:
        return
    if all(r.keys() == _EVENT_KEYS for r in rows):
        executemany(session.connection(), _INSERT, rows)
    else:
        session.connection().execute(insert(cast(Table, Event.__table__)), list(rows))

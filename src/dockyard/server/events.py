"""Recording events: every state change is an event with a reason."""

from __future__ import annotations

import time

from sqlalchemy.orm import Session

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
    node_id: str | None = None,
    owner_id: str | None = None,
) -> Event:
    event = Event(
        at=time.time(),
        kind=kind,
        reason=reason,
        message=message,
        task_id=task.id if task else None,
        node_id=node_id if node_id is not None else (task.node_id if task else None),
        owner_id=owner_id if owner_id is not None else (task.owner_id if task else None),
    )
    session.add(event)
    return event

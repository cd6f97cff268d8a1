"""What the queue API shows of queued tasks beyond the scheduler's snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.server.state.batch import chunks
from dockyard.store.tables import Task, User


@dataclass(frozen=True, slots=True)
class EntryDetail:
    """A queued task's name and why it waits."""

    name: str
    reason: str
    message: str
    pending_detail: dict[str, Any] | None


def entry_details(session: Session, task_ids: Sequence[str]) -> dict[str, EntryDetail]:
    """The names and waiting reasons of ``task_ids``, by id (tasks gone are left out)."""
    out: dict[str, EntryDetail] = {}
    for chunk in chunks(list(task_ids)):
        for row in session.execute(
            select(Task.id, Task.name, Task.reason, Task.message, Task.pending_detail).where(
                Task.id.in_(chunk)
            )
        ).all():
            out[row.id] = EntryDetail(row.name, row.reason, row.message, row.pending_detail)
    return out


def owner_names(session: Session) -> dict[str, str]:
    """Every user's name, by user id."""
    return {str(uid): str(name) for uid, name in session.execute(select(User.id, User.name))}


def owner_name(session: Session, owner_id: str) -> str | None:
    """The name of user ``owner_id`` (None if there is no such user)."""
    owner = session.get(User, owner_id)
    return owner.name if owner else None

"""The leader lease and the server instances, as the status API reads them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.store.tables import LeaderLease, ServerInstance


def lease(session: Session, row_id: int) -> LeaderLease | None:
    """The leader lease row ``row_id`` (None before any instance took it)."""
    return session.get(LeaderLease, row_id)


def instances(session: Session) -> list[ServerInstance]:
    """Every registered server instance, oldest first."""
    return list(session.scalars(select(ServerInstance).order_by(ServerInstance.started_at)))

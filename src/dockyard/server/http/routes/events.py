"""The event log: every state change, with its machine-readable reason."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from dockyard.server.http.deps import CurrentUser, server_context
from dockyard.server.http.schemas import INT64_MAX, EventOut
from dockyard.server.http.stream import public
from dockyard.server.state import reads

router = APIRouter(tags=["events"])


@router.get("/api/v1/events", response_model=list[EventOut])
def list_events(
    request: Request,
    who: CurrentUser,
    after: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    before: Annotated[
        int | None, Query(ge=1, le=INT64_MAX, description="only ids below this")
    ] = None,
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
    task: str | None = None,
    node: str | None = None,
    kind: str | None = None,
    since: Annotated[
        float | None, Query(ge=0, le=1e11, description="only events at or after (epoch s)")
    ] = None,
    until: Annotated[
        float | None, Query(ge=0, le=1e11, description="only events at or before (epoch s)")
    ] = None,
) -> list[EventOut]:
    """Events you may see. Page forward with ``after``; the newest with ``order=desc``."""
    with server_context(request).db.read() as session:
        events = reads.list_events(
            session,
            who,
            after=after,
            before=before,
            order=order,
            limit=limit,
            task=task,
            node=node,
            kind=kind,
            since=since,
            until=until,
        )
        return [EventOut(**public(row)) for row in reads.event_rows(session, events)]

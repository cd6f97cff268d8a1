"""Tasks: list, show, kill, and their logs (a page, or followed as NDJSON)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from dockyard.core.specs import MAX_KILL_GRACE_S
from dockyard.core.states import TaskState
from dockyard.server.http.deps import CurrentUser, ServerContext, server_context
from dockyard.server.http.limits import Slot
from dockyard.server.http.schemas import (
    INT64_MAX,
    EventOut,
    LogLineOut,
    LogsOut,
    TaskDetailOut,
    TaskOut,
    errors,
    task_list_json,
)
from dockyard.server.state import gc, reads
from dockyard.server.state import logs as log_store
from dockyard.server.state import tasks as task_ops
from dockyard.server.state.jobs import find_task

router = APIRouter(tags=["tasks"])

FOLLOW_POLL_S = 0.1
#: After a task ends, how long a follower waits for log lines still in flight.
FOLLOW_DRAIN_S = 10.0


def task_out(view: reads.TaskView) -> TaskOut:
    return TaskOut.build(view.task, view.owner, view.node, view.address)


@router.get("/api/v1/tasks", response_model=list[TaskOut])
def list_tasks(
    request: Request,
    who: CurrentUser,
    state: Annotated[list[TaskState] | None, Query()] = None,
    active: bool = False,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    order: Literal["newest", "oldest"] = "newest",
    q: Annotated[str | None, Query(max_length=64, description="name or id prefix")] = None,
    node: Annotated[str | None, Query(max_length=255, description="node id or name")] = None,
    owner: Annotated[str | None, Query(max_length=63, description="owner's user name")] = None,
) -> Response:
    """Tasks you may see, newest (or oldest) first; ``X-Total-Count`` has the total."""
    with server_context(request).db.read() as session:
        total, views = reads.list_tasks(
            session,
            who,
            states=state,
            active=active,
            q=q,
            node=node,
            order=order,
            offset=offset,
            limit=limit,
            owner=owner,
        )
        # Plain dicts straight to JSON (schemas.task_list_json): building and
        # validating a TaskOut per row cost more than the query.
        body = task_list_json([TaskOut.fields(v.task, v.owner, v.node, v.address) for v in views])
    return Response(body, media_type="application/json", headers={"X-Total-Count": str(total)})


@router.get("/api/v1/tasks/{ref}", response_model=TaskDetailOut, responses=errors(404))
def get_task(request: Request, ref: str, who: CurrentUser) -> TaskDetailOut:
    with server_context(request).db.read() as session:
        detail = reads.task_detail(session, who, ref)
        spec, view = detail.spec, detail.view
        return TaskDetailOut(
            **TaskOut.fields(view.task, view.owner, view.node, view.address),
            command=list(spec.command),
            env=dict(spec.env),
            kill_grace_s=spec.kill_grace_s,
            restart=spec.restart.to_dict(),
            events=[EventOut.build(e) for e in detail.events],
        )


@router.post("/api/v1/tasks/{ref}/kill", response_model=TaskOut, responses=errors(404, 409))
def kill(
    request: Request,
    ref: str,
    who: CurrentUser,
    grace_s: Annotated[
        float | None,
        Query(
            ge=0,
            le=MAX_KILL_GRACE_S,
            description="SIGKILL after this many seconds (default: the job's kill grace)",
        ),
    ] = None,
) -> TaskOut:
    ctx = server_context(request)
    with ctx.db.write() as session:
        task = task_ops.kill(session, who, ref, grace_s)
        out = task_out(reads.task_view(session, task))
        node_id = task.node_id
    if node_id:
        ctx.push({node_id})
    return out


@router.delete("/api/v1/tasks/{ref}", response_model=TaskOut, responses=errors(404, 409))
def remove(request: Request, ref: str, who: CurrentUser) -> TaskOut:
    """Delete an ended task from the history with its logs and events (accounting stays);
    one not yet ended is a 409."""
    with server_context(request).db.write() as session:
        out = task_out(reads.task_view(session, find_task(session, who, ref)))
        gc.remove_task(session, who, ref)
        return out


@router.get("/api/v1/tasks/{ref}/logs", response_model=LogsOut, responses=errors(404, 429))
def logs(
    request: Request,
    ref: str,
    who: CurrentUser,
    after: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 5000,
    follow: bool = False,
    stream: Annotated[Literal["stdout", "stderr"] | None, Query(description="one stream")] = None,
    tail: Annotated[
        int | None, Query(ge=1, le=10_000, description="only the last N lines (not with follow)")
    ] = None,
) -> Any:
    ctx = server_context(request)
    with ctx.db.read() as session:
        task_id = find_task(session, who, ref).id
        if not follow:
            page = log_store.page(session, task_id, after, limit, stream)
            lines = page.lines
            if tail is not None:
                lines = log_store.tail_lines(session, task_id, tail, stream)
                last = max([after, *(line.id for line in lines)])
                return LogsOut(
                    lines=[LogLineOut.model_validate(x, from_attributes=True) for x in lines],
                    next=last,
                    done=page.complete,
                )
            return LogsOut(
                lines=[LogLineOut.model_validate(line, from_attributes=True) for line in lines],
                next=lines[-1].id if lines else after,
                done=page.complete,
            )
    slot = ctx.log_follows.slot(who.user_id)  # 429 past the cap
    lines_out = _follow(ctx, slot, task_id, after, stream)
    slot.tie_to(lines_out)  # given back even if the client left before the stream started
    return StreamingResponse(lines_out, media_type="application/x-ndjson")


async def _follow(
    ctx: ServerContext, slot: Slot, task_id: str, after: int, stream: str | None = None
) -> AsyncIterator[str]:
    """Lines as they are stored, then ``{"end": true, "state": ...}`` once the task
    ended and its lines are in (or after a drain). Async: a follow holds no worker
    thread between polls; a client that goes away cancels it at once."""
    cursor = after
    drain_deadline: float | None = None
    state = "unknown"
    try:
        while True:
            page = await run_in_threadpool(_page, ctx, task_id, cursor, stream)
            state = page.state
            for line in page.lines:
                cursor = line.id
                yield LogLineOut.model_validate(line, from_attributes=True).model_dump_json() + "\n"
            if page.lines:
                continue
            if page.complete:
                break
            if page.ended:
                drain_deadline = drain_deadline or time.monotonic() + FOLLOW_DRAIN_S
                if time.monotonic() > drain_deadline:
                    break
            await asyncio.sleep(FOLLOW_POLL_S)
        yield json.dumps({"end": True, "state": state}) + "\n"
    finally:
        slot.release()


def _page(
    ctx: ServerContext, task_id: str, cursor: int, stream: str | None = None
) -> log_store.LogPage:
    with ctx.db.read() as session:
        return log_store.page(session, task_id, cursor, 1000, stream)

"""Usage history: CPU and memory over time of a task, a node, or all your tasks."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from dockyard.server.http.deps import CurrentUser, server_context
from dockyard.server.http.schemas import errors
from dockyard.server.state import usage_history as history
from dockyard.server.state.jobs import find_task
from dockyard.server.state.nodes import find_node

router = APIRouter(tags=["usage"])

Window = Annotated[
    int,
    Query(
        ge=60,
        le=86_400,
        description="seconds back from now (10 s buckets up to an hour, 60 s beyond)",
    ),
]


class UsagePointOut(BaseModel):
    t: int = Field(description="bucket start, epoch seconds")
    cpu: float = Field(description="mean CPU in cores over the bucket")
    memory_bytes: int = Field(description="mean memory in use over the bucket")
    max_memory_bytes: int = Field(description="largest memory seen (a task: its peak so far)")


class UsageSeriesOut(BaseModel):
    kind: str = Field(description="task, node or tasks (the sum of the tasks you may see)")
    id: str = Field(description="task or node id; '' for tasks")
    name: str
    resolution_s: int
    since: float
    cpu_limit: float | None = Field(description="cores: the task's limit or the node's capacity")
    memory_limit_bytes: int | None
    points: list[UsagePointOut]


def _points(rows: list[history.Point], scale: float = 1.0) -> list[UsagePointOut]:
    return [
        UsagePointOut(
            t=p.t,
            cpu=round(p.cpu * scale, 4),
            memory_bytes=int(p.memory_bytes),
            max_memory_bytes=p.max_memory_bytes,
        )
        for p in rows
    ]


@router.get("/api/v1/tasks/{ref}/usage", response_model=UsageSeriesOut, responses=errors(404))
def task_usage(
    request: Request, ref: str, who: CurrentUser, window_s: Window = 3600
) -> UsageSeriesOut:
    """The task's mean CPU (cores) and memory per bucket (yours only; admins: any)."""
    now = time.time()
    res = history.resolution_for(window_s)
    with server_context(request).db.read() as session:
        task = find_task(session, who, ref)
        rows = history.series(session, history.TASK, [task.id], now - window_s, res)
        return UsageSeriesOut(
            kind="task",
            id=task.id,
            name=task.name,
            resolution_s=res,
            since=now - window_s,
            cpu_limit=task.cpu_millis / 1000 if task.cpu_millis else None,
            memory_limit_bytes=task.memory_bytes or None,
            points=_points(rows),
        )


@router.get("/api/v1/nodes/{ref}/usage", response_model=UsageSeriesOut, responses=errors(404))
def node_usage(
    request: Request, ref: str, who: CurrentUser, window_s: Window = 3600
) -> UsageSeriesOut:
    """The node's host CPU (cores busy, from its busy fraction and its capacity) and
    memory in use per bucket, as its heartbeats reported them."""
    now = time.time()
    res = history.resolution_for(window_s)
    with server_context(request).db.read() as session:
        node = find_node(session, ref)
        cores = node.cpu_millis / 1000
        rows = history.series(session, history.NODE, [node.id], now - window_s, res)
        return UsageSeriesOut(
            kind="node",
            id=node.id,
            name=node.name,
            resolution_s=res,
            since=now - window_s,
            cpu_limit=cores,
            memory_limit_bytes=node.memory_bytes,
            points=_points(rows, cores),
        )


@router.get("/api/v1/usage", response_model=UsageSeriesOut)
def tasks_usage(request: Request, who: CurrentUser, window_s: Window = 3600) -> UsageSeriesOut:
    """The sum over the tasks you may see (yours; admins: everyone's) per bucket."""
    now = time.time()
    res = history.resolution_for(window_s)
    with server_context(request).db.read() as session:
        rows = history.series(
            session, history.OWNER, [history.owner_scope(who)], now - window_s, res
        )
    return UsageSeriesOut(
        kind="tasks",
        id="",
        name="all tasks" if who.is_admin else f"{who.name}'s tasks",
        resolution_s=res,
        since=now - window_s,
        cpu_limit=None,
        memory_limit_bytes=None,
        points=_points(rows),
    )

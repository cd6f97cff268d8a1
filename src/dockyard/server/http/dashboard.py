"""The web dashboard, its live event stream, the cluster summary, and ``/metrics``.

The dashboard is static files (``static/``: HTML, CSS, ES modules, no CDN)
that use the same REST API as the CLI with a bearer token the user pastes in.
Every response carries security headers; the dashboard's strict
Content-Security-Policy allows only this origin's scripts and styles, no
inline code, and no framing.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dockyard.core.states import TaskState
from dockyard.server.http.deps import AdminUser, CurrentUser, ServerContext
from dockyard.server.http.schemas import INT64_MAX
from dockyard.server.http.stream import (
    RESET,
    EventHub,
    Subscriber,
    format_sse,
    next_item,
    public,
    visible,
)
from dockyard.server.metrics import NODE_STATES, RequestMetricsMiddleware, ServerMetrics
from dockyard.server.state import summary as cluster
from dockyard.server.state.auth import Principal
from dockyard.server.state.reads import event_rows, list_events

STATIC = Path(__file__).parent / "static"

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
KEEPALIVE_S = 15.0
#: A reconnecting client further behind than this reloads instead of replaying.
MAX_BACKLOG = 5000


class SecurityHeadersMiddleware:
    """Adds nosniff, no framing, no referrer, and the CSP to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A response that sets its own policy keeps it (/docs: http/docs.py).
        extra = [*SECURITY_HEADERS, (b"content-security-policy", CSP.encode())]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                headers = list(message.get("headers", []))
                headers += [(k, v) for k, v in extra if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_wrapper)


class SummaryOut(BaseModel):
    tasks_by_state: dict[str, int] = Field(description="visible tasks per state")
    queue_depth: int = Field(description="visible pending tasks that want to run")
    nodes_by_state: dict[str, int]
    nodes: int
    cpu: float = Field(description="cores of live (not down) nodes")
    memory_bytes: int
    allocated_cpu: float
    allocated_memory_bytes: int
    last_event_id: int = Field(description="newest event the caller may see")
    by_owner: dict[str, dict[str, Any]] = Field(
        description="admins: per user, tasks per state and resources held by placed tasks"
    )


def summary(ctx: ServerContext, who: Principal) -> SummaryOut:
    with ctx.db.read() as session:
        seen = cluster.summary(session, who)
    nodes = dict.fromkeys(NODE_STATES, 0)
    for state, count in seen.nodes.items():
        nodes[state] = nodes.get(state, 0) + count
    return SummaryOut(
        tasks_by_state={s.value: seen.tasks.get(s.value, 0) for s in TaskState},
        queue_depth=seen.queue_depth,
        nodes_by_state=nodes,
        nodes=seen.node_count,
        cpu=seen.cpu_millis / 1000,
        memory_bytes=seen.memory_bytes,
        allocated_cpu=seen.allocated_cpu_millis / 1000,
        allocated_memory_bytes=seen.allocated_memory_bytes,
        last_event_id=seen.last_event_id,
        by_owner=seen.by_owner,
    )


def backlog(ctx: ServerContext, who: Principal, after: int) -> list[dict[str, Any]] | None:
    """Visible events after ``after``, or None when there are too many to replay."""
    with ctx.db.read() as session:
        events = list_events(session, who, after=after, limit=MAX_BACKLOG + 1)
        if len(events) > MAX_BACKLOG:
            return None
        return [public(r) for r in event_rows(session, events) if visible(who, r)]


def install(app: FastAPI, ctx: ServerContext) -> None:
    """Add the dashboard, the event stream, the summary and /metrics to ``app``.

    Uses the context's metrics and event hub, making them when the caller did not.
    """
    if ctx.metrics is None:
        ctx.metrics = ServerMetrics()
        ctx.metrics.attach_store(ctx.db)
    if ctx.event_hub is None:
        ctx.event_hub = EventHub(ctx.db, ctx.metrics)
    metrics, hub = ctx.metrics, ctx.event_hub
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.add_middleware(SecurityHeadersMiddleware)
    app.mount("/ui", StaticFiles(directory=STATIC), name="ui")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.get("/api/v1/summary", response_model=SummaryOut)
    def get_summary(who: CurrentUser) -> SummaryOut:
        return summary(ctx, who)

    @app.get(
        "/api/v1/events/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def event_stream(
        who: CurrentUser,
        after: Annotated[int | None, Query(ge=0, le=INT64_MAX)] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """Server-sent events: each new event you may see, as it is recorded.

        ``after`` (or the ``Last-Event-ID`` header) replays what you missed. Event
        types: ``hello`` (``{"last_id"}``), ``event`` (an event plus ``task_name``,
        ``task_state``, ``node_name``), ``reset`` (you fell behind: reload), and
        comment lines as keep-alives.
        """
        resume = last_event_id or ""
        if after is None and resume.isascii() and resume.isdigit() and len(resume) <= 19:
            after = min(int(resume), INT64_MAX)  # an id past BIGINT is no id: nothing newer
        loop = asyncio.get_running_loop()
        slot = ctx.event_streams.slot(who.user_id)  # 429 past the user's cap
        try:
            sub = await run_in_threadpool(hub.subscribe, who, loop)
        except BaseException:
            slot.release()
            raise
        try:
            replay = await run_in_threadpool(
                backlog, ctx, who, sub.start_id if after is None else after
            )
        except BaseException:
            hub.unsubscribe(sub)
            slot.release()
            raise
        stream = _sse(hub, sub, after, replay)
        slot.tie_to(stream)  # given back when the stream ends or is dropped unstarted
        weakref.finalize(stream, hub.unsubscribe, sub)
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/metrics", include_in_schema=False)
    def prometheus(_: AdminUser) -> Response:
        """Prometheus text format. Admins only: the counts are cluster-wide (every
        user's tasks, nodes, services by name), which a user's own views never show."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _sse(
    hub: EventHub,
    sub: Subscriber,
    after: int | None,
    replay: list[dict[str, Any]] | None,
) -> AsyncIterator[str]:
    try:
        yield "retry: 2000\n\n"
        if replay is None:
            yield format_sse("reset", json.dumps({"reason": "too far behind"}))
            return
        last = max([sub.start_id if after is None else after, *(r["id"] for r in replay)])
        yield format_sse("hello", json.dumps({"last_id": last}))
        for row in replay:
            yield format_sse("event", json.dumps(row), row["id"])
        quiet_since = time.monotonic()
        while True:
            item = await next_item(sub, 5.0)
            if item is None:  # (a disconnect cancels this generator)
                if time.monotonic() - quiet_since >= KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield ": keep-alive\n\n"
                continue
            if isinstance(item, str):  # CLOSED or RESET
                if item == RESET:
                    yield format_sse("reset", json.dumps({"reason": "too slow"}))
                return
            quiet_since = time.monotonic()
            chunk = []
            for row in item:
                if row["id"] > last:
                    last = row["id"]
                    chunk.append(format_sse("event", json.dumps(row), row["id"]))
            if chunk:
                yield "".join(chunk)
    finally:
        hub.unsubscribe(sub)

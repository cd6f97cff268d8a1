"""``exec`` routes: run a command in a running task (owner or admin), audited.

- ``POST /api/v1/tasks/{ref}/exec``: non-interactive; waits for the exit and
  returns the exit code with the collected output.
- ``WS /api/v1/tasks/{ref}/exec/ws?command=..&command=..&tty=true&cols=&rows=``:
  interactive relay. Binary frames carry stdin (client -> server) and output
  (server -> client); text frames are JSON control messages: the client sends
  ``{"resize": [cols, rows]}`` or ``{"eof": true}``, the server ends with
  ``{"exit": code, "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import shlex
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from dockyard.core.states import TaskState
from dockyard.server.errors import Conflict, ServerError, Unauthorized
from dockyard.server.gateway.execs import ExecService, ExecSession
from dockyard.server.http.deps import CurrentUser, ServerContext, server_context
from dockyard.server.http.schemas import RequestBody, errors
from dockyard.server.state import auth
from dockyard.server.state.auth import Principal
from dockyard.server.state.events import EventKind, record
from dockyard.server.state.jobs import find_task
from dockyard.store.errors import NotFound

router = APIRouter()

MAX_OUTPUT = 1024 * 1024
#: A terminal's columns or rows, at most.
MAX_TERMINAL = 10_000
TerminalSize = Annotated[int, Query(ge=1, le=MAX_TERMINAL)]


class ExecRequest(RequestBody):
    command: list[str] = Field(min_length=1, max_length=256)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)


def _service(ctx: ServerContext) -> ExecService:
    if ctx.execs is None:
        raise Conflict("exec is not enabled on this server")
    return ctx.execs


def _begin(
    ctx: ServerContext,
    who: Principal,
    ref: str,
    command: list[str],
    tty: bool,
    stdin: bool,
    cols: int,
    rows: int,
) -> ExecSession:
    """Authorise (the caller sees only their own tasks, admins all), audit, start."""
    service = _service(ctx)
    with ctx.db.write() as session:
        task = find_task(session, who, ref)
        if task.state != TaskState.RUNNING.value or task.node_id is None:
            raise Conflict(f"task {task.id} is {task.state}, not running")
        mode = "interactive" if stdin else "exec"
        record(
            session,
            EventKind.TASK,
            "exec",
            f"{who.name} ({mode}{', tty' if tty else ''}): {shlex.join(command)[:400]}",
            task=task,
        )
        task_id, node_id, owner_id = task.id, task.node_id, task.owner_id
    return service.start(task_id, node_id, owner_id, command, tty, stdin, cols, rows)


def _end(ctx: ServerContext, who: Principal, exec_session: ExecSession, code: Any) -> None:
    with ctx.db.write() as session:
        record(
            session,
            EventKind.TASK,
            "exec_ended",
            f"{who.name}: exit {code if code is not None else '?'}",
            task_id=exec_session.task_id,
            node_id=exec_session.node_id,
            owner_id=exec_session.owner_id,
        )


async def next_event(session: ExecSession, timeout: float) -> tuple[str, Any, Any] | None:
    """The session's next event, or None after ``timeout``; waits on the event loop
    (woken by the gateway thread), never in a worker thread."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(ready.set)

    session.waker = wake
    deadline = loop.time() + timeout
    while True:
        ready.clear()
        try:
            return session.events.get_nowait()
        except queue.Empty:
            pass
        left = deadline - loop.time()
        if left <= 0:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), timeout=left)


@router.post("/api/v1/tasks/{ref}/exec", responses=errors(404, 409, 429, 503))
async def exec_command(
    request: Request, ref: str, body: ExecRequest, who: CurrentUser
) -> dict[str, Any]:
    """Run a command and wait for its exit. Async: a running exec holds no worker
    thread; each user may have ``exec_sessions.per_user`` open at once (429)."""
    ctx = server_context(request)
    service = _service(ctx)
    with ctx.exec_sessions.hold(who.user_id):
        exec_session = await run_in_threadpool(
            _begin, ctx, who, ref, body.command, False, False, 80, 24
        )
        out: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        truncated = False
        deadline = time.monotonic() + body.timeout_s
        code: Any = None
        error = ""
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    error = f"timed out after {body.timeout_s:g}s"
                    break
                event = await next_event(exec_session, min(left, 1.0))
                if event is None:
                    if await request.is_disconnected():  # nobody waits for the answer
                        error = "the client went away"
                        break
                    continue
                kind, first, second = event
                if kind == "exit":
                    code, error = first, second
                    break
                buffer = out.get(str(first), out["stdout"])
                room = MAX_OUTPUT - len(buffer)
                truncated = truncated or len(second) > room
                buffer.extend(second[: max(room, 0)])
        finally:
            service.close(exec_session)
            await run_in_threadpool(_end, ctx, who, exec_session, code)
    return {
        "exec_id": exec_session.id,
        "task_id": exec_session.task_id,
        "exit_code": code,
        "error": error,
        "stdout": out["stdout"].decode("utf-8", "replace"),
        "stderr": out["stderr"].decode("utf-8", "replace"),
        "truncated": truncated,
    }


@router.websocket("/api/v1/tasks/{ref}/exec/ws")
async def exec_socket(
    websocket: WebSocket,
    ref: str,
    command: Annotated[list[str], Query()],
    tty: bool = True,
    cols: TerminalSize = 80,
    rows: TerminalSize = 24,
) -> None:
    ctx = server_context(websocket)
    header = websocket.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    try:
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing bearer token")
        who = await run_in_threadpool(_authenticate, ctx, token.strip())
        slot = ctx.exec_sessions.slot(who.user_id)  # 429 past the user's cap
        try:
            exec_session = await run_in_threadpool(
                _begin, ctx, who, ref, list(command), tty, True, cols, rows
            )
        except BaseException:
            slot.release()
            raise
    except (ServerError, NotFound) as exc:  # refused before the upgrade: no socket at all
        status = exc.status_code if isinstance(exc, ServerError) else 404
        await websocket.close(code=4000 + status, reason=str(exc)[:120])
        return
    service = _service(ctx)
    await websocket.accept()
    code: Any = None

    async def pump_input() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes"):
                service.write(exec_session, message["bytes"])
            elif message.get("text"):
                try:
                    control = json.loads(message["text"])
                except ValueError:
                    continue
                if not isinstance(control, dict):
                    continue
                size = _terminal_size(control.get("resize"))
                if size is not None:
                    service.resize(exec_session, *size)
                if control.get("eof"):
                    service.hangup(exec_session)

    reader = asyncio.create_task(pump_input())
    try:
        while True:
            event = await next_event(exec_session, 0.5)
            if event is None:
                if reader.done():
                    break
                continue
            kind, first, second = event
            if kind == "exit":
                code = first
                await websocket.send_text(json.dumps({"exit": first, "error": second}))
                break
            await websocket.send_bytes(second)
    except WebSocketDisconnect:
        pass
    finally:
        reader.cancel()
        service.close(exec_session)
        slot.release()
        await run_in_threadpool(_end, ctx, who, exec_session, code)
        try:
            await websocket.close()
        except (RuntimeError, WebSocketDisconnect):  # the client already went away
            pass


def _authenticate(ctx: ServerContext, token: str) -> Principal:
    with ctx.db.read() as session:
        return auth.authenticate(session, token)


def _terminal_size(value: Any) -> tuple[int, int] | None:
    """``[cols, rows]`` of a resize message, or None when it is not two sane integers."""
    if not isinstance(value, list) or len(value) != 2:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return None
    cols, rows = value
    if not (1 <= cols <= MAX_TERMINAL and 1 <= rows <= MAX_TERMINAL):
        return None
    return cols, rows

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


@router.post("/api/v1/tasks/{ref}/exec", responses=errors(404, 409, 503))
def exec_command(request: Request, ref: str, body: ExecRequest, who: CurrentUser) -> dict[str, Any]:
    ctx = server_context(request)
    service = _service(ctx)
    exec_session = _begin(ctx, who, ref, body.command, False, False, 80, 24)
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
            try:
                kind, first, second = exec_session.events.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if kind == "exit":
                code, error = first, second
                break
            buffer = out.get(str(first), out["stdout"])
            room = MAX_OUTPUT - len(buffer)
            truncated = truncated or len(second) > room
            buffer.extend(second[: max(room, 0)])
    finally:
        service.close(exec_session)
    _end(ctx, who, exec_session, code)
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
        with ctx.db.read() as session:
            who = auth.authenticate(session, token.strip())
        exec_session = await run_in_threadpool(
            _begin, ctx, who, ref, list(command), tty, True, cols, rows
        )
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
            try:
                kind, first, second = await run_in_threadpool(exec_session.events.get, True, 0.5)
            except queue.Empty:
                if reader.done():
                    break
                continue
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
        await run_in_threadpool(_end, ctx, who, exec_session, code)
        try:
            await websocket.close()
        except (RuntimeError, WebSocketDisconnect):  # the client already went away
            pass


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

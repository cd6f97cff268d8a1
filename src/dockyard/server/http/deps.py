"""Shared pieces of the HTTP layer: the server context and the auth dependencies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from dockyard.server.errors import Forbidden, Unauthorized
from dockyard.server.http.limits import DEFAULT_MAX_BODY_BYTES, StreamLimit
from dockyard.server.state import auth
from dockyard.server.state.auth import Principal
from dockyard.server.state.keyring import Keyring
from dockyard.store.db import Database

if TYPE_CHECKING:
    from dockyard.server.gateway.builds import BuildService
    from dockyard.server.gateway.execs import ExecService
    from dockyard.server.http.stream import EventHub
    from dockyard.server.metrics import ServerMetrics


@dataclass
class ServerContext:
    """What the API needs from the rest of the server."""

    db: Database
    data_dir: Path
    wake_scheduler: Callable[[], None]
    push: Callable[[set[str]], None]
    max_runtime_cap_s: float | None = None
    #: Ask every connected agent to remove dead containers; returns nodes asked.
    prune_nodes: Callable[[], int] = lambda: 0
    cluster_policy: dict[str, Any] = field(default_factory=dict)
    #: Prometheus metrics of this server (``create_app`` makes one if absent).
    metrics: ServerMetrics | None = None
    #: The live event stream's poller (``create_app`` makes one if absent).
    event_hub: EventHub | None = None
    #: Image builds (None: builds are not available).
    builds: BuildService | None = None
    #: Exec sessions in running tasks (None: exec is not available).
    execs: ExecService | None = None
    #: This server instance's id (HA: several instances share one store).
    instance_id: str = ""
    #: Open log follows, exec sessions and event streams per user (429 past the cap).
    log_follows: StreamLimit = field(default_factory=lambda: StreamLimit("log follows"))
    exec_sessions: StreamLimit = field(default_factory=lambda: StreamLimit("exec sessions"))
    event_streams: StreamLimit = field(default_factory=lambda: StreamLimit("event streams"))
    #: Largest request body (bytes) of any route without its own limit (413 past it).
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Bearer tokens verified in the last seconds (a revoked one stops within its TTL).
    tokens: auth.TokenCache = field(default_factory=auth.TokenCache)
    #: Encrypts secrets and configs at rest (None: storing them answers 503).
    keyring: Keyring | None = None


def server_context(conn: HTTPConnection) -> ServerContext:
    """The server's context, from a request or WebSocket of its app."""
    ctx: ServerContext = conn.app.state.ctx
    return ctx


_bearer = HTTPBearer(auto_error=False)


async def principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from the bearer token; 401 without a valid one. Async: a token
    verified within the cache's TTL costs no worker thread; otherwise the store is
    asked on one."""
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token")
    ctx = server_context(request)
    who = ctx.tokens.cached(creds.credentials)
    if who is not None:
        return who
    return await run_in_threadpool(ctx.tokens.authenticate, ctx.db.read, creds.credentials)


async def require_admin(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.is_admin:
        raise Forbidden("admin only")
    return who


CurrentUser = Annotated[Principal, Depends(principal)]
AdminUser = Annotated[Principal, Depends(require_admin)]

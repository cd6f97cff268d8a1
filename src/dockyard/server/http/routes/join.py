"""Node join tokens (admin): create, list, revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from dockyard.protocol import curve
from dockyard.server.http.deps import AdminUser, server_context
from dockyard.server.http.schemas import RequestBody, errors
from dockyard.server.state import join
from dockyard.server.state.events import EventKind, record

router = APIRouter()


class JoinTokenCreate(RequestBody):
    description: str = Field(default="", max_length=255)
    ttl_s: float | None = Field(default=None, gt=0, le=10 * 365 * 86400)


@router.post("/api/v1/nodes/join-tokens", status_code=201, responses=errors(403))
def create_join_token(request: Request, body: JoinTokenCreate, who: AdminUser) -> dict[str, Any]:
    """A new join token: ``dockyard agent --join-token TOKEN``. Shown once."""
    ctx = server_context(request)
    keys = curve.load_or_create_keys(ctx.data_dir)
    with ctx.db.write() as session:
        row, token = join.create_token(
            session, keys.public, who.user_id, body.description, body.ttl_s
        )
        record(
            session,
            EventKind.NODE,
            "join_token_created",
            f"join token {row.id} by {who.name}",
            owner_id=who.user_id,
        )
        return {**join.token_out(row), "token": token, "server_key": curve.key_hex(keys.public)}


@router.get("/api/v1/nodes/join-tokens", responses=errors(403))
def list_join_tokens(request: Request, who: AdminUser) -> list[dict[str, Any]]:
    with server_context(request).db.read() as session:
        return [join.token_out(row) for row in join.list_tokens(session)]


@router.delete("/api/v1/nodes/join-tokens/{token_id}", responses=errors(403, 404))
def revoke_join_token(request: Request, token_id: str, who: AdminUser) -> dict[str, Any]:
    """No new node can join with it; nodes that already joined stay."""
    with server_context(request).db.write() as session:
        row, revoked = join.revoke_token(session, token_id)
        if revoked:
            record(
                session,
                EventKind.NODE,
                "join_token_revoked",
                f"join token {row.id} by {who.name}",
                owner_id=who.user_id,
            )
        return join.token_out(row)

"""Secure node joining: the server's CURVE key pair, join tokens, admitted node keys.

A join token is ``dyj.<secret>.<server public key, hex>``: the agent proves it
was invited with the secret (stored here as SHA-256 only) and pins the server's
key from the token, so it talks to no other server. The gateway is a CURVE
server; each agent has its own key pair, and once admitted its node id is
bound to its public key (``node_keys``): later messages for that node id from
any other key are dropped.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.ids import new_id
from dockyard.protocol.curve import (
    TOKEN_PREFIX,
    format_token,
    parse_token,
)
from dockyard.server.state.auth import hash_token
from dockyard.store.errors import NotFound
from dockyard.store.tables import JoinToken, NodeKey


def create_token(
    session: Session,
    server_public: bytes,
    created_by: str | None,
    description: str = "",
    ttl_s: float | None = None,
) -> tuple[JoinToken, str]:
    """A new join token; returns the row and the token text (shown once)."""
    secret = secrets.token_urlsafe(32)
    now = time.time()
    row = JoinToken(
        id=new_id(),
        token_hash=hash_token(secret),
        description=description,
        created_by=created_by,
        created_at=now,
        expires_at=now + ttl_s if ttl_s else None,
        uses=0,
    )
    session.add(row)
    session.flush()
    return row, format_token(secret, server_public)


def list_tokens(session: Session) -> list[JoinToken]:
    """Every join token, oldest first."""
    return list(session.scalars(select(JoinToken).order_by(JoinToken.created_at)))


def revoke_token(session: Session, token_id: str) -> tuple[JoinToken, bool]:
    """Revoke a join token (NotFound if there is none); returns the row and whether it
    was revoked just now (False: it already was)."""
    row = session.get(JoinToken, token_id)
    if row is None:
        raise NotFound("join token", token_id)
    if row.revoked_at is not None:
        return row, False
    row.revoked_at = time.time()
    return row, True


def token_out(row: JoinToken) -> dict[str, Any]:
    now = time.time()
    state = "active"
    if row.revoked_at is not None:
        state = "revoked"
    elif row.expires_at is not None and row.expires_at <= now:
        state = "expired"
    return {
        "id": row.id,
        "description": row.description,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "last_used_at": row.last_used_at,
        "uses": row.uses,
        "state": state,
    }


def check_token(session: Session, presented: str) -> JoinToken | None:
    """The active token row whose secret is ``presented`` (the secret or the full token)."""
    if not presented:
        return None
    secret = presented
    if presented.startswith(TOKEN_PREFIX + "."):
        try:
            secret, _ = parse_token(presented)
        except ValueError:
            return None
    digest = hash_token(secret)
    row = session.scalar(select(JoinToken).where(JoinToken.token_hash == digest))
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    if row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= time.time():
        return None
    return row


def admit(session: Session, node_id: str, public_key: str, token: JoinToken) -> None:
    """Bind ``node_id`` to ``public_key`` (replacing an earlier key) and count the use."""
    now = time.time()
    row = session.get(NodeKey, node_id)
    if row is None:
        session.add(
            NodeKey(node_id=node_id, public_key=public_key, join_token_id=token.id, joined_at=now)
        )
    else:
        row.public_key, row.join_token_id, row.joined_at = public_key, token.id, now
    token.uses += 1
    token.last_used_at = now


def admitted_keys(session: Session) -> dict[str, str]:
    return {
        str(node_id): str(key)
        for node_id, key in session.execute(select(NodeKey.node_id, NodeKey.public_key)).all()
    }

"""Listing and revoking API tokens; disabling and removing users (admins).

Only a token's hash is stored, so a listing shows its id, owner, description, age
and whether it is revoked, never the token. After any of these changes the
caller clears the server's token cache (:class:`dockyard.server.state.auth.TokenCache`),
so a revoked token, or any token of a disabled or removed user, is refused at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from dockyard.core.states import ACTIVE_STATES
from dockyard.server.errors import Conflict
from dockyard.server.state.auth import Principal
from dockyard.server.state.events import EventKind, record
from dockyard.server.state.users import find_user
from dockyard.store.errors import NotFound
from dockyard.store.tables import Task, Token, User, Workload


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    user: str
    description: str
    created_at: float
    revoked: bool


def list_tokens(session: Session, who: Principal, user: str | None = None) -> list[TokenInfo]:
    """Tokens, newest first: admins see everyone's (``user``: only theirs), users their own."""
    query = select(Token, User.name).join(User, Token.user_id == User.id)
    if not who.is_admin:
        query = query.where(Token.user_id == who.user_id)
    elif user:
        query = query.where(User.id == find_user(session, user).id)
    rows = session.execute(query.order_by(Token.created_at.desc(), Token.id)).all()
    return [TokenInfo(t.id, name, t.description, t.created_at, bool(t.revoked)) for t, name in rows]


def revoke_token(session: Session, who: Principal, token_id: str) -> TokenInfo:
    """Revoke one token: the admin any, a user their own (another's is not found)."""
    row = session.execute(
        select(Token, User.name).join(User, Token.user_id == User.id).where(Token.id == token_id)
    ).first()
    if row is None or (not who.is_admin and row[0].user_id != who.user_id):
        raise NotFound("token", token_id)
    token, name = row
    token.revoked = True
    record(session, EventKind.USER, "token_revoked", f"token {token_id} of {name} by {who.name}")
    return TokenInfo(token.id, name, token.description, token.created_at, True)


def set_disabled(session: Session, who: Principal, name: str, disabled: bool) -> User:
    """Disable (every token refused, none issued) or enable a user; not oneself."""
    user = find_user(session, name)
    if user.id == who.user_id:
        raise Conflict("you cannot disable yourself")
    user.disabled = disabled
    verb = "disabled" if disabled else "enabled"
    record(session, EventKind.USER, f"user_{verb}", f"{name} {verb} by {who.name}")
    return user


def remove_user(session: Session, who: Principal, name: str) -> None:
    """Remove a user and their tokens. Refused (409) for oneself and for a user who
    owns work (live or finished: the history keeps its owner): disable them instead."""
    user = find_user(session, name)
    if user.id == who.user_id:
        raise Conflict("you cannot remove yourself")
    live = session.scalar(
        select(func.count())
        .select_from(Task)
        .where(Task.owner_id == user.id, Task.state.in_([str(s) for s in ACTIVE_STATES]))
    )
    if live:
        raise Conflict(f"{name} has {live} live task(s): kill them first, or disable {name}")
    owns = session.scalar(select(Workload.id).where(Workload.owner_id == user.id).limit(1))
    if owns is not None:
        raise Conflict(
            f"{name} owns workloads (history kept under their name): disable {name} instead, "
            "or clear the history first (dockyard queue clear-history)"
        )
    session.execute(delete(Token).where(Token.user_id == user.id))
    session.delete(user)
    record(session, EventKind.USER, "user_removed", f"{name} removed by {who.name}")

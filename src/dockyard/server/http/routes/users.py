"""Who am I, users (admins) and tokens."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Request

from dockyard.server.errors import Forbidden
from dockyard.server.http.deps import AdminUser, CurrentUser, server_context
from dockyard.server.http.schemas import (
    ErrorOut,
    TokenCreate,
    TokenInfoOut,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
    UserWithTokenOut,
    WhoAmIOut,
    errors,
)
from dockyard.server.state import auth, tokens, users

router = APIRouter(tags=["users"])


@router.get("/api/v1/whoami", response_model=WhoAmIOut)
def whoami(who: CurrentUser) -> WhoAmIOut:
    return WhoAmIOut(id=who.user_id, name=who.name, admin=who.is_admin)


@router.get("/api/v1/users", response_model=list[UserOut])
def list_users(request: Request, _: AdminUser) -> list[UserOut]:
    with server_context(request).db.read() as session:
        return [UserOut.build(u) for u in users.list_users(session)]


@router.post(
    "/api/v1/users",
    response_model=UserWithTokenOut,
    status_code=201,
    responses={409: {"model": ErrorOut}, 403: {"model": ErrorOut}},
)
def add_user(request: Request, body: UserCreate, who: AdminUser) -> UserWithTokenOut:
    with server_context(request).db.write() as session:
        user = auth.create_user(session, body.name, body.admin)
        user.home = body.home
        token = auth.issue_token(session, user, f"created by {who.name}")
        return UserWithTokenOut(user=UserOut.build(user), token=token)


@router.patch(
    "/api/v1/users/{name}",
    response_model=UserOut,
    responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)
def update_user(request: Request, name: str, body: UserUpdate, who: AdminUser) -> UserOut:
    with server_context(request).db.write() as session:
        user = users.update_user(
            session,
            name,
            who.name,
            home=body.home,
            quota=body.quota,
            policy=body.policy,
            share=body.share,
        )
        return UserOut.build(user)


@router.post(
    "/api/v1/tokens",
    response_model=TokenOut,
    status_code=201,
    responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)
def create_token(request: Request, body: TokenCreate, who: CurrentUser) -> TokenOut:
    name = body.user or who.name
    if name != who.name and not who.is_admin:
        raise Forbidden("only admins create tokens for other users")
    with server_context(request).db.write() as session:
        user = users.find_user(session, name)
        token = auth.issue_token(session, user, body.description)
        return TokenOut(user=user.name, token=token)


@router.get("/api/v1/tokens", response_model=list[TokenInfoOut], responses=errors(403, 404))
def list_tokens(
    request: Request,
    who: CurrentUser,
    user: Annotated[str | None, Query(max_length=64)] = None,
) -> list[TokenInfoOut]:
    """Tokens (never their values): admins see everyone's (``user``: one user's),
    users their own."""
    with server_context(request).db.read() as session:
        return [TokenInfoOut(**asdict(t)) for t in tokens.list_tokens(session, who, user)]


@router.delete(
    "/api/v1/tokens/{token_id}",
    response_model=TokenInfoOut,
    responses={404: {"model": ErrorOut}},
)
def revoke_token(request: Request, token_id: str, who: CurrentUser) -> TokenInfoOut:
    """Revoke a token (admins: any; users: their own). Refused at once (401)."""
    ctx = server_context(request)
    with ctx.db.write() as session:
        info = tokens.revoke_token(session, who, token_id)
    ctx.tokens.clear()  # the cache must not keep trusting it
    return TokenInfoOut(**asdict(info))


@router.post(
    "/api/v1/users/{name}/disable",
    response_model=UserOut,
    responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
)
def disable_user(request: Request, name: str, who: AdminUser) -> UserOut:
    """Disable a user (admin): each of their tokens gets 401 at once; none is issued."""
    ctx = server_context(request)
    with ctx.db.write() as session:
        out = UserOut.build(tokens.set_disabled(session, who, name, True))
    ctx.tokens.clear()
    return out


@router.post(
    "/api/v1/users/{name}/enable",
    response_model=UserOut,
    responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)
def enable_user(request: Request, name: str, who: AdminUser) -> UserOut:
    """Enable a disabled user again (admin): their tokens that are not revoked work."""
    with server_context(request).db.write() as session:
        return UserOut.build(tokens.set_disabled(session, who, name, False))


@router.delete(
    "/api/v1/users/{name}",
    status_code=204,
    responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
)
def remove_user(request: Request, name: str, who: AdminUser) -> None:
    """Remove a user and their tokens (admin); 409 while they own work (disable them)."""
    ctx = server_context(request)
    with ctx.db.write() as session:
        tokens.remove_user(session, who, name)
    ctx.tokens.clear()

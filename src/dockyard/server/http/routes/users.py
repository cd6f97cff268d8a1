"""Who am I, users (admins) and tokens."""

from __future__ import annotations

from fastapi import APIRouter, Request

from dockyard.server.errors import Forbidden
from dockyard.server.http.deps import AdminUser, CurrentUser, server_context
from dockyard.server.http.schemas import (
    ErrorOut,
    TokenCreate,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
    UserWithTokenOut,
    WhoAmIOut,
)
from dockyard.server.state import auth, users

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

"""Secrets and configs: ``/api/v1/secrets`` and ``/api/v1/configs``.

Values go in (base64 in JSON) and never come out: every answer carries names,
sizes, dates, labels and owners only. Each user has their own namespace; an
admin lists everyone's and may remove another's with ``?owner=NAME``. A value a
live service mounts cannot be removed (409 naming the services).
"""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from dockyard.core.errors import ValidationError
from dockyard.core.secrets import MAX_VALUE_BYTES, FileKind
from dockyard.core.specs import NAME_PATTERN
from dockyard.server.errors import ServerError
from dockyard.server.http.deps import CurrentUser, server_context
from dockyard.server.http.schemas import RequestBody, errors
from dockyard.server.state import secrets as secret_ops
from dockyard.server.state.events import EventKind, record
from dockyard.server.state.keyring import Keyring

router = APIRouter(tags=["secrets"])


class ValueCreate(RequestBody):
    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    data: str = Field(
        max_length=(MAX_VALUE_BYTES * 4) // 3 + 8,
        description=f"the value, base64 (at most {MAX_VALUE_BYTES} bytes decoded)",
    )
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)


class ValueOut(BaseModel):
    name: str
    kind: str = Field(description="secret or config")
    owner: str
    size: int = Field(description="bytes")
    labels: dict[str, str]
    created_at: float
    updated_at: float
    created: bool | None = Field(default=None, description="PUT: true when it was new")


class NoKey(ServerError):
    status_code = 503
    code = "no_secrets_key"


def _keyring(request: Request) -> Keyring:
    keyring = server_context(request).keyring
    if keyring is None:
        raise NoKey("this server has no secrets key")
    return keyring


def _decode(data: str) -> bytes:
    try:
        return base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValidationError("data", "must be base64") from None


def _out(item: secret_ops.ValueInfo, created: bool | None = None) -> ValueOut:
    return ValueOut(
        name=item.name,
        kind=item.kind,
        owner=item.owner,
        size=item.size,
        labels=item.labels,
        created_at=item.created_at,
        updated_at=item.updated_at,
        created=created,
    )


def _routes(kind: FileKind) -> None:
    base = f"/api/v1/{kind.plural}"

    def create(body: ValueCreate, request: Request, who: CurrentUser) -> ValueOut:
        ctx = server_context(request)
        keyring, data = _keyring(request), _decode(body.data)
        with ctx.db.write() as session:
            row, _ = secret_ops.put(
                session, who, kind, body.name, data, keyring, labels=body.labels
            )
            record(
                session,
                EventKind.USER,
                f"{kind.value}_created",
                f"{kind.value} {row.name}",
                owner_id=who.user_id,
            )
            return _out(secret_ops.info(row, who.name))

    def replace(name: str, body: ValueCreate, request: Request, who: CurrentUser) -> ValueOut:
        if body.name != name:
            raise ValidationError("name", f"must match the path ({name})")
        ctx = server_context(request)
        keyring, data = _keyring(request), _decode(body.data)
        with ctx.db.write() as session:
            row, created = secret_ops.put(
                session, who, kind, name, data, keyring, replace=True, labels=body.labels
            )
            return _out(secret_ops.info(row, who.name), created)

    def list_all(request: Request, who: CurrentUser) -> list[ValueOut]:
        ctx = server_context(request)
        with ctx.db.read() as session:
            return [_out(i) for i in secret_ops.list_values(session, who, kind)]

    def show(
        name: str, request: Request, who: CurrentUser, owner: str | None = Query(None)
    ) -> ValueOut:
        ctx = server_context(request)
        with ctx.db.read() as session:
            row, owner_name = secret_ops.find(session, who, kind, name, owner)
            return _out(secret_ops.info(row, owner_name))

    def remove(
        name: str, request: Request, who: CurrentUser, owner: str | None = Query(None)
    ) -> Response:
        ctx = server_context(request)
        with ctx.db.write() as session:
            row, _ = secret_ops.find(session, who, kind, name, owner)
            secret_ops.delete(session, row)
            record(
                session,
                EventKind.USER,
                f"{kind.value}_removed",
                f"{kind.value} {name}",
                owner_id=row.owner_id,
            )
        return Response(status_code=204)

    what = kind.value
    router.add_api_route(
        base,
        create,
        methods=["POST"],
        status_code=201,
        response_model=ValueOut,
        responses=errors(409),
        summary=f"Store a {what} (its value is never shown again)",
    )
    router.add_api_route(
        f"{base}/{{name}}",
        replace,
        methods=["PUT"],
        response_model=ValueOut,
        summary=f"Store or replace a {what} (running replicas keep their file)",
    )
    router.add_api_route(
        base,
        list_all,
        methods=["GET"],
        response_model=list[ValueOut],
        summary=f"Your {kind.plural} (admins: everyone's); never their values",
    )
    router.add_api_route(
        f"{base}/{{name}}",
        show,
        methods=["GET"],
        response_model=ValueOut,
        responses=errors(404),
        summary=f"One {what}'s name, size, dates (never its value)",
    )
    router.add_api_route(
        f"{base}/{{name}}",
        remove,
        methods=["DELETE"],
        status_code=204,
        responses=errors(404, 409),
        summary=f"Remove a {what} no live service mounts",
    )


for _kind in FileKind:
    _routes(_kind)

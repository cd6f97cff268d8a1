"""The request guard as a plain ASGI middleware: what reaches the app, what it reads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Coroutine
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from dockyard.server.http.guard import RequestGuard, has_bearer


class App:
    """Reads the whole body, then answers 201; records what it saw."""

    def __init__(self) -> None:
        self.called = False
        self.read = 0
        self.error: BaseException | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called = True
        try:
            while True:
                message = await receive()
                self.read += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
        except Exception as exc:
            self.error = exc
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"app"})
            return
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def call(
    guard: RequestGuard,
    path: str,
    chunks: list[bytes],
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, Any] | bytes, int]:
    """(status, body, chunks the client had to hand over)."""
    scope: Scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    given = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal given
        index = given
        given += 1
        if index >= len(chunks):
            return {"type": "http.disconnect"}
        return {
            "type": "http.request",
            "body": chunks[index],
            "more_body": index < len(chunks) - 1,
        }

    async def send(message: Message) -> None:
        sent.append(message)

    run(guard(scope, receive, send))
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1, sent
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    try:
        return starts[0]["status"], json.loads(body), given
    except ValueError:
        return starts[0]["status"], body, given


TOKEN = {"Authorization": "Bearer dy_abc-DEF_123"}


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer dy_abc", True),
        ("bearer dy_abc", True),
        ("BEARER  dy_abc==", True),
        ("Bearer x", True),  # the shape only: the dependency checks the token
        ("Bearer", False),
        ("Bearer ", False),
        ("Bearer a b", False),
        ("Basic YTpi", False),
        ("Bearer " + "a" * 513, False),
        ("Bearer dy_\u00e9", False),
    ],
)
def test_bearer_shape(header: str, ok: bool) -> None:
    scope = {"headers": [(b"authorization", header.encode("utf-8"))]}
    assert has_bearer(scope) is ok


def test_anonymous_api_request_never_reaches_the_app() -> None:
    app = App()
    status, body, given = call(RequestGuard(app), "/api/v1/jobs", [b"{}"])
    assert status == 401 and body == {
        "error": "unauthorized",
        "message": "missing bearer token",
        "field": None,
        "rule": None,
    }
    assert not app.called and given == 0


@pytest.mark.parametrize("path", ["/healthz", "/", "/ui/app.js", "/svc/web/x", "/openapi.json"])
def test_routes_outside_the_api_pass_without_a_token(path: str) -> None:
    app = App()
    status, _, _ = call(RequestGuard(app), path, [b""], method="GET")
    assert status == 201 and app.called


def test_declared_length_over_the_limit_is_413_unread() -> None:
    app = App()
    headers = {**TOKEN, "Content-Length": "1001"}
    status, body, given = call(RequestGuard(app, 1000), "/api/v1/jobs", [b"x" * 1001], headers)
    assert status == 413 and isinstance(body, dict) and body["error"] == "too_large"
    assert body["field"] is None
    assert not app.called and given == 0


def test_streamed_body_is_cut_at_the_limit_and_the_app_answer_dropped() -> None:
    app = App()
    chunks = [b"x" * 400] * 100
    status, body, given = call(RequestGuard(app, 1000), "/api/v1/jobs", chunks, TOKEN)
    assert status == 413 and isinstance(body, dict) and body["error"] == "too_large"
    assert given == 3  # 1,200 bytes: the third chunk passes the limit; no more is read
    assert app.error is not None  # the app was told, and its own 400 was not sent


def test_a_body_at_the_limit_passes() -> None:
    app = App()
    status, _, _ = call(RequestGuard(app, 1000), "/api/v1/jobs", [b"x" * 500] * 2, TOKEN)
    assert status == 201 and app.read == 1000


def test_a_route_with_its_own_limit() -> None:
    guard = RequestGuard(App(), 1000, {("POST", "/api/v1/builds"): 10_000})
    status, _, _ = call(guard, "/api/v1/builds", [b"x" * 1000] * 5, TOKEN)
    assert status == 201
    status, _, _ = call(guard, "/api/v1/builds", [b"x" * 1000] * 11, TOKEN)
    assert status == 413
    status, _, _ = call(guard, "/api/v1/jobs", [b"x" * 1000] * 2, TOKEN)
    assert status == 413


def test_the_service_router_is_not_limited() -> None:
    app = App()
    status, _, _ = call(RequestGuard(app, 1000), "/svc/web/upload", [b"x" * 1000] * 5)
    assert status == 201 and app.read == 5000


@pytest.mark.parametrize(
    ("headers", "closes"),
    [
        ({}, False),
        ({"Content-Length": "0"}, False),
        ({"Content-Length": "10"}, True),
        ({"Transfer-Encoding": "chunked"}, True),
    ],
)
def test_a_refusal_closes_the_connection_only_over_an_unread_body(
    headers: dict[str, str], closes: bool
) -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        raise AssertionError("the body is not read")

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/jobs",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    run(RequestGuard(App())(scope, receive, send))
    start = sent[0]
    assert start["status"] == 401
    assert ((b"connection", b"close") in start["headers"]) is closes
    assert (b"www-authenticate", b"Bearer") in start["headers"]


def run(coro: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on a thread of its own: the browser tests' Playwright keeps an
    event loop running on the main thread for the whole session."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result(30)

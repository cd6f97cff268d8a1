"""What every HTTP request must pass before the app reads its body (pure ASGI middleware).

- **Auth before body.** A request to ``/api/v1`` without an ``Authorization:
  Bearer <token>`` header of the RFC 6750 form is a 401 before anything of its
  body is read. This checks the header's shape only; the token itself is checked
  by the route's dependency (``deps.principal``), which still answers 401 for a
  token that is not one.
- **Body size.** A body larger than the limit is a 413 ``too_large``: at once
  when its ``Content-Length`` says so, else (a chunked or streamed body) when the
  bytes read pass the limit; reading stops there. The limit is
  ``max_body_bytes`` (default 1 MiB) for every route but those given their own
  (the build-context upload). The service router (``/svc/``) is not limited:
  it streams bodies to the service, which sets its own limits.

Refusals are the API's JSON error shape: ``{"error": ..., "message": ...,
"field": null, "rule": null}``. See docs/security.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dockyard.server.http.ingress import API_PREFIX as SERVICE_PREFIX
from dockyard.server.http.limits import DEFAULT_MAX_BODY_BYTES
from dockyard.server.http.schemas import ErrorOut

#: Every route under it needs a bearer token.
API_PREFIX = "/api/v1"
#: ``credentials = "Bearer" 1*SP b64token`` (RFC 6750 2.1); a token of at most 512 characters.
_BEARER = re.compile(r"bearer +[A-Za-z0-9\-._~+/]{1,512}=*", re.IGNORECASE)


class BodyTooLarge(HTTPException):
    """Raised to the app when the body it reads passes the limit (the 413 is sent already)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


def has_bearer(scope: Scope) -> bool:
    """True when the request carries a well-formed ``Authorization: Bearer`` header."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":  # the first one, as the auth dependency reads it
            return _BEARER.fullmatch(value.decode("latin-1").strip()) is not None
    return False


def content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


def needs_token(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def has_body(scope: Scope) -> bool:
    """The request says a body follows (a length above 0, or chunked)."""
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def refuse(send: Send, status: int, code: str, message: str, close: bool) -> None:
    """Send the API's JSON error (with ``WWW-Authenticate`` on a 401); ``close``: the
    body is left unread, so the connection cannot carry another request."""
    body = json.dumps(ErrorOut(error=code, message=message).model_dump()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestGuard:
    """Refuses anonymous ``/api/v1`` requests and bodies over the limit, before the app
    reads them. ``route_limits`` maps ``(METHOD, path)`` to a route's own limit."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        route_limits: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.route_limits = dict(route_limits or {})

    def limit_for(self, method: str, path: str) -> int | None:
        """The body limit of a request (None: not limited here)."""
        if path.startswith(SERVICE_PREFIX + "/"):
            return None
        return self.route_limits.get((method, path), self.max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = str(scope.get("path", "")), str(scope.get("method", ""))
        if needs_token(path) and not has_bearer(scope):
            await refuse(send, 401, "unauthorized", "missing bearer token", has_body(scope))
            return
        limit = self.limit_for(method, path)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = content_length(scope)
        if declared is not None and declared > limit:
            await refuse(send, 413, "too_large", f"request body larger than {limit} bytes", True)
            return

        received = 0
        started = False  # a response began (ours or the app's)
        refused = False  # we sent the 413: the app's own response is dropped
        cut = False  # the body passed the limit: the app reads no more of it

        async def counted_receive() -> Message:
            nonlocal received, started, refused, cut
            if cut:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut = True
                    if not started:
                        started = refused = True
                        text = f"request body larger than {limit} bytes"
                        await refuse(send, 413, "too_large", text, True)
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not cut:
                raise
            # The app failed on the body we cut off (the client has its 413, or the
            # response the app had begun ends here).

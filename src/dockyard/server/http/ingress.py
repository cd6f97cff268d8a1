"""HTTP routing to services: ``/svc/NAME/<path>`` on the API port, ``/NAME/<path>``
on the optional ingress port.

:class:`ServiceRouter` is a plain ASGI app. It finds the service's routable
replicas (``proxy.EndpointCache``), picks one (least outstanding requests, ties
round robin), and forwards the request with ``httpx.AsyncClient``, streaming both
bodies. A replica that refuses the connection is skipped for a moment and the
request goes to another one; after something was sent, only idempotent requests
whose body was not read yet are tried again. Errors of its own are JSON:
404 ``service_not_found``, 503 ``no_healthy_replica``, 502 ``upstream_error``.
No bearer token is needed: this is an ingress (docs/routing.md, docs/security.md).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from urllib.parse import quote

import httpx
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from dockyard.server.http.deps import ServerContext
from dockyard.server.http.proxy import DEFAULT_TTL_S, Endpoint, EndpointCache, ServiceRoute, pick
from dockyard.server.metrics import ServerMetrics
from dockyard.store.db import Database
from dockyard.store.errors import StoreUnavailable

API_PREFIX = "/svc"
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
#: Request headers the proxy sets itself (Host comes from the replica's address).
REPLACED_REQUEST = frozenset(
    {
        b"host",
        b"expect",
        b"x-request-id",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-prefix",
    }
)
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
MAX_ATTEMPTS = 3
#: A replica that refused a connection is passed over this long (unless all were).
EJECT_S = 1.0
MAX_REQUEST_ID = 200
UPSTREAM_TIMEOUT = httpx.Timeout(connect=3.0, read=300.0, write=300.0, pool=10.0)
UPSTREAM_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
#: On the API origin, proxied pages run sandboxed (an opaque origin), so a
#: service's scripts cannot read the dashboard's stored token.
SANDBOX_CSP = b"sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"
#: Upstream headers dropped on the API port: the server writes Date and Server itself,
#: and a service must not act on the dashboard's origin as a whole there: set or
#: clear its cookies, wipe its storage (where the browser keeps the API token),
#: pin it to HTTPS or move its connections elsewhere.
API_DROPPED = frozenset(
    {
        b"date",
        b"server",
        b"set-cookie",
        b"clear-site-data",
        b"strict-transport-security",
        b"alt-svc",
        # CORS grants are the dashboard origin's to give (it gives none): a service
        # answering "Access-Control-Allow-Origin: evil, -Credentials: true" would let
        # another site read what a browser fetches from this origin.
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
        b"access-control-allow-methods",
        b"access-control-allow-headers",
        b"access-control-expose-headers",
        b"access-control-max-age",
        b"access-control-allow-private-network",
    }
)
#: "Nothing reached the replica": safe to try another one for any method.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


class _Body:
    """The client's request body as an async iterator; remembers whether it was read."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.started = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def request_id(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The client's ``X-Request-Id`` when it is sane (visible ASCII, bounded), else a new one."""
    for key, value in headers:
        if key.lower() == b"x-request-id":
            if 0 < len(value) <= MAX_REQUEST_ID and all(0x21 <= c <= 0x7E for c in value):
                return value
            break
    return uuid.uuid4().hex.encode()


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    named: set[bytes] = set()
    for key, value in headers:
        if key.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return named


def end_to_end(
    headers: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes] = frozenset()
) -> list[tuple[bytes, bytes]]:
    """``headers`` without hop-by-hop ones (also those ``Connection`` names) and ``drop``."""
    items = list(headers)
    skip = HOP_BY_HOP | _connection_tokens(items) | drop
    return [(k.lower(), v) for k, v in items if k.lower() not in skip]


def forwarded_headers(scope: Scope, prefix: str, rid: bytes) -> list[tuple[bytes, bytes]]:
    """The request's end-to-end headers plus X-Request-Id and X-Forwarded-*."""
    raw: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
    host = next((v for k, v in raw if k == b"host"), b"")
    out = end_to_end(raw, REPLACED_REQUEST | {b"x-forwarded-for"})
    chain = [part.strip() for k, v in raw if k == b"x-forwarded-for" for part in v.split(b",")]
    client = scope.get("client")
    # uvicorn already took the client from the chain when the peer is a trusted
    # proxy (``forwarded_allow_ips``): then the chain is complete as it is.
    if client and (not chain or chain[-1] != client[0].encode()):
        chain.append(client[0].encode())
    if chain:
        out.append((b"x-forwarded-for", b", ".join(chain)))
    out.append((b"x-forwarded-proto", str(scope.get("scheme", "http")).encode()))
    if host:
        out.append((b"x-forwarded-host", host))
    out.append((b"x-forwarded-prefix", prefix.encode()))
    out.append((b"x-request-id", rid))
    return out


def has_body(scope: Scope) -> bool:
    for key, value in scope.get("headers", []):
        if key == b"transfer-encoding":
            return True
        if key == b"content-length":
            return value.strip() not in (b"", b"0")
    return False


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class ServiceRouter:
    """ASGI app routing ``<prefix>/NAME/<path>`` to a healthy replica of service NAME.

    One per HTTP listener (its client, cache and load counts belong to that
    listener's event loop). ``sandbox`` adds :data:`SANDBOX_CSP` to responses;
    ``drop_response`` names upstream headers the server writes itself.
    """

    def __init__(
        self,
        db: Database,
        metrics: ServerMetrics,
        prefix: str = API_PREFIX,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        sandbox: bool = True,
        drop_response: frozenset[bytes] = frozenset({b"date", b"server"}),
    ) -> None:
        self.prefix = prefix.rstrip("/")
        self.cache = EndpointCache(db, ttl_s)
        self.metrics = metrics
        self.sandbox = sandbox
        self.drop_response = drop_response
        self.outstanding: dict[Endpoint, int] = {}
        self.ejected: dict[Endpoint, float] = {}
        self._turn = 0
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # made on first use, inside the serving event loop
            self._client = httpx.AsyncClient(
                timeout=UPSTREAM_TIMEOUT, limits=UPSTREAM_LIMITS, follow_redirects=False
            )
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- ASGI ------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # served on its own (the ingress port)
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # WebSockets are not routed (yet)
            return
        start = time.perf_counter()
        rid = request_id(scope.get("headers", []))
        name, upstream_path = self._split(scope)
        route = None
        if name:
            try:
                route = await self.cache.get(name)
            except StoreUnavailable:
                await self._fail(
                    send, 503, "store_unavailable", "the store did not answer", name, rid
                )
                self._count("", 503, start)
                return
        if route is None:
            message = f"no service named {name!r}" if name else "no service named in the path"
            await self._fail(send, 404, "service_not_found", message, name, rid)
            self._count("", 404, start)
            return
        status = await self._forward(scope, receive, send, route, upstream_path, rid, start)
        self._count(route.name, status, start)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _split(self, scope: Scope) -> tuple[str, bytes]:
        """The service name and the upstream target (raw path and query)."""
        path = str(scope.get("path", ""))
        rest = path[len(self.prefix) :] if path.startswith(self.prefix + "/") else ""
        name, slash, tail = rest.lstrip("/").partition("/")
        raw = scope.get("raw_path") or path.encode()
        mounted = f"{self.prefix}/{name}".encode()
        if raw.startswith(mounted):
            target = raw[len(mounted) :]
        else:  # the name was percent-encoded in the raw path
            target = quote(slash + tail).encode()
        if not target.startswith(b"/"):
            target = b"/" + target
        query = scope.get("query_string", b"")
        return name, target + (b"?" + query if query else b"")

    def _count(self, service: str, status: int, start: float) -> None:
        self.metrics.proxy_requests.labels(service=service, status=status_class(status)).inc()
        if service:
            self.metrics.proxy_latency.labels(service=service).observe(time.perf_counter() - start)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: ServiceRoute,
        target: bytes,
        rid: bytes,
        start: float,
    ) -> int:
        method = str(scope.get("method", "GET"))
        prefix = f"{self.prefix}/{route.name}"
        headers = forwarded_headers(scope, prefix, rid)
        body = _Body(receive) if has_body(scope) else None
        tried: list[Endpoint] = []
        attempts = min(MAX_ATTEMPTS, len(route.endpoints))
        for attempt in range(attempts):
            endpoint = self._choose(route, tried)
            if endpoint is None:
                break
            if attempt:
                self.metrics.proxy_retries.labels(service=route.name).inc()
            tried.append(endpoint)
            request = self.client.build_request(
                method,
                httpx.URL(scheme="http", host=endpoint.host, port=endpoint.port, raw_path=target),
                headers=headers,
                content=body if body is not None else None,
            )
            self.outstanding[endpoint] = self.outstanding.get(endpoint, 0) + 1
            try:
                try:
                    response = await self.client.send(request, stream=True)
                except ClientGone:
                    return 499
                except httpx.HTTPError as exc:
                    self.metrics.proxy_upstream_errors.labels(service=route.name).inc()
                    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                        self.ejected[endpoint] = time.monotonic() + EJECT_S
                    unsent = isinstance(exc, NOT_SENT) and not (body and body.started)
                    replayable = method in IDEMPOTENT and not (body and body.started)
                    if unsent or replayable:
                        continue
                    await self._fail(
                        send, 502, "upstream_error", f"replica failed: {exc!r}", route.name, rid
                    )
                    return 502
                try:
                    await self._relay(send, receive, response, rid)
                except httpx.HTTPError:
                    self.metrics.proxy_upstream_errors.labels(service=route.name).inc()
                    raise
                finally:
                    await response.aclose()
                return response.status_code
            finally:
                self.outstanding[endpoint] -= 1
                if not self.outstanding[endpoint]:
                    del self.outstanding[endpoint]
        if not tried:
            await self._fail(
                send,
                503,
                "no_healthy_replica",
                f"service {route.name!r} has no healthy replica",
                route.name,
                rid,
            )
            return 503
        await self._fail(
            send,
            502,
            "upstream_error",
            f"no replica of {route.name!r} answered ({len(tried)} tried)",
            route.name,
            rid,
        )
        return 502

    def _choose(self, route: ServiceRoute, tried: list[Endpoint]) -> Endpoint | None:
        now = time.monotonic()
        for endpoint, until in list(self.ejected.items()):
            if until <= now:
                del self.ejected[endpoint]
        live = [e for e in route.endpoints if e not in self.ejected]
        self._turn += 1
        # Passed-over replicas are used again when no other one is left.
        return pick(live, self.outstanding, self._turn, tried) or pick(
            route.endpoints, self.outstanding, self._turn, tried
        )

    async def _relay(
        self, send: Send, receive: Receive, response: httpx.Response, rid: bytes
    ) -> None:
        headers = end_to_end(response.headers.raw, self.drop_response | {b"x-request-id"})
        headers.append((b"x-request-id", rid))
        if self.sandbox:
            headers.append((b"content-security-policy", SANDBOX_CSP))
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        # The request body was sent in full before the response came (HTTP/1.1), so
        # ``receive`` now only reports a disconnect; uvicorn then drops what we send,
        # so stop reading the replica (an endless stream would never end otherwise).
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            async for chunk in response.aiter_raw():  # an error here aborts the connection
                if gone.done():
                    return
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            gone.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _fail(
        self, send: Send, status: int, code: str, message: str, service: str, rid: bytes
    ) -> None:
        body = json.dumps({"error": code, "message": message, "service": service}).encode()
        start: Message = {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", rid),
            ],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})


def install(app: FastAPI, ctx: ServerContext) -> ServiceRouter:
    """Route ``/svc/NAME`` and ``/svc/NAME/<path>`` (any method) on the API app."""
    if ctx.metrics is None:
        ctx.metrics = ServerMetrics()
    router = ServiceRouter(ctx.db, ctx.metrics, API_PREFIX, drop_response=API_DROPPED)
    for path in (f"{API_PREFIX}/{{name}}", f"{API_PREFIX}/{{name}}/{{path:path}}"):
        app.router.add_route(path, router, include_in_schema=False)  # type: ignore[arg-type]
    app.router.on_shutdown.append(router.aclose)
    return router


def ingress_app(db: Database, metrics: ServerMetrics) -> ServiceRouter:
    """The app of the dedicated ingress port: ``/NAME/<path>`` only, responses untouched
    (its own origin; the server adds no Date/Server header there)."""
    return ServiceRouter(db, metrics, "", sandbox=False, drop_response=frozenset())

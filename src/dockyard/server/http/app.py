"""The HTTP app: the routers of every resource and the exception handlers. Every
route needs a bearer token but /healthz, the dashboard's files, /docs and
/openapi.json, and the ingress under /svc/ (docs/security.md; checked route by
route by tests/integration/test_authz_sweep.py)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection

from dockyard import __version__
from dockyard.core.errors import ValidationError
from dockyard.core.security import PolicyViolation
from dockyard.server.errors import ServerError
from dockyard.server.http.dashboard import install as install_dashboard
from dockyard.server.http.deps import ServerContext
from dockyard.server.http.docs import install as install_docs
from dockyard.server.http.guard import RequestGuard
from dockyard.server.http.ingress import install as install_ingress
from dockyard.server.http.routes.accounting import router as accounting_router
from dockyard.server.http.routes.builds import MAX_UPLOAD_BYTES
from dockyard.server.http.routes.builds import router as builds_router
from dockyard.server.http.routes.events import router as events_router
from dockyard.server.http.routes.exec import router as exec_router
from dockyard.server.http.routes.jobs import router as jobs_router
from dockyard.server.http.routes.join import router as join_router
from dockyard.server.http.routes.nodes import router as nodes_router
from dockyard.server.http.routes.queue import router as queue_router
from dockyard.server.http.routes.secrets import router as secrets_router
from dockyard.server.http.routes.services import router as services_router
from dockyard.server.http.routes.status import router as status_router
from dockyard.server.http.routes.tasks import router as tasks_router
from dockyard.server.http.routes.usage import router as usage_router
from dockyard.server.http.routes.users import router as users_router
from dockyard.server.http.schemas import ERROR_MEANINGS, ErrorOut, errors
from dockyard.store.errors import UNAVAILABLE_ERRORS, NotFound

log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body = ErrorOut(error=code, message=message, field=field).model_dump()
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(status_code=status, content=body, headers=headers)


def field_name(loc: list[Any]) -> str | None:
    """A pydantic error location as the core names fields: ``jobs[0].ports[1]``."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    return name or None


def no_nul_parameters(conn: HTTPConnection) -> None:
    """No query or path parameter may hold a NUL character: a 422 naming it (PostgreSQL
    cannot compare one; no name or id has one). Bodies: ``schemas.RequestBody``."""
    if conn.scope["type"] != "http":
        return
    for name, value in [*conn.path_params.items(), *conn.query_params.multi_items()]:
        if "\x00" in name or "\x00" in str(value):
            raise ValidationError(name.replace("\x00", "\\x00"), "must not contain NUL characters")


def create_app(ctx: ServerContext) -> FastAPI:
    app = FastAPI(
        title="dockyard",
        version=__version__,
        description="Cluster manager for containers. Authenticate with `Authorization: Bearer`.",
        responses=errors(401, 413, 422),  # any request; each route adds its own
        dependencies=[Depends(no_nul_parameters)],
        docs_url=None,  # /docs is served from local files (http/docs.py), no CDN
        redoc_url=None,
    )
    app.state.ctx = ctx
    # Innermost of the middlewares (added first): the security headers and the request
    # metrics apply to its refusals too.
    app.add_middleware(
        RequestGuard,
        max_body_bytes=ctx.max_body_bytes,
        route_limits={("POST", "/api/v1/builds"): MAX_UPLOAD_BYTES},
    )
    app.include_router(accounting_router)
    app.include_router(status_router)
    app.include_router(services_router)
    app.include_router(secrets_router)
    app.include_router(builds_router)
    app.include_router(join_router)
    app.include_router(exec_router)

    app.include_router(queue_router)
    install_dashboard(app, ctx)  # /, /ui, /metrics, /api/v1/summary, /api/v1/events/stream
    install_ingress(app, ctx)  # /svc/NAME/...: requests routed to services (docs/routing.md)
    install_docs(app)  # /docs: Swagger UI from this server's files
    for router in (
        users_router,
        jobs_router,
        tasks_router,
        usage_router,
        nodes_router,
        events_router,
    ):
        app.include_router(router)

    @app.exception_handler(PolicyViolation)
    def _policy(_: Request, exc: PolicyViolation) -> JSONResponse:
        body = ErrorOut(error="policy", message=exc.message, field=exc.field, rule=exc.rule)
        return JSONResponse(status_code=403, content=body.model_dump())

    @app.exception_handler(ValidationError)
    def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        return _error(422, "invalid", exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        loc = [p for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        return _error(422, "invalid", str(first.get("msg", "invalid request")), field_name(loc))

    @app.exception_handler(NotFound)
    def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    def _unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("store did not answer: %s", str(exc).splitlines()[0][:200])
        response = _error(503, "store_unavailable", "the store did not answer in time; retry")
        response.headers["Retry-After"] = "1"
        return response

    for unavailable in UNAVAILABLE_ERRORS:  # lock/statement timeouts, a lost connection
        app.add_exception_handler(unavailable, _unavailable)

    @app.exception_handler(ServerError)
    def _server_error(_: Request, exc: ServerError) -> JSONResponse:
        return _error(exc.status_code, exc.code, str(exc))

    @app.exception_handler(StarletteHTTPException)
    def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        code = codes.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_errors(generate())
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
    return app


#: Request bodies that carry a workload spec: the container policy may refuse them.
SPEC_BODIES = ("JobCreate", "JobBatch", "ServiceCreate", "TemplateCreate")


def document_errors(schema: dict[str, Any]) -> None:
    """Statuses that follow from what an operation takes, added to the document: a JSON
    body may be malformed (400); a workload spec may be refused by policy (403)."""
    ref = {"$ref": "#/components/schemas/ErrorOut"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            codes = [400]
            if str(body.get("schema", {}).get("$ref", "")).endswith(SPEC_BODIES):
                codes.append(403)
            for code in codes:
                operation["responses"].setdefault(
                    str(code),
                    {
                        "description": ERROR_MEANINGS[code],
                        "content": {"application/json": {"schema": ref}},
                    },
                )

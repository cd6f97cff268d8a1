"""The REST API under /api/v1 (FastAPI). Every route but /healthz needs a bearer token."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from dockyard import __version__
from dockyard.core.errors import ValidationError
from dockyard.core.quota import Quota
from dockyard.core.security import ContainerPolicy, PolicyViolation
from dockyard.core.specs import JobSpec
from dockyard.core.states import PLACED_STATES, TaskState
from dockyard.server.errors import Forbidden, ServerError
from dockyard.server.http.dashboard import install as install_dashboard
from dockyard.server.http.deps import AdminUser, CurrentUser, ServerContext
from dockyard.server.http.ingress import install as install_ingress
from dockyard.server.http.routes.accounting import router as accounting_router
from dockyard.server.http.routes.builds import router as builds_router
from dockyard.server.http.routes.exec import router as exec_router
from dockyard.server.http.routes.join import router as join_router
from dockyard.server.http.routes.queue import router as queue_router
from dockyard.server.http.routes.services import router as services_router
from dockyard.server.http.routes.status import router as status_router
from dockyard.server.http.schemas import (
    DrainRequest,
    ErrorOut,
    EventOut,
    JobBatch,
    JobBatchOut,
    JobCreate,
    LogLineOut,
    LogsOut,
    NodeOut,
    TaskDetailOut,
    TaskOut,
    TokenCreate,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
    UserWithTokenOut,
    WhoAmIOut,
)
from dockyard.server.http.stream import event_rows, public
from dockyard.server.state import auth
from dockyard.server.state import tasks as task_ops
from dockyard.server.state.events import EventKind, record
from dockyard.server.state.jobs import (
    find_task,
    insert_jobs,
    new_jobs,
    submit_job,
    visible_tasks,
)
from dockyard.server.state.nodes import allocations
from dockyard.server.state.policy import caller_policy, enforce
from dockyard.store.errors import NotFound
from dockyard.store.tables import Event, LogLine, Node, Task, User, Workload

FOLLOW_POLL_S = 0.1
#: After a task ends, how long a follower waits for log lines still in flight.
FOLLOW_DRAIN_S = 10.0


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body = ErrorOut(error=code, message=message, field=field).model_dump()
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(status_code=status, content=body, headers=headers)


def create_app(ctx: ServerContext) -> FastAPI:
    app = FastAPI(
        title="dockyard",
        version=__version__,
        description="Cluster manager for containers. Authenticate with `Authorization: Bearer`.",
        responses={401: {"model": ErrorOut}, 422: {"model": ErrorOut}},
    )
    app.state.ctx = ctx
    app.include_router(accounting_router)
    app.include_router(status_router)
    app.include_router(services_router)
    app.include_router(builds_router)
    app.include_router(join_router)
    app.include_router(exec_router)

    app.include_router(queue_router)
    install_dashboard(app, ctx)  # /, /ui, /metrics, /api/v1/summary, /api/v1/events/stream
    install_ingress(app, ctx)  # /svc/NAME/...: requests routed to services (docs/routing.md)

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
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        return _error(
            422, "invalid", str(first.get("msg", "invalid request")), ".".join(loc) or None
        )

    @app.exception_handler(NotFound)
    def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(ServerError)
    def _server_error(_: Request, exc: ServerError) -> JSONResponse:
        return _error(exc.status_code, exc.code, str(exc))

    @app.exception_handler(StarletteHTTPException)
    def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    def task_out(session: Session, task: Task) -> TaskOut:
        owner = session.get(User, task.owner_id)
        node = session.get(Node, task.node_id) if task.node_id else None
        return TaskOut.build(task, owner.name if owner else "?", node.name if node else None)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/api/v1/whoami", response_model=WhoAmIOut)
    def whoami(who: CurrentUser) -> WhoAmIOut:
        return WhoAmIOut(id=who.user_id, name=who.name, admin=who.is_admin)

    @app.post("/api/v1/jobs", response_model=TaskOut, status_code=201)
    def create_job(body: JobCreate, who: CurrentUser) -> TaskOut:
        spec = body.to_spec()
        with ctx.db.write() as session:
            policy = caller_policy(session, who, ctx.cluster_policy)
            spec = enforce(spec, policy)
            task = submit_job(
                session, who, spec, ctx.max_runtime_cap_s, policy.to_dict() if policy else None
            )
            out = task_out(session, task)
        ctx.wake_scheduler()
        return out

    @app.post("/api/v1/jobs/batch", response_model=JobBatchOut, status_code=201)
    def create_jobs(body: JobBatch, who: CurrentUser) -> JobBatchOut:
        """Submit up to 1,000 jobs in one transaction: all are stored or none (the first
        invalid one is named as ``jobs[i].field``)."""
        specs = []
        for index, job in enumerate(body.jobs):
            try:
                specs.append(job.to_spec())
            except ValidationError as exc:
                raise ValidationError(f"jobs[{index}].{exc.field}", exc.message) from None
        # Checked and built before the write transaction: only the inserts hold it.
        with ctx.db.read() as session:
            policy = caller_policy(session, who, ctx.cluster_policy)
        stored = policy.to_dict() if policy else None
        enforced = [enforce(spec, policy) for spec in specs]
        jobs = new_jobs(who, enforced, ctx.max_runtime_cap_s, stored)
        with ctx.db.write() as session:
            ids = insert_jobs(session, jobs)
        ctx.wake_scheduler()
        return JobBatchOut(ids=ids, count=len(ids))

    @app.get("/api/v1/tasks", response_model=list[TaskOut])
    def list_tasks(
        who: CurrentUser,
        response: Response,
        state: Annotated[list[TaskState] | None, Query()] = None,
        active: bool = False,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
        offset: Annotated[int, Query(ge=0)] = 0,
        order: Literal["newest", "oldest"] = "newest",
        q: Annotated[str | None, Query(max_length=64, description="name or id prefix")] = None,
        node: Annotated[str | None, Query(description="node id")] = None,
    ) -> list[TaskOut]:
        """Tasks you may see, newest (or oldest) first; ``X-Total-Count`` has the total."""
        query = select(Task).where(*visible_tasks(who))
        if state:
            query = query.where(Task.state.in_([s.value for s in state]))
        if active:
            query = query.where(Task.state.in_([s.value for s in TaskState if not s.terminal]))
        if q:
            query = query.where(
                or_(
                    Task.name.startswith(q, autoescape=True), Task.id.startswith(q, autoescape=True)
                )
            )
        if node:
            query = query.where(Task.node_id == node)
        keys = (Task.created_at, Task.id)
        ordered = query.order_by(*(k.desc() if order == "newest" else k.asc() for k in keys))
        with ctx.db.read() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery()))
            response.headers["X-Total-Count"] = str(total or 0)
            tasks = list(session.scalars(ordered.offset(offset).limit(limit)))
            users = {
                str(k): str(v)
                for k, v in session.execute(
                    select(User.id, User.name).where(User.id.in_({t.owner_id for t in tasks}))
                )
            }
            nodes = {
                str(k): str(v)
                for k, v in session.execute(
                    select(Node.id, Node.name).where(
                        Node.id.in_({t.node_id for t in tasks if t.node_id})
                    )
                )
            }
            return [
                TaskOut.build(t, users.get(t.owner_id, "?"), nodes.get(t.node_id or ""))
                for t in tasks
            ]

    @app.get("/api/v1/tasks/{ref}", response_model=TaskDetailOut)
    def get_task(ref: str, who: CurrentUser) -> TaskDetailOut:
        with ctx.db.read() as session:
            task = find_task(session, who, ref)
            workload = session.get(Workload, task.workload_id)
            spec = JobSpec.from_dict(workload.spec if workload else {})
            events = session.scalars(
                select(Event).where(Event.task_id == task.id).order_by(Event.id)
            )
            base = task_out(session, task)
            return TaskDetailOut(
                **base.model_dump(),
                command=list(spec.command),
                env=dict(spec.env),
                kill_grace_s=spec.kill_grace_s,
                restart=spec.restart.to_dict(),
                events=[EventOut.build(e) for e in events],
            )

    @app.post(
        "/api/v1/tasks/{ref}/kill", response_model=TaskOut, responses={409: {"model": ErrorOut}}
    )
    def kill(ref: str, who: CurrentUser) -> TaskOut:
        with ctx.db.write() as session:
            task = task_ops.kill(session, who, ref)
            out = task_out(session, task)
            node_id = task.node_id
        if node_id:
            ctx.push({node_id})
        return out

    def read_logs(session: Session, task_id: str, after: int, limit: int) -> list[LogLine]:
        return list(
            session.scalars(
                select(LogLine)
                .where(LogLine.task_id == task_id, LogLine.id > after)
                .order_by(LogLine.id)
                .limit(limit)
            )
        )

    def logs_complete(session: Session, task: Task) -> bool:
        if not TaskState(task.state).terminal:
            return False
        if task.log_lines_total is None:
            return True
        stored = session.scalar(select(func.count()).where(LogLine.task_id == task.id)) or 0
        return stored >= task.log_lines_total

    @app.get("/api/v1/tasks/{ref}/logs", response_model=LogsOut)
    def logs(
        ref: str,
        who: CurrentUser,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 5000,
        follow: bool = False,
    ) -> Any:
        with ctx.db.read() as session:
            task = find_task(session, who, ref)
            task_id = task.id
            if not follow:
                lines = read_logs(session, task_id, after, limit)
                done = logs_complete(session, task) and len(lines) < limit
                return LogsOut(
                    lines=[LogLineOut.model_validate(line, from_attributes=True) for line in lines],
                    next=lines[-1].id if lines else after,
                    done=done,
                )
        return StreamingResponse(_follow(task_id, after), media_type="application/x-ndjson")

    def _follow(task_id: str, after: int) -> Iterator[str]:
        cursor = after
        drain_deadline: float | None = None
        while True:
            with ctx.db.read() as session:
                lines = read_logs(session, task_id, cursor, 1000)
                task = session.get(Task, task_id)
                complete = task is None or logs_complete(session, task)
                ended = task is None or TaskState(task.state).terminal
            for line in lines:
                cursor = line.id
                yield LogLineOut.model_validate(line, from_attributes=True).model_dump_json() + "\n"
            if lines:
                continue
            if complete:
                break
            if ended:
                drain_deadline = drain_deadline or time.monotonic() + FOLLOW_DRAIN_S
                if time.monotonic() > drain_deadline:
                    break
            time.sleep(FOLLOW_POLL_S)
        with ctx.db.read() as session:
            task = session.get(Task, task_id)
            end = {"end": True, "state": task.state if task else "unknown"}
        yield json.dumps(end) + "\n"

    def node_outs(session: Session, nodes: list[Node]) -> list[NodeOut]:
        alloc = allocations(session)
        counts = {
            str(node_id): int(count)
            for node_id, count in session.execute(
                select(Task.node_id, func.count())
                .where(Task.state.in_([s.value for s in PLACED_STATES]))
                .group_by(Task.node_id)
            ).all()
        }
        held: dict[str, list[int]] = {}
        for node_id, indices in session.execute(
            select(Task.node_id, Task.gpu_indices).where(
                Task.state.in_([s.value for s in PLACED_STATES]),
                Task.node_id.in_([n.id for n in nodes]),
                Task.gpu_indices != "",
            )
        ).all():
            held.setdefault(str(node_id), []).extend(int(i) for i in indices.split(",") if i)
        return [
            NodeOut.build(n, alloc.get(n.id, (0, 0)), int(counts.get(n.id, 0)), held.get(n.id, []))
            for n in nodes
        ]

    def node_out(node_id: str) -> NodeOut:
        with ctx.db.read() as session:
            node = session.get(Node, node_id)
            if node is None:
                raise NotFound("node", node_id)
            return node_outs(session, [node])[0]

    def node_state_is(state: str) -> ColumnElement[bool]:
        if state == "draining":
            return and_(Node.state == "ready", Node.draining.is_(True))
        if state == "ready":
            return and_(Node.state == "ready", Node.draining.is_(False))
        return Node.state == state

    @app.get("/api/v1/nodes", response_model=list[NodeOut])
    def list_nodes(
        _: CurrentUser,
        response: Response,
        state: Annotated[
            list[str] | None, Query(description="ready, suspect, draining, down")
        ] = None,
        q: Annotated[str | None, Query(max_length=255, description="name or id prefix")] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    ) -> list[NodeOut]:
        """Nodes by name; all of them unless ``limit`` is given. ``X-Total-Count`` has the total."""
        query = select(Node)
        if state:
            query = query.where(or_(*(node_state_is(s) for s in state)))
        if q:
            query = query.where(
                or_(
                    Node.name.startswith(q, autoescape=True), Node.id.startswith(q, autoescape=True)
                )
            )
        page = query.order_by(Node.name, Node.id).offset(offset)
        if limit is not None:
            page = page.limit(limit)
        with ctx.db.read() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery()))
            response.headers["X-Total-Count"] = str(total or 0)
            return node_outs(session, list(session.scalars(page)))

    def find_node(session: Session, ref: str) -> Node:
        node = session.scalar(
            select(Node).where(or_(Node.id == ref, Node.name == ref)).order_by(Node.id != ref)
        )
        if node is None:
            raise NotFound("node", ref)
        return node

    @app.post(
        "/api/v1/nodes/{ref}/drain",
        response_model=NodeOut,
        responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}},
    )
    def drain(ref: str, body: DrainRequest, who: AdminUser) -> NodeOut:
        with ctx.db.write() as session:
            node = find_node(session, ref)
            node.draining = True
            node.drain_deadline = time.time() + body.deadline_s
            record(
                session,
                EventKind.NODE,
                "node_draining",
                f"drain by {who.name}; jobs stopped and moved after {body.deadline_s:g}s",
                node_id=node.id,
            )
            node_id = node.id
        ctx.wake_scheduler()
        return node_out(node_id)

    @app.post(
        "/api/v1/nodes/{ref}/undrain",
        response_model=NodeOut,
        responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}},
    )
    def undrain(ref: str, who: AdminUser) -> NodeOut:
        with ctx.db.write() as session:
            node = find_node(session, ref)
            if node.draining:
                node.draining = False
                node.drain_deadline = None
                record(
                    session,
                    EventKind.NODE,
                    "node_undrained",
                    f"undrain by {who.name}",
                    node_id=node.id,
                )
            node_id = node.id
        ctx.wake_scheduler()
        return node_out(node_id)

    @app.get("/api/v1/events", response_model=list[EventOut])
    def list_events(
        who: CurrentUser,
        after: Annotated[int, Query(ge=0)] = 0,
        before: Annotated[int | None, Query(ge=1, description="only ids below this")] = None,
        order: Literal["asc", "desc"] = "asc",
        limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
        task: str | None = None,
        node: str | None = None,
        kind: str | None = None,
    ) -> list[EventOut]:
        """Events you may see. Page forward with ``after``; the newest with ``order=desc``."""
        query = select(Event).where(Event.id > after)
        if before is not None:
            query = query.where(Event.id < before)
        if not who.is_admin:
            query = query.where(Event.owner_id == who.user_id)
        if task:
            query = query.where(Event.task_id == task)
        if node:
            query = query.where(Event.node_id == node)
        if kind:
            query = query.where(Event.kind == kind)
        query = query.order_by(Event.id.desc() if order == "desc" else Event.id).limit(limit)
        with ctx.db.read() as session:
            events = list(session.scalars(query))
            return [EventOut(**public(row)) for row in event_rows(session, events)]

    @app.get("/api/v1/users", response_model=list[UserOut])
    def list_users(_: AdminUser) -> list[UserOut]:
        with ctx.db.read() as session:
            return [UserOut.build(u) for u in session.scalars(select(User).order_by(User.name))]

    @app.post(
        "/api/v1/users",
        response_model=UserWithTokenOut,
        status_code=201,
        responses={409: {"model": ErrorOut}, 403: {"model": ErrorOut}},
    )
    def add_user(body: UserCreate, who: AdminUser) -> UserWithTokenOut:
        with ctx.db.write() as session:
            user = auth.create_user(session, body.name, body.admin)
            user.home = body.home
            token = auth.issue_token(session, user, f"created by {who.name}")
            return UserWithTokenOut(user=UserOut.build(user), token=token)

    @app.patch(
        "/api/v1/users/{name}",
        response_model=UserOut,
        responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}},
    )
    def update_user(name: str, body: UserUpdate, who: AdminUser) -> UserOut:
        with ctx.db.write() as session:
            user = session.scalar(select(User).where(User.name == name))
            if user is None:
                raise NotFound("user", name)
            if body.home is not None:
                if not body.home.startswith("/"):
                    raise ValidationError("home", "must be an absolute path")
                user.home = body.home
            if body.quota is not None:
                Quota.from_dict(body.quota)  # 422 naming the field when malformed
                user.quota = dict(body.quota)
            if body.policy is not None:
                try:  # refuse malformed policies early
                    ContainerPolicy.from_dict(body.policy)
                except (TypeError, AttributeError) as exc:
                    raise ValidationError("policy", f"malformed policy: {exc}") from None
                user.policy = dict(body.policy)
            if body.share is not None:
                user.share = body.share
            record(session, EventKind.USER, "user_updated", f"{name} updated by {who.name}")
            return UserOut.build(user)

    @app.post(
        "/api/v1/tokens",
        response_model=TokenOut,
        status_code=201,
        responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}},
    )
    def create_token(body: TokenCreate, who: CurrentUser) -> TokenOut:
        name = body.user or who.name
        if name != who.name and not who.is_admin:
            raise Forbidden("only admins create tokens for other users")
        with ctx.db.write() as session:
            user = session.scalar(select(User).where(User.name == name))
            if user is None:
                raise NotFound("user", name)
            token = auth.issue_token(session, user, body.description)
            return TokenOut(user=user.name, token=token)

    return app

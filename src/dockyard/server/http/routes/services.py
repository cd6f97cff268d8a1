"""Services, templates and instances: ``/api/v1/services``, ``/templates``, ``/instances``.

Services are owned like jobs (owners see their own, admins all). A live
service's name is unique in the cluster because it is the route
(``/svc/NAME/``). Templates are admin-registered services users launch
instances of (CTF-style), each with a lifetime and a per-user limit.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from collections.abc import Collection
from typing import Any, Literal, Protocol

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from dockyard.core.errors import ValidationError
from dockyard.core.networks import COMPONENT_LABEL, INSTANCE_LABEL
from dockyard.core.rollout import ready
from dockyard.core.secrets import FileKind
from dockyard.core.services import DEFAULT_LIFETIME_S, ServiceSpec
from dockyard.server.control.services import (
    create_service,
    find_service,
    remove_service,
    replica_view,
    update_service,
)
from dockyard.server.errors import Conflict
from dockyard.server.http.deps import AdminUser, CurrentUser, server_context
from dockyard.server.http.schemas import RequestBody, ServiceCreate, errors
from dockyard.server.state import secrets as secret_ops
from dockyard.server.state import services as service_ops
from dockyard.server.state import templates as template_ops
from dockyard.server.state.auth import Principal
from dockyard.server.state.events import EventKind, record
from dockyard.server.state.fit import check_fits
from dockyard.server.state.images import check_images, own_image
from dockyard.server.state.policy import caller_policy, enforce
from dockyard.server.state.services import ServiceView

router = APIRouter(tags=["services"])

MAX_INSTANCES_PER_USER = 100
MAX_LIFETIME_S = 30 * 86400.0
MAX_COMPONENTS = 8
#: ``-xxxxxx`` of an instance name.
_INSTANCE_SUFFIX = 7


class EndpointOut(BaseModel):
    container_port: int
    host_port: int
    address: str


class ReplicaOut(BaseModel):
    task_id: str
    version: int
    state: str
    health: str = Field(description="'' (no check), starting, healthy, unhealthy")
    ready: bool = Field(description="routable: running and healthy (or no check)")
    node: str | None
    endpoints: list[EndpointOut]


class ServiceOut(BaseModel):
    id: str
    name: str
    owner: str
    version: int
    replicas: int = Field(description="wanted")
    running: int
    ready: int
    image: str
    ports: list[int] = Field(description="container ports")
    health: dict[str, Any] | None
    update: dict[str, Any]
    labels: dict[str, str]
    rollout: dict[str, Any] = Field(description="status, from_version, to_version, message")
    created_at: float
    template: str = ""
    expires_at: float | None = None
    url: str = Field(description="where the router serves it")
    replicas_detail: list[ReplicaOut]
    spec: dict[str, Any] = Field(description="the service body that recreates it (for PUT)")
    change: Literal["created", "unchanged", "scaled", "rolling", "removed", ""] = ""


class ScaleRequest(RequestBody):
    replicas: int = Field(ge=0, le=1000)


class TemplateNetwork(RequestBody):
    egress: bool = Field(
        default=False,
        description="instances may reach out and the host's services (default: their "
        "network is internal: only the instance's own services answer)",
    )


class TemplateCreate(RequestBody):
    name: str = Field(max_length=48, description="instances are named NAME-xxxxxx")
    service: dict[str, Any] = Field(description="a service body (as for POST /services)")
    components: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        max_length=MAX_COMPONENTS,
        description="more services each instance runs with the main one (e.g. "
        "{db: {...service body...}}): launched, expired and removed together; "
        "named NAME-xxxxxx_KEY, each answers to KEY on the instance's network",
    )
    network: TemplateNetwork = Field(default_factory=TemplateNetwork)
    lifetime_s: float = Field(default=DEFAULT_LIFETIME_S, gt=0, le=MAX_LIFETIME_S)
    max_per_user: int = Field(default=1, ge=1, le=MAX_INSTANCES_PER_USER)
    description: str = Field(default="", max_length=200)


class TemplateOut(BaseModel):
    name: str
    image: str
    ports: list[int]
    lifetime_s: float
    max_per_user: int
    description: str
    created_at: float
    components: list[str] = Field(default_factory=list, description="its other services")
    egress: bool = False


def services_out(views: list[ServiceView], base_url: str, change: str = "") -> list[ServiceOut]:
    return [service_out(view, base_url, change) for view in views]


def service_out(view: ServiceView, base_url: str, change: str = "") -> ServiceOut:
    """The API object of a service (its active replicas, nodes and owner read already)."""
    workload = view.workload
    spec = ServiceSpec.from_dict(workload.spec)
    checked = spec.health is not None
    detail = []
    for replica in view.replicas:
        task, node = replica.task, replica.node
        detail.append(
            ReplicaOut(
                task_id=task.id,
                version=task.version,
                state=task.state,
                health=task.health,
                ready=ready(replica_view(task), checked),
                node=node.name if node else None,
                endpoints=[
                    EndpointOut(container_port=c, host_port=h, address=node.address)
                    for c, h in task.port_map or []
                    if node is not None and h
                ],
            )
        )
    return ServiceOut(
        id=workload.id,
        name=workload.name,
        owner=view.owner,
        version=workload.version,
        replicas=spec.replicas,
        running=sum(1 for r in view.replicas if r.task.state == "running"),
        ready=sum(1 for r in detail if r.ready),
        image=spec.task.image,
        ports=list(spec.ports),
        health=None if spec.health is None else spec.health.to_dict(),
        update=spec.update.to_dict(),
        labels=dict(spec.labels),
        rollout=dict(workload.rollout or {}),
        created_at=workload.created_at,
        template=workload.template,
        expires_at=workload.expires_at,
        url=f"{base_url.rstrip('/')}/svc/{workload.name}/",
        replicas_detail=detail,
        spec=service_body(spec),
        change=change,  # type: ignore[arg-type]
    )


def service_body(spec: ServiceSpec) -> dict[str, Any]:
    """The ``ServiceCreate`` body of a stored spec: what ``service update`` edits."""
    task = spec.task
    return {
        "name": task.name,
        "image": task.image,
        "command": list(task.command),
        "env": dict(task.env),
        "cpu": task.resources.cpu_millis / 1000,
        "memory": task.resources.memory_bytes,
        "kill_grace_s": task.kill_grace_s,
        "mounts": [m.to_dict() for m in task.mounts],
        **task.security.to_dict(),
        "priority": task.priority,
        "constraints": list(task.constraints),
        "gpus": task.gpus,
        "replicas": spec.replicas,
        "ports": list(spec.ports),
        "health": None if spec.health is None else spec.health.to_dict(),
        "update": spec.update.to_dict(),
        "labels": dict(spec.labels),
        "networks": [
            {"name": n.name, "internal": n.internal, "aliases": list(n.aliases)}
            for n in spec.networks
        ],
        "udp_ports": list(spec.udp_ports),
        "run_once": spec.run_once,
        **{
            kind.plural: [
                {k: v for k, v in f.to_dict().items() if k != "kind" and v is not None}
                for f in spec.files
                if f.kind is kind
            ]
            for kind in FileKind
        },
    }


def _checked_spec(
    session: Any,
    who: Principal,
    body: ServiceCreate,
    cluster: dict[str, Any],
    defined: Collection[tuple[str, str]] = (),
) -> tuple[ServiceSpec, dict[str, Any] | None]:
    """Validate the body and check it against the caller's container policy; its
    secrets and configs must be the caller's (or in ``defined``: (kind, name))."""
    spec = body.to_service_spec()
    secret_ops.check_refs(session, who.user_id, spec.files, defined)
    policy = caller_policy(session, who, cluster)
    task = dataclasses.replace(spec.task, image=own_image(session, who, spec.task.image))
    check_images(session, who, [("image", task.image)])
    task = enforce(task, policy)
    if not body.hold:  # a replica no registered node could ever run: refused (422)
        check_fits(session, task)
    return dataclasses.replace(spec, task=task), (policy.to_dict() if policy else None)


def _reserved_labels(body: ServiceCreate, current: dict[str, Any] | None = None) -> None:
    """The instance labels are the server's: a body may only keep those it has."""
    have = (current or {}).get("labels") or {}
    for label in (INSTANCE_LABEL, COMPONENT_LABEL):
        if body.labels.get(label) != have.get(label):
            raise ValidationError(f"labels.{label}", "is set by the server (template instances)")


class ServiceCheckOut(BaseModel):
    name: str
    ok: bool = Field(description="true: POST /api/v1/services would accept it")


@router.post("/api/v1/services/check", response_model=ServiceCheckOut, responses=errors(403))
def check(
    body: ServiceCreate,
    request: Request,
    who: CurrentUser,
    secret: list[str] = Query(  # noqa: B008
        default_factory=list, description="secrets the deploy will store first (exist)"
    ),
    config: list[str] = Query(  # noqa: B008
        default_factory=list, description="configs the deploy will store first (exist)"
    ),
) -> ServiceCheckOut:
    """Dry run: the checks creating (or updating) this service makes — its fields, your
    container policy, image namespaces, your secrets and configs — with the same
    errors; writes nothing."""
    ctx = server_context(request)
    _reserved_labels(body)
    defined = [("secret", s) for s in secret] + [("config", c) for c in config]
    with ctx.db.read() as session:
        _checked_spec(session, who, body, ctx.cluster_policy, defined)
    return ServiceCheckOut(name=body.name, ok=True)


@router.post(
    "/api/v1/services", response_model=ServiceOut, status_code=201, responses=errors(403, 409)
)
def create(body: ServiceCreate, request: Request, who: CurrentUser) -> ServiceOut:
    """Create a service; its replicas start as the controller places them."""
    ctx = server_context(request)
    _reserved_labels(body)
    with ctx.db.write() as session:
        spec, policy = _checked_spec(session, who, body, ctx.cluster_policy)
        workload = create_service(session, who, spec, policy)
        workload_id = workload.id
    # The answer is read after the commit: the write transaction (its row locks, and
    # PostgreSQL's idle-in-transaction limit) covers only the checks and the insert.
    with ctx.db.read() as session:
        view = service_ops.service_view_of(session, workload_id)
        return service_out(view, str(request.base_url), "created")


@router.get("/api/v1/services", response_model=list[ServiceOut])
def list_services(request: Request, who: CurrentUser) -> list[ServiceOut]:
    ctx = server_context(request)
    with ctx.db.read() as session:
        views = service_ops.service_views(session, service_ops.list_services(session, who))
        return services_out(views, str(request.base_url))


@router.get("/api/v1/services/{name}", response_model=ServiceOut, responses=errors(404))
def get_service(name: str, request: Request, who: CurrentUser) -> ServiceOut:
    ctx = server_context(request)
    with ctx.db.read() as session:
        view = service_ops.service_view(session, find_service(session, who, name))
        return service_out(view, str(request.base_url))


@router.put("/api/v1/services/{name}", response_model=ServiceOut, responses=errors(403, 404, 409))
def put_service(name: str, body: ServiceCreate, request: Request, who: CurrentUser) -> ServiceOut:
    """Replace the spec: changing only replicas/update scales; anything else rolls out."""
    if body.name != name:
        raise ValidationError("name", f"must match the service in the path ({name})")
    ctx = server_context(request)
    with ctx.db.write() as session:
        workload = find_service(session, who, name)
        _reserved_labels(body, workload.spec)
        spec, policy = _checked_spec(session, who, body, ctx.cluster_policy)
        template_ops.check_instance_replicas(session, who, workload, spec.replicas)
        change = update_service(session, workload, spec, policy)
        out = service_out(
            service_ops.service_view(session, workload), str(request.base_url), change
        )
    return out


@router.post("/api/v1/services/{name}/scale", response_model=ServiceOut, responses=errors(404))
def scale(name: str, body: ScaleRequest, request: Request, who: CurrentUser) -> ServiceOut:
    ctx = server_context(request)
    with ctx.db.write() as session:
        workload = find_service(session, who, name)
        template_ops.check_instance_replicas(session, who, workload, body.replicas)
        spec = ServiceSpec.from_dict(workload.spec)
        scaled = dataclasses.replace(spec, replicas=body.replicas)
        change = update_service(session, workload, scaled, workload.spec.get("policy"))
        out = service_out(
            service_ops.service_view(session, workload), str(request.base_url), change
        )
    return out


@router.delete("/api/v1/services/{name}", response_model=ServiceOut, responses=errors(404))
def delete_service(name: str, request: Request, who: CurrentUser) -> ServiceOut:
    """Remove the service: its replicas are stopped; the name is free again."""
    ctx = server_context(request)
    with ctx.db.write() as session:
        workload = find_service(session, who, name)
        touched: set[str] = set()
        for part in service_ops.instance_parts(session, workload):  # an instance: all
            touched |= remove_service(session, part)
        out = service_out(
            service_ops.service_view(session, workload), str(request.base_url), "removed"
        )
    ctx.push(touched)
    return out


# -- templates and instances ----------------------------------------------------
class _TemplateRow(Protocol):
    """What a template's API object reads of its row."""

    @property
    def name(self) -> str: ...
    @property
    def spec(self) -> dict[str, Any]: ...
    @property
    def lifetime_s(self) -> float: ...
    @property
    def max_per_user(self) -> int: ...
    @property
    def created_at(self) -> float: ...


def _template_out(t: _TemplateRow) -> TemplateOut:
    spec = ServiceSpec.from_dict(template_ops.main_spec(t.spec))
    return TemplateOut(
        name=t.name,
        image=spec.task.image,
        ports=list(spec.ports),
        lifetime_s=t.lifetime_s,
        max_per_user=t.max_per_user,
        description=str(t.spec.get("description", "")),
        created_at=t.created_at,
        components=sorted(t.spec.get("components") or {}),
        egress=template_ops.egress_allowed(t.spec),
    )


@router.post(
    "/api/v1/templates", response_model=TemplateOut, status_code=201, responses=errors(403, 409)
)
def create_template(body: TemplateCreate, request: Request, who: AdminUser) -> TemplateOut:
    """Register a template (admin). Its spec is checked now, with the admin's policy."""
    ctx = server_context(request)
    service = _template_body("service", body.service, body.name)
    parts: dict[str, ServiceCreate] = {}
    for key, raw in body.components.items():
        where = f"components.{key}"
        if not _COMPONENT_RE.match(key):
            raise ValidationError(where, "must be 1-16 letters, digits, _ or -")
        if len(body.name) + _INSTANCE_SUFFIX + 1 + len(key) > 63:
            raise ValidationError(where, "name and key too long for a service name (63)")
        parts[key] = _template_body(where, raw, f"{body.name}_{key}")
    with ctx.db.write() as session:
        spec, policy = _checked_spec(session, who, service, ctx.cluster_policy)
        components = {}
        for key, part in parts.items():
            part_spec, part_policy = _checked_spec(session, who, part, ctx.cluster_policy)
            components[key] = {**part_spec.to_dict(), "policy": part_policy}
        template = template_ops.create_template(
            session,
            body.name,
            {
                **spec.to_dict(),
                "policy": policy,
                "description": body.description,
                "components": components,
                "network": body.network.model_dump(),
            },
            body.lifetime_s,
            body.max_per_user,
            who.user_id,
        )
        record(
            session,
            EventKind.TASK,
            "template_created",
            f"template {body.name} registered",
            owner_id=who.user_id,
        )
        return _template_out(template)


_COMPONENT_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,15}$")


def _template_body(where: str, raw: dict[str, Any], name: str) -> ServiceCreate:
    try:
        body = ServiceCreate.model_validate({**raw, "name": name})
    except ValueError as exc:
        raise ValidationError(where, str(exc).splitlines()[0]) from None
    for key in ("secrets", "configs"):  # an instance is the launching user's
        if getattr(body, key):
            raise ValidationError(f"{where}.{key}", "a template cannot mount secrets or configs")
    return body


@router.get("/api/v1/templates", response_model=list[TemplateOut])
def list_templates(request: Request, who: CurrentUser) -> list[TemplateOut]:
    ctx = server_context(request)
    with ctx.db.read() as session:
        return [_template_out(t) for t in template_ops.list_templates(session)]


@router.delete("/api/v1/templates/{name}", response_model=TemplateOut, responses=errors(403, 404))
def delete_template(name: str, request: Request, who: AdminUser) -> TemplateOut:
    """Remove a template (admin); running instances live out their lifetime."""
    ctx = server_context(request)
    with ctx.db.write() as session:
        template = template_ops.find_template(session, name)
        out = _template_out(template)
        template_ops.delete_template(session, template)
        return out


@router.post(
    "/api/v1/templates/{name}/launch",
    response_model=ServiceOut,
    status_code=201,
    responses=errors(404, 409),
)
def launch(name: str, request: Request, response: Response, who: CurrentUser) -> ServiceOut:
    """Start an instance of the template, owned by the caller, expiring at its lifetime."""
    ctx = server_context(request)
    with ctx.db.write() as session:
        template = template_ops.find_template(session, name)
        mine = service_ops.count_instances(session, name, who.user_id)
        if mine >= template.max_per_user:
            raise Conflict(
                f"you have {mine} instance(s) of {name}; the limit is {template.max_per_user}",
                code="instance_limit",
            )
        instance = f"{name}-{secrets.token_hex(3)}"
        expires_at = time.time() + template.lifetime_s
        # Every service of the instance in this one transaction: all of them, or none.
        workloads = [
            create_service(session, who, spec, policy, template=name, expires_at=expires_at)
            for spec, policy in template_ops.instance_specs(name, template.spec, instance)
        ]
        out = service_out(
            service_ops.service_view(session, workloads[0]), str(request.base_url), "created"
        )
    response.headers["Location"] = f"/api/v1/services/{out.name}"
    return out


@router.get("/api/v1/instances", response_model=list[ServiceOut])
def instances(request: Request, who: CurrentUser) -> list[ServiceOut]:
    """Template instances you own (admins: all), newest first."""
    ctx = server_context(request)
    with ctx.db.read() as session:
        views = service_ops.service_views(session, service_ops.list_instances(session, who))
        return services_out(views, str(request.base_url))

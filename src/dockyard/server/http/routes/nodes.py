"""Nodes: list, show, drain and undrain (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from dockyard.server.http.deps import AdminUser, CurrentUser, ServerContext, server_context
from dockyard.server.http.schemas import INT64_MAX, DrainRequest, ErrorOut, NodeOut
from dockyard.server.state import nodes as node_ops
from dockyard.server.state import reads
from dockyard.server.state.auth import Principal
from dockyard.store.errors import NotFound

router = APIRouter(tags=["nodes"])


def node_out(view: reads.NodeView) -> NodeOut:
    out = NodeOut.build(view.node, view.allocated, view.tasks, view.gpus_held)
    return out.model_copy(update={"images": view.images})


def _node_out(ctx: ServerContext, node_id: str, who: Principal) -> NodeOut:
    with ctx.db.read() as session:
        view = reads.node_view(session, node_id, who)
        if view is None:
            raise NotFound("node", node_id)
        return node_out(view)


@router.get("/api/v1/nodes", response_model=list[NodeOut])
def list_nodes(
    request: Request,
    who: CurrentUser,
    response: Response,
    state: Annotated[list[str] | None, Query(description="ready, suspect, draining, down")] = None,
    q: Annotated[str | None, Query(max_length=255, description="name or id prefix")] = None,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> list[NodeOut]:
    """Nodes by name; all of them unless ``limit`` is given. ``X-Total-Count`` has the total."""
    with server_context(request).db.read() as session:
        total, views = reads.list_nodes(session, who, states=state, q=q, offset=offset, limit=limit)
        response.headers["X-Total-Count"] = str(total)
        return [node_out(v) for v in views]


@router.get("/api/v1/nodes/{ref}", response_model=NodeOut, responses={404: {"model": ErrorOut}})
def get_node(request: Request, ref: str, who: CurrentUser) -> NodeOut:
    """One node by id or name."""
    ctx = server_context(request)
    with ctx.db.read() as session:
        node_id = node_ops.find_node(session, ref).id
    return _node_out(ctx, node_id, who)


@router.post(
    "/api/v1/nodes/{ref}/drain",
    response_model=NodeOut,
    responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)
def drain(request: Request, ref: str, body: DrainRequest, who: AdminUser) -> NodeOut:
    ctx = server_context(request)
    with ctx.db.write() as session:
        node_id = node_ops.drain(session, ref, body.deadline_s, who.name).id
    ctx.wake_scheduler()
    return _node_out(ctx, node_id, who)


@router.post(
    "/api/v1/nodes/{ref}/undrain",
    response_model=NodeOut,
    responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)
def undrain(request: Request, ref: str, who: AdminUser) -> NodeOut:
    ctx = server_context(request)
    with ctx.db.write() as session:
        node_id = node_ops.undrain(session, ref, who.name).id
    ctx.wake_scheduler()
    return _node_out(ctx, node_id, who)

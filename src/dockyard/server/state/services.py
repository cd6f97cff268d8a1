"""Reading services: the live ones, their active replicas, nodes and owners."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.networks import COMPONENT_LABEL, INSTANCE_LABEL
from dockyard.core.states import ACTIVE_STATES
from dockyard.server.state.auth import Principal
from dockyard.server.state.batch import chunks
from dockyard.store.errors import NotFound
from dockyard.store.tables import Node, Task, User, Workload

#: ``Workload.kind`` of a service.
SERVICE = "service"


def live_services() -> Any:
    """The query of services not removed."""
    return select(Workload).where(Workload.kind == SERVICE, Workload.deleted_at.is_(None))


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """An active replica and the node it is placed on (None: not placed, or gone)."""

    task: Task
    node: Node | None


@dataclass(frozen=True, slots=True)
class ServiceView:
    """A service with its owner's name (the id when the user is gone) and its active
    replicas, oldest first."""

    workload: Workload
    owner: str
    replicas: list[ReplicaView]


def service_views(session: Session, workloads: list[Workload]) -> list[ServiceView]:
    """``workloads`` with their active replicas, nodes and owners, read in one query
    each (not per service)."""
    tasks: dict[str, list[Task]] = {}
    ids = [w.id for w in workloads]
    for chunk in chunks(ids):
        for task in session.scalars(
            select(Task)
            .where(
                Task.workload_id.in_(chunk),
                Task.state.in_([s.value for s in ACTIVE_STATES]),
            )
            .order_by(Task.created_at)
        ):
            tasks.setdefault(task.workload_id, []).append(task)
    node_ids = {t.node_id for group in tasks.values() for t in group if t.node_id}
    nodes = {n.id: n for n in session.scalars(select(Node).where(Node.id.in_(node_ids)))}
    owner_ids = {w.owner_id for w in workloads}
    owners = {u.id: u.name for u in session.scalars(select(User).where(User.id.in_(owner_ids)))}
    return [
        ServiceView(
            w,
            owners.get(w.owner_id, w.owner_id),
            [ReplicaView(t, nodes.get(t.node_id or "")) for t in tasks.get(w.id, [])],
        )
        for w in workloads
    ]


def service_view(session: Session, workload: Workload) -> ServiceView:
    return service_views(session, [workload])[0]


def service_view_of(session: Session, workload_id: str) -> ServiceView:
    """The view of a service by its workload id (one just written, read again)."""
    workload = session.get(Workload, workload_id)
    if workload is None:
        raise NotFound("service", workload_id)
    return service_view(session, workload)


def _visible(query: Any, principal: Principal) -> Any:
    if principal.is_admin:
        return query
    return query.where(Workload.owner_id == principal.user_id)


def list_services(session: Session, principal: Principal) -> list[Workload]:
    """The live services ``principal`` may see (admins: all), by name."""
    query = _visible(live_services().order_by(Workload.name), principal)
    return list(session.scalars(query))


def list_instances(session: Session, principal: Principal) -> list[Workload]:
    """The live template instances ``principal`` owns (admins: all), newest first."""
    query = live_services().where(Workload.template != "").order_by(Workload.created_at.desc())
    return list(session.scalars(_visible(query, principal)))


def count_instances(session: Session, template: str, owner_id: str) -> int:
    """How many live instances of ``template`` the user owns (an instance of a
    multi-container template counts once: its main service)."""
    specs = session.scalars(
        select(Workload.spec).where(
            Workload.kind == SERVICE,
            Workload.deleted_at.is_(None),
            Workload.template == template,
            Workload.owner_id == owner_id,
        )
    )
    return sum(1 for spec in specs if not (spec.get("labels") or {}).get(COMPONENT_LABEL))


def instance_parts(session: Session, workload: Workload) -> list[Workload]:
    """Every live service of the template instance ``workload`` is part of (itself
    first); just ``[workload]`` for a service that is not an instance."""
    if not workload.template:
        return [workload]
    instance = (workload.spec.get("labels") or {}).get(INSTANCE_LABEL)
    if not instance:
        return [workload]
    others = session.scalars(
        live_services().where(
            Workload.template == workload.template,
            Workload.owner_id == workload.owner_id,
            Workload.id != workload.id,
        )
    )
    return [workload] + [
        w for w in others if (w.spec.get("labels") or {}).get(INSTANCE_LABEL) == instance
    ]

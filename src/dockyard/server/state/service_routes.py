"""What the service router reads: a live service and its running replicas, one query."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.exc import SQLAlchemyError

from dockyard.core.states import TaskState
from dockyard.store.db import Database
from dockyard.store.errors import StoreUnavailable
from dockyard.store.tables import Node, Task, Workload

SERVICE_KIND = "service"


@dataclass(frozen=True, slots=True)
class ReplicaRow:
    """One running replica as the store has it (a task row joined with its node)."""

    task_id: str
    state: str
    desired_state: str
    health: str
    port_map: list[Any]
    node_state: str | None
    node_address: str | None


@dataclass(frozen=True, slots=True)
class ServiceRows:
    workload_id: str
    spec: Mapping[str, Any]
    replicas: list[ReplicaRow]


def service_rows(db: Database, name: str) -> ServiceRows | None:
    """The live service ``name`` with its running replicas, or None if there is none.

    One query: the service by ``(kind, name)`` (index ``ix_workloads_kind_name``),
    outer-joined with its *running* tasks (index on ``tasks.workload_id``) and their
    nodes (primary key). Ended tasks are not read, however many a service had.
    Raises :class:`StoreUnavailable` when the store does not answer.
    """
    query = (
        select(
            Workload.id,
            Workload.spec,
            Task.id,
            Task.state,
            Task.desired_state,
            Task.health,
            Task.port_map,
            Node.state,
            Node.address,
        )
        .select_from(Workload)
        .outerjoin(
            Task, and_(Task.workload_id == Workload.id, Task.state == TaskState.RUNNING.value)
        )
        .outerjoin(Node, Node.id == Task.node_id)
        .where(
            Workload.kind == SERVICE_KIND,
            Workload.name == name,
            Workload.deleted_at.is_(None),
        )
        .order_by(Workload.created_at.desc(), Workload.id)
    )
    try:
        with db.read() as session:
            rows = session.execute(query).all()
    except SQLAlchemyError as exc:
        raise StoreUnavailable(str(exc)) from exc
    if not rows:
        return None
    # Names are unique among live services (the API enforces it); should two
    # exist anyway, the newest wins.
    workload_id = str(rows[0][0])
    replicas = [
        ReplicaRow(
            task_id=str(task_id),
            state=str(state),
            desired_state=str(desired),
            health=str(health or ""),
            port_map=list(port_map or []),
            node_state=None if node_state is None else str(node_state),
            node_address=None if address is None else str(address),
        )
        for wid, _, task_id, state, desired, health, port_map, node_state, address in rows
        if wid == workload_id and task_id is not None
    ]
    return ServiceRows(workload_id, rows[0][1] or {}, replicas)

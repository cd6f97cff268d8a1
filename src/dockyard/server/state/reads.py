"""What the API lists and shows: tasks, nodes, events and users, read in few queries.

Each function returns ORM rows (or plain values) with the names the responses
need already looked up in bulk, so a route makes no query of its own.
"""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    Row,
    Text,
    and_,
    func,
    literal,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.orm import Session

from dockyard.core.image_ref import namespace
from dockyard.core.specs import JobSpec
from dockyard.core.states import PLACED_STATES, TaskState
from dockyard.server.state.auth import Principal
from dockyard.server.state.images import user_namespaces, visible_images
from dockyard.server.state.jobs import task_ref_query, visible_tasks
from dockyard.server.state.nodes import allocations
from dockyard.server.state.workload_specs import workload_specs
from dockyard.store.errors import NotFound
from dockyard.store.tables import Event, Node, Task, User


def cursor(value: int) -> ColumnElement[int]:
    """An id cursor bound as a BIGINT: ``events.id`` and ``log_lines.id`` are INTEGER
    (32 bits on PostgreSQL, which refuses a larger parameter cast to their type), and
    the API takes any cursor up to 2^63-1; compared as BIGINT, one past every id
    simply matches nothing (``id > cursor``) or everything (``id < cursor``)."""
    return literal(value, BigInteger)


#: Every column of the tasks table, for reads that need rows rather than ORM objects.
_TASK_COLUMNS = tuple(Task.__table__.columns)
#: The same, with the JSON columns read as their text (``_list_rows`` decodes them).
_TASK_COLUMNS_RAW = tuple(
    type_coerce(c, Text).label(c.key) if isinstance(c.type, JSON) else c for c in _TASK_COLUMNS
)
_JSON_AT = tuple(i for i, c in enumerate(_TASK_COLUMNS) if isinstance(c.type, JSON))
#: A row of the task columns, by attribute (as a ``Row`` of them is).
TaskRow = namedtuple("TaskRow", [c.key for c in _TASK_COLUMNS])  # type: ignore[misc]


def _list_rows(rows: Sequence[Any]) -> list[Any]:
    """Rows of ``_TASK_COLUMNS_RAW`` as ``TaskRow``s with their JSON decoded, each
    distinct text once (a page of 10,000 holds a handful: ``[]``, ``null``, a job's
    constraints); the values are fresh per row, never shared. A driver that decodes
    JSON itself (psycopg) gives values, kept as they are."""
    decoded: dict[str, Any] = {}

    def value(raw: Any) -> Any:
        if not isinstance(raw, str):
            return raw
        if raw not in decoded:
            decoded[raw] = json.loads(raw)
        found = decoded[raw]
        if isinstance(found, list) and all(isinstance(x, str | int | float) for x in found):
            return list(found)  # a copy: strings and numbers are not shared state
        return found if found is None or isinstance(found, str | int | float) else json.loads(raw)

    out = []
    for row in rows:
        values = list(row)
        for i in _JSON_AT:
            values[i] = value(values[i])
        out.append(TaskRow._make(values))
    return out


@dataclass(frozen=True, slots=True)
class TaskView:
    """A task (an ORM object, or a row of the task columns) with its owner's and
    node's names."""

    task: Task | Row[Any]
    owner: str
    node: str | None
    #: The node's address ("" when unplaced): where the task's published ports listen.
    address: str = ""


@dataclass(frozen=True, slots=True)
class TaskDetail:
    view: TaskView
    spec: JobSpec
    events: list[Row[Any]]


@dataclass(frozen=True, slots=True)
class NodeView:
    """A node with what is placed on it: (CPU millis, memory bytes), task count, GPUs held."""

    node: Node
    allocated: tuple[int, int]
    tasks: int
    gpus_held: list[int]
    #: The node's images the viewer may see (others' private builds left out).
    images: list[str]


def task_view(session: Session, task: Task) -> TaskView:
    """The task with its owner's and node's names, in one query."""
    query = (  # an unplaced task's node_id is NULL: "nodes.id IS NULL" joins no node
        select(User.name, Node.name, Node.address)
        .select_from(User)
        .outerjoin(Node, Node.id == task.node_id)
        .where(User.id == task.owner_id)
    )
    row = session.execute(query).first()
    if row is None:  # no owner row (the foreign key makes that rare): names apart
        node = session.get(Node, task.node_id) if task.node_id else None
        return TaskView(task, "?", node.name if node else None, node.address if node else "")
    owner, node_name, address = row
    return TaskView(task, str(owner), node_name, str(address or ""))


def list_tasks(
    session: Session,
    who: Principal,
    *,
    states: Sequence[TaskState] | None = None,
    active: bool = False,
    q: str | None = None,
    node: str | None = None,
    order: Literal["newest", "oldest"] = "newest",
    offset: int = 0,
    limit: int = 500,
    owner: str | None = None,
) -> tuple[int, list[TaskView]]:
    """Tasks ``who`` may see, one page, and how many match in all."""
    query = select(Task).where(*visible_tasks(who))
    if states:
        query = query.where(Task.state.in_([s.value for s in states]))
    if active:
        query = query.where(Task.state.in_([s.value for s in TaskState if not s.terminal]))
    if q:
        query = query.where(
            or_(Task.name.startswith(q, autoescape=True), Task.id.startswith(q, autoescape=True))
        )
    if node:  # a node id, or a node name
        by_name = select(Node.id).where(Node.name == node)
        query = query.where(or_(Task.node_id == node, Task.node_id.in_(by_name)))
    if owner:
        query = query.where(Task.owner_id.in_(select(User.id).where(User.name == owner)))
    keys = (Task.created_at, Task.id)
    ordered = query.order_by(*(k.desc() if order == "newest" else k.asc() for k in keys))
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    # Plain rows of the task columns on the session's connection, not ORM objects: a
    # page of 10,000 built as identity-mapped instances cost more than the query.
    page = ordered.with_only_columns(*_TASK_COLUMNS_RAW).offset(offset).limit(limit)
    tasks = _list_rows(list(session.connection().execute(page)))
    users = {
        str(k): str(v)
        for k, v in session.execute(
            select(User.id, User.name).where(User.id.in_({t.owner_id for t in tasks}))
        )
    }
    nodes: dict[str, tuple[str | None, str]] = {
        str(k): (str(name), str(address or ""))
        for k, name, address in session.execute(
            select(Node.id, Node.name, Node.address).where(
                Node.id.in_({t.node_id for t in tasks if t.node_id})
            )
        )
    }
    views = []
    for t in tasks:
        name, address = nodes.get(t.node_id or "", (None, ""))
        views.append(TaskView(t, users.get(t.owner_id, "?"), name, address))
    return int(total or 0), views


def task_detail(session: Session, who: Principal, ref: str) -> TaskDetail:
    """A task by id or name (as :func:`find_task`) with its names, spec and events, in
    two queries: the task's row with its owner's and node's names, then its events
    (a job's parsed spec is cached, ``workload_specs``; a service's is read)."""
    row: Any = None  # a Row of the task columns and the three names
    for by_id in (True, False):
        query = task_ref_query(who, ref, by_id=by_id)
        row = session.execute(
            query.with_only_columns(
                *_TASK_COLUMNS,
                User.name.label("owner_name"),
                Node.name.label("node_name"),
                Node.address.label("node_address"),
                maintain_column_froms=False,
            )
            .select_from(Task)
            .outerjoin(User, User.id == Task.owner_id)
            .outerjoin(Node, Node.id == Task.node_id)
        ).first()
        if row is not None:
            break
    if row is None:
        raise NotFound("task", ref)
    found = workload_specs(session, [row.workload_id]).get(row.workload_id)
    spec = found.spec if found is not None else JobSpec.from_dict({})
    events = list(
        session.execute(
            select(*Event.__table__.columns).where(Event.task_id == row.id).order_by(Event.id)
        )
    )
    view = TaskView(row, row.owner_name or "?", row.node_name, row.node_address or "")
    return TaskDetail(view, spec, events)


def node_views(session: Session, nodes: list[Node], who: Principal) -> list[NodeView]:
    alloc = allocations(session)
    placed = [s.value for s in PLACED_STATES]
    counts = {
        str(node_id): int(count)
        for node_id, count in session.execute(
            select(Task.node_id, func.count()).where(Task.state.in_(placed)).group_by(Task.node_id)
        ).all()
    }
    held: dict[str, list[int]] = {}
    for node_id, indices in session.execute(
        select(Task.node_id, Task.gpu_indices).where(
            Task.state.in_(placed),
            Task.node_id.in_([n.id for n in nodes]),
            Task.gpu_indices != "",
        )
    ).all():
        held.setdefault(str(node_id), []).extend(int(i) for i in indices.split(",") if i)
    listed = {str(i) for n in nodes for i in (n.images or [])}
    users = set() if who.is_admin else user_namespaces(session, _namespaces(listed))
    return [
        NodeView(
            n,
            alloc.get(n.id, (0, 0)),
            int(counts.get(n.id, 0)),
            held.get(n.id, []),
            visible_images([str(i) for i in (n.images or [])], who, users),
        )
        for n in nodes
    ]


def _namespaces(images: set[str]) -> set[str]:
    return {ns for i in images if (ns := namespace(i)) is not None}


def node_view(session: Session, node_id: str, who: Principal) -> NodeView | None:
    node = session.get(Node, node_id)
    return node_views(session, [node], who)[0] if node is not None else None


def _node_state_is(state: str) -> ColumnElement[bool]:
    if state == "draining":
        return and_(Node.state == "ready", Node.draining.is_(True))
    if state == "ready":
        return and_(Node.state == "ready", Node.draining.is_(False))
    return Node.state == state


def list_nodes(
    session: Session,
    who: Principal,
    *,
    states: Sequence[str] | None = None,
    q: str | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> tuple[int, list[NodeView]]:
    """Nodes by name, one page (all from ``offset`` without a limit), and the total."""
    query = select(Node)
    if states:
        query = query.where(or_(*(_node_state_is(s) for s in states)))
    if q:
        query = query.where(
            or_(Node.name.startswith(q, autoescape=True), Node.id.startswith(q, autoescape=True))
        )
    page = query.order_by(Node.name, Node.id).offset(offset)
    if limit is not None:
        page = page.limit(limit)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    return int(total or 0), node_views(session, list(session.scalars(page)), who)


def list_events(
    session: Session,
    who: Principal,
    *,
    after: int = 0,
    before: int | None = None,
    order: Literal["asc", "desc"] = "asc",
    limit: int = 500,
    task: str | None = None,
    node: str | None = None,
    kind: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> list[Event]:
    """Events ``who`` may see (admins: all; users: their own work's); ``since`` and
    ``until`` bound their time (epoch seconds, inclusive)."""
    query = select(Event).where(Event.id > cursor(after))
    if since is not None:
        query = query.where(Event.at >= since)
    if until is not None:
        query = query.where(Event.at <= until)
    if before is not None:
        query = query.where(Event.id < cursor(before))
    if not who.is_admin:
        query = query.where(Event.owner_id == who.user_id)
    if task:
        query = query.where(Event.task_id == task)
    if node:
        query = query.where(Event.node_id == node)
    if kind:
        query = query.where(Event.kind == kind)
    query = query.order_by(Event.id.desc() if order == "desc" else Event.id).limit(limit)
    return list(session.scalars(query))


def event_rows(session: Session, events: Sequence[Event]) -> list[dict[str, Any]]:
    """Events as API dicts, with the names and current state of what they concern."""
    task_ids = {e.task_id for e in events if e.task_id}
    node_ids = {e.node_id for e in events if e.node_id}
    tasks: dict[str, tuple[str, str]] = {}
    nodes: dict[str, str] = {}
    if task_ids:
        tasks = {
            str(i): (str(n), str(s))
            for i, n, s in session.execute(
                select(Task.id, Task.name, Task.state).where(Task.id.in_(task_ids))
            ).all()
        }
    if node_ids:
        nodes = {
            str(i): str(n)
            for i, n in session.execute(
                select(Node.id, Node.name).where(Node.id.in_(node_ids))
            ).all()
        }
    rows = []
    for e in events:
        task = tasks.get(e.task_id or "")
        rows.append(
            {
                "id": e.id,
                "at": e.at,
                "kind": e.kind,
                "reason": e.reason,
                "message": e.message,
                "task_id": e.task_id,
                "node_id": e.node_id,
                "task_name": task[0] if task else None,
                "task_state": task[1] if task else None,
                "node_name": nodes.get(e.node_id or ""),
                "owner_id": e.owner_id,
            }
        )
    return rows


def events_after(session: Session, after: int, limit: int) -> list[dict[str, Any]]:
    """The event rows after id ``after``, oldest first (the live stream's poll)."""
    events = list(
        session.scalars(
            select(Event).where(Event.id > cursor(after)).order_by(Event.id).limit(limit)
        )
    )
    return event_rows(session, events)


def last_event_id(session: Session) -> int:
    return int(session.scalar(select(func.max(Event.id))) or 0)

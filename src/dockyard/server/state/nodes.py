"""Nodes: registration, heartbeats, liveness and each node's desired task set."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from dockyard.core.checkpoints import checkpoint_name
from dockyard.core.gpus import GPU_UUID
from dockyard.core.security import Mount
from dockyard.core.specs import CHECKPOINT_DIR
from dockyard.core.states import PLACED_STATES, DesiredState, Reason
from dockyard.protocol.messages import Desired, DesiredEntry, Heartbeat, Hello, TaskTemplate
from dockyard.server.state.accounting import charge_all
from dockyard.server.state.batch import chunks, rows_by_id
from dockyard.server.state.events import EventKind, record
from dockyard.server.state.jobs import placed_tasks
from dockyard.server.state.lifecycle import follow_up
from dockyard.server.state.tasks import mark_lost
from dockyard.server.state.workload_specs import workload_specs
from dockyard.store.errors import NotFound
from dockyard.store.tables import LogLine, Node, Task


class NodeState:
    READY = "ready"
    DOWN = "down"


#: Images kept per node for image-locality placement.
MAX_IMAGES = 2000


def register(session: Session, hello: Hello) -> Node:
    """Create or refresh a node from an agent's ``hello``."""
    now = time.time()
    node_id = hello.node_id
    node = session.get(Node, node_id)
    if node is None:
        node = Node(
            id=node_id,
            name=(hello.name or node_id)[:255],
            registered_at=now,
            generation=1,
            state=NodeState.READY,
            cpu_millis=hello.cpu_millis,
            memory_bytes=hello.memory_bytes,
            last_heartbeat_at=now,
        )
        session.add(node)
        record(
            session, EventKind.NODE, "node_registered", f"node {node.name} joined", node_id=node_id
        )
    elif node.state != NodeState.READY:
        record(session, EventKind.NODE, "node_ready", f"node {node.name} is back", node_id=node_id)
    node.name = (hello.name or node.name)[:255]
    node.address = (hello.address or "127.0.0.1")[:255]
    node.driver = (hello.driver or "docker")[:32]
    node.agent_version = hello.version[:32]
    node.labels = dict(hello.labels)
    if hello.images:
        node.images = [i[:255] for i in hello.images[:MAX_IMAGES]]
    node.cpu_millis = hello.cpu_millis
    node.memory_bytes = hello.memory_bytes
    node.gpus = ",".join(str(i) for i in hello.gpus)[:512]
    node.gpu_uuids = _gpu_uuids(hello.gpu_uuids, node.gpus)
    node.state = NodeState.READY
    node.last_heartbeat_at = now
    session.flush()
    return node


def _gpu_uuids(reported: Mapping[str, str], gpus: str) -> dict[str, str]:
    """The reported UUIDs of the node's GPUs, by index; anything else is dropped."""
    indices = set(gpus.split(",")) - {""}
    return {
        index: uuid for index, uuid in reported.items() if index in indices and GPU_UUID.match(uuid)
    }


def heartbeat(session: Session, node: Node, beat: Heartbeat) -> bool:
    """Record a heartbeat; returns True when the node came back from ``down``."""
    node.last_heartbeat_at = time.time()
    node.used_cpu_percent = float(beat.cpu_percent)
    node.used_memory_bytes = beat.memory_bytes
    if node.state != NodeState.READY:
        node.state = NodeState.READY
        record(session, EventKind.NODE, "node_ready", f"node {node.name} is back", node_id=node.id)
        return True
    return False


def mark_down(session: Session, node: Node, silence_s: float) -> list[Task]:
    """Declare a node down and its placed tasks lost (fenced: the agent will kill them)."""
    node.state = NodeState.DOWN
    record(
        session,
        EventKind.NODE,
        "node_down",
        f"no heartbeat from {node.name} for {silence_s:.1f}s",
        node_id=node.id,
    )
    lost = placed_tasks(session, node.id)
    workload_specs(session, {t.workload_id for t in lost})  # one read for the follow-ups
    with session.no_autoflush:  # flushed once, not before each follow-up's queries
        mark_lost(session, lost, f"node {node.name} stopped sending heartbeats")
        for task in lost:
            follow_up(session, task)
    charge_all(session, lost)  # the lost runs are charged once, up to node-down
    node.generation += 1
    return lost


def desired_for(session: Session, node: Node) -> Desired:
    """The ``desired`` message of a node: every task it should hold now."""
    return desired_sets(session, [node])[node.id]


#: What a desired entry reads of a task: plain columns, no ORM objects (the gateway
#: builds these sets for every node where a task starts or ends).
_DESIRED_COLUMNS = (
    Task.id,
    Task.node_id,
    Task.workload_id,
    Task.owner_id,
    Task.image,
    Task.cpu_millis,
    Task.memory_bytes,
    Task.gpu_indices,
    Task.ports,
    Task.port_map,
    Task.desired_state,
    Task.started_at,
    Task.array_index,
    Task.container_id,
    Task.attempt,
    Task.stop_reason,
    Task.stop_grace_s,
)


def desired_sets(session: Session, nodes: list[Node]) -> dict[str, Desired]:
    """Desired messages for many nodes, from three queries in all (not three per
    node): the gateway rebuilds the sets of every node where a task ended."""
    by_node: dict[str, list[Any]] = {n.id: [] for n in nodes}
    placed = [s.value for s in PLACED_STATES]
    for chunk in chunks(list(by_node)):
        for task in session.execute(
            select(*_DESIRED_COLUMNS).where(Task.node_id.in_(chunk), Task.state.in_(placed))
        ):
            by_node[str(task.node_id)].append(task)
    tasks = [t for held in by_node.values() for t in held]
    offsets: dict[tuple[str, str], int] = {}
    templates: dict[str, TaskTemplate] = {}
    signals: dict[str, str] = {}  # checkpointing jobs' signals, by workload
    # Only a task that ran can have shipped lines (the agent resumes after them).
    ran = [t.id for t in tasks if t.started_at is not None]
    for chunk in chunks(ran):
        for task_id, stream, seq in session.execute(
            select(LogLine.task_id, LogLine.stream, func.max(LogLine.seq))
            .where(LogLine.task_id.in_(chunk))
            .group_by(LogLine.task_id, LogLine.stream)
        ).all():
            offsets[(task_id, stream)] = int(seq)
    if tasks:
        specs = workload_specs(session, {t.workload_id for t in tasks})
        templates = {workload_id: s.template for workload_id, s in specs.items()}
        signals = {
            w: s.spec.checkpoint_signal for w, s in specs.items() if s.spec.checkpoint_signal
        }
    return {
        node.id: Desired(
            node.id,
            node.generation,
            tuple(_entry(task, templates, offsets, signals) for task in by_node[node.id]),
        )
        for node in nodes
    }


def _entry(
    task: Any,
    templates: dict[str, TaskTemplate],
    offsets: dict[tuple[str, str], int],
    signals: dict[str, str],
) -> DesiredEntry:
    template = _with_index(templates[task.workload_id], task.array_index)
    signal = signals.get(task.workload_id, "")
    if signal:
        template = with_checkpoint(template, task.workload_id, task.array_index, task.attempt)
    if task.desired_state == DesiredState.STOP and task.stop_grace_s is not None:
        template = replace(template, kill_grace_s=float(task.stop_grace_s))  # stop --time
    return DesiredEntry(
        task_id=task.id,
        image=task.image,
        cpu_millis=task.cpu_millis,
        memory_bytes=task.memory_bytes,
        template=template,
        workload_id=task.workload_id,
        owner=task.owner_id,
        gpus=tuple(int(g) for g in (task.gpu_indices or "").split(",") if g),
        ports=tuple(int(p) for p in (task.ports or "").split(",") if p),
        port_map=tuple((int(c), int(h)) for c, h in task.port_map or ()),
        desired=task.desired_state,
        log_offsets={
            "stdout": offsets.get((task.id, "stdout"), 0),
            "stderr": offsets.get((task.id, "stderr"), 0),
        },
        container_id=task.container_id or "",
        stop_signal=signal
        if task.desired_state == DesiredState.STOP and task.stop_reason in CHECKPOINT_STOPS
        else "",
    )


def _with_index(template: TaskTemplate, index: int | None) -> TaskTemplate:
    """A job array element (or gang member) sees its index in its environment."""
    if index is None:
        return template
    return replace(template, env={**template.env, "DOCKYARD_ARRAY_INDEX": str(index)})


#: The stops a checkpointing job gets its signal before (not its owner's kill, not
#: its max runtime: those attempts are not requeued).
CHECKPOINT_STOPS = frozenset({Reason.PREEMPTED, Reason.NODE_DRAINED})


def checkpoint_volume(workload_id: str, array_index: int | None) -> str:
    """The checkpoint volume's name (namespaced per owner by the driver): one per
    job, one per element of an array or rank of a gang, so each one's attempts share it."""
    return checkpoint_name(workload_id, array_index)


def with_checkpoint(
    template: TaskTemplate, workload_id: str, array_index: int | None, attempt: int
) -> TaskTemplate:
    """A checkpointing job's attempt: its volume at CHECKPOINT_DIR, the variable naming
    it, and DOCKYARD_RESUME=1 from its second attempt on."""
    env = {**template.env, "DOCKYARD_CHECKPOINT_DIR": CHECKPOINT_DIR}
    if attempt > 1:
        env["DOCKYARD_RESUME"] = "1"
    volume = Mount(checkpoint_volume(workload_id, array_index), CHECKPOINT_DIR, kind="volume")
    return replace(template, env=env, mounts=(*template.mounts, volume.to_dict()))


def allocations(session: Session) -> dict[str, tuple[int, int]]:
    """CPU millis and memory bytes held by placed tasks, per node."""
    rows = session.execute(
        select(Task.node_id, func.sum(Task.cpu_millis), func.sum(Task.memory_bytes))
        .where(Task.state.in_([s.value for s in PLACED_STATES]), Task.node_id.is_not(None))
        .group_by(Task.node_id)
    ).all()
    return {str(node_id): (int(cpu or 0), int(mem or 0)) for node_id, cpu, mem in rows}


def find_node(session: Session, ref: str) -> Node:
    """A node by id or name (the id wins)."""
    node = session.scalar(
        select(Node).where(or_(Node.id == ref, Node.name == ref)).order_by(Node.id != ref)
    )
    if node is None:
        raise NotFound("node", ref)
    return node


def drain(session: Session, ref: str, deadline_s: float, by: str) -> Node:
    """Start draining a node: nothing new lands; its jobs move after ``deadline_s``."""
    node = find_node(session, ref)
    node.draining = True
    node.drain_deadline = time.time() + deadline_s
    record(
        session,
        EventKind.NODE,
        "node_draining",
        f"drain by {by}; jobs stopped and moved after {deadline_s:g}s",
        node_id=node.id,
    )
    return node


def undrain(session: Session, ref: str, by: str) -> Node:
    node = find_node(session, ref)
    if node.draining:
        node.draining = False
        node.drain_deadline = None
        record(session, EventKind.NODE, "node_undrained", f"undrain by {by}", node_id=node.id)
    return node


def get_node(session: Session, node_id: str) -> Node | None:
    return session.get(Node, node_id)


def nodes_by_id(session: Session, node_ids: list[str]) -> list[Node]:
    return rows_by_id(session, Node, node_ids)


def ready_nodes(session: Session) -> list[tuple[str, str]]:
    """``(id, name)`` of the nodes that take new work (ready, not draining)."""
    rows = session.execute(
        select(Node.id, Node.name).where(Node.state == NodeState.READY, Node.draining.is_(False))
    ).all()
    return [(str(i), str(name)) for i, name in rows]


def store_images(session: Session, images: Mapping[str, list[str]]) -> None:
    """The images nodes reported (heartbeats carry them when they change)."""
    if images:
        session.execute(update(Node), [{"id": n, "images": i} for n, i in images.items()])


_NODES = cast(Table, Node.__table__)
_BEAT = (
    update(_NODES)
    .where(_NODES.c.id == bindparam("nid"))
    .values(
        last_heartbeat_at=bindparam("at"),
        used_cpu_percent=bindparam("cpu"),
        used_memory_bytes=bindparam("mem"),
    )
)


def store_heartbeats(session: Session, beats: Mapping[str, tuple[float, float, int]]) -> None:
    """Buffered heartbeats, ``node id -> (at, cpu %, memory bytes)``, in one Core
    executemany (no ORM bookkeeping)."""
    if beats:
        session.execute(
            _BEAT,
            [
                {"nid": node_id, "at": at, "cpu": cpu, "mem": mem}
                for node_id, (at, cpu, mem) in beats.items()
            ],
        )


def generations(session: Session) -> dict[str, tuple[int, str]]:
    """Every node's ``(generation, state)``."""
    return {
        str(node_id): (int(generation), str(state))
        for node_id, generation, state in session.execute(
            select(Node.id, Node.generation, Node.state)
        ).all()
    }


def orphaned(session: Session, node_ids: list[str], silent_since: float) -> list[str]:
    """Which of these node ids no live agent uses: ``down`` with no heartbeat stored
    since ``silent_since`` (wall clock, this server's). A node id the store never had
    is not one: several clusters may share a Docker Engine (a developer's two, the
    test suite's), and only the cluster that registered a node may judge it."""
    if not node_ids:
        return []
    rows = session.execute(
        select(Node.id, Node.state, Node.last_heartbeat_at).where(Node.id.in_(node_ids))
    ).all()
    known = {str(i): (str(state), float(beat)) for i, state, beat in rows}
    return [
        n
        for n in node_ids
        if n in known and known[n][0] == NodeState.DOWN and known[n][1] < silent_since
    ]

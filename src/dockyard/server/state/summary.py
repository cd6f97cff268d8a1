"""The cluster summary the dashboard shows: tasks, queue, nodes, capacity, allocation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dockyard.core.states import PLACED_STATES, DesiredState, TaskState
from dockyard.server.state.auth import Principal
from dockyard.server.state.jobs import visible_tasks
from dockyard.store.tables import Event, Node, Task, User


@dataclass(frozen=True, slots=True)
class Summary:
    #: Visible tasks per state (states with none left out).
    tasks: dict[str, int]
    #: Visible pending tasks that want to run.
    queue_depth: int
    #: Nodes per shown state ("draining": ready and draining), in the order first seen.
    nodes: dict[str, int]
    node_count: int
    #: Capacity of live (not down) nodes.
    cpu_millis: int
    memory_bytes: int
    #: Held by placed tasks.
    allocated_cpu_millis: int
    allocated_memory_bytes: int
    #: The newest event ``who`` may see (0: none).
    last_event_id: int
    #: Admins only: per user name, ``{"tasks": {state: n}, "cpu": cores,
    #: "memory_bytes": n}``, resources held by placed tasks.
    by_owner: dict[str, dict[str, Any]]


def summary(session: Session, who: Principal) -> Summary:
    placed = [s.value for s in PLACED_STATES]
    tasks = {
        str(state): int(count)
        for state, count in session.execute(
            select(Task.state, func.count()).where(*visible_tasks(who)).group_by(Task.state)
        ).all()
    }
    queue = session.scalar(
        select(func.count()).where(
            Task.state == TaskState.PENDING,
            Task.desired_state == DesiredState.RUN,
            *visible_tasks(who),
        )
    )
    nodes: dict[str, int] = {}
    cpu = mem = total = 0
    for state, draining, cpu_millis, memory in session.execute(
        select(Node.state, Node.draining, Node.cpu_millis, Node.memory_bytes)
    ).all():
        shown = "draining" if draining and state == "ready" else str(state)
        nodes[shown] = nodes.get(shown, 0) + 1
        total += 1
        if state != "down":
            cpu += int(cpu_millis)
            mem += int(memory)
    alloc_cpu, alloc_mem = session.execute(
        select(func.sum(Task.cpu_millis), func.sum(Task.memory_bytes)).where(Task.state.in_(placed))
    ).one()
    last_query = select(func.max(Event.id))
    if not who.is_admin:
        last_query = last_query.where(Event.owner_id == who.user_id)
    last = session.scalar(last_query)
    by_owner: dict[str, dict[str, Any]] = {}
    if who.is_admin:
        names = {u.id: u.name for u in session.scalars(select(User))}
        for name in names.values():
            by_owner[name] = {"tasks": {}, "cpu": 0.0, "memory_bytes": 0}
        for owner_id, state, count, cpu_sum, mem_sum in session.execute(
            select(
                Task.owner_id,
                Task.state,
                func.count(),
                func.sum(Task.cpu_millis),
                func.sum(Task.memory_bytes),
            ).group_by(Task.owner_id, Task.state)
        ).all():
            entry = by_owner.setdefault(
                names.get(owner_id, "?"), {"tasks": {}, "cpu": 0.0, "memory_bytes": 0}
            )
            entry["tasks"][str(state)] = int(count)
            if state in placed:
                entry["cpu"] += int(cpu_sum or 0) / 1000
                entry["memory_bytes"] += int(mem_sum or 0)
    return Summary(
        tasks=tasks,
        queue_depth=int(queue or 0),
        nodes=nodes,
        node_count=total,
        cpu_millis=cpu,
        memory_bytes=mem,
        allocated_cpu_millis=int(alloc_cpu or 0),
        allocated_memory_bytes=int(alloc_mem or 0),
        last_event_id=int(last or 0),
        by_owner=by_owner,
    )

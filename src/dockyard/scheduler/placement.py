"""Placement: a pure function from a snapshot of nodes and pending tasks to a plan.

The scheduler loop reads a snapshot from the store, calls :func:`place`, and
writes the plan back. Nothing here touches a database, a socket or a clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from dockyard.core.resources import Resources


@dataclass(frozen=True, slots=True)
class NodeView:
    """What placement needs to know about one node."""

    node_id: str
    name: str
    state: str  # "ready", "down", ...
    capacity: Resources
    allocated: Resources

    @property
    def free(self) -> Resources:
        return self.capacity - self.allocated


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """A pending task asking for resources."""

    task_id: str
    resources: Resources


@dataclass(frozen=True, slots=True)
class Plan:
    """Assignments (task id -> node id) and, for each task left pending, why."""

    assignments: dict[str, str] = field(default_factory=dict)
    pending_reasons: dict[str, str] = field(default_factory=dict)


def _misfit(node: NodeView, free: Resources, need: Resources) -> str | None:
    if node.state != "ready":
        return f"node {node.state}"
    if need.cpu_millis > free.cpu_millis:
        return "insufficient cpu"
    if need.memory_bytes > free.memory_bytes:
        return "insufficient memory"
    return None


def explain(misfits: Counter[str], total: int) -> str:
    """``0/3 nodes fit: 2 insufficient memory, 1 node down``."""
    if total == 0:
        return "no nodes registered"
    detail = ", ".join(f"{count} {why}" for why, count in misfits.most_common())
    return f"0/{total} nodes fit: {detail}"


def place(tasks: Sequence[TaskRequest], nodes: Sequence[NodeView]) -> Plan:
    """Place ``tasks`` in order on ``nodes``, bin-packing by remaining capacity.

    Each task goes to the feasible node with the least free resources after
    placement (binpack); tasks that fit nowhere keep a reason.
    """
    free = {node.node_id: node.free for node in nodes}
    plan = Plan()
    for task in tasks:
        best: NodeView | None = None
        best_score = 0.0
        misfits: Counter[str] = Counter()
        for node in nodes:
            why = _misfit(node, free[node.node_id], task.resources)
            if why is not None:
                misfits[why] += 1
                continue
            left = free[node.node_id] - task.resources
            cap = node.capacity
            score = left.cpu_millis / max(cap.cpu_millis, 1) + left.memory_bytes / max(
                cap.memory_bytes, 1
            )
            if best is None or score < best_score:
                best, best_score = node, score
        if best is None:
            plan.pending_reasons[task.task_id] = explain(misfits, len(nodes))
            continue
        plan.assignments[task.task_id] = best.node_id
        free[best.node_id] = free[best.node_id] - task.resources
    return plan

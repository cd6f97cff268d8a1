"""Preemption: which running work to evict so that more important queued work fits. Pure.

A queued task may evict a placed one only if it **outranks** it
(:func:`outranks`): a strictly higher priority, or the same priority with its
owner's fair-share factor above the victim owner's by more than a margin
(``factor_margin``; the owner is under its share relative to the victim's). Both
are strict orders on (priority, factor), so the "may evict" relation has no
cycles: within one decision no task can, directly or through others, evict work
that may evict it (a property test checks this). Across decisions the margin and
each job's ``min_runtime_s`` (a victim is never evicted before it ran that long)
keep two users from trading places back and forth.

For each blocked task in queue order (at most ``max_preemptors`` a pass), the
node chosen is the one where the fewest, lowest-ranked victims free enough room
(CPU, memory, GPUs); room already being freed (victims stopping) is counted
first, so work is not evicted twice for one task. Victims taken once are not
offered again in the same decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dockyard.scheduler.constraints import Constraint, first_violated
from dockyard.scheduler.placement import NodeView

DEFAULT_FACTOR_MARGIN = 0.2
DEFAULT_MAX_PREEMPTORS = 8


@dataclass(frozen=True, slots=True)
class Contender:
    """A queued task that did not fit."""

    task_id: str
    owner_id: str
    priority: int
    cpu_millis: int
    memory_bytes: int
    gpus: int = 0
    constraints: tuple[Constraint, ...] = ()


@dataclass(frozen=True, slots=True)
class Victim:
    """A placed task that could be evicted."""

    task_id: str
    node_id: str
    owner_id: str
    priority: int
    cpu_millis: int
    memory_bytes: int
    gpus: int = 0
    started_at: float | None = None
    min_runtime_s: float = 0.0
    #: Already asked to stop (its room is being freed).
    stopping: bool = False


@dataclass(frozen=True, slots=True)
class Eviction:
    victim: str
    node_id: str
    gainer: str
    #: "priority 10 > 0" or "fair share 0.91 > 0.40 (priority 0)".
    why: str


def outranks(
    a_priority: int,
    a_factor: float,
    b_priority: int,
    b_factor: float,
    margin: float = DEFAULT_FACTOR_MARGIN,
) -> str | None:
    """Why work ranked (a_priority, a_factor) may evict (b_priority, b_factor), or None."""
    if a_priority > b_priority:
        return f"priority {a_priority} > {b_priority}"
    if a_priority == b_priority and a_factor > b_factor + margin:
        return f"fair share {a_factor:.2f} > {b_factor:.2f} (priority {a_priority})"
    return None


def plan_evictions(
    blocked: Sequence[Contender],
    nodes: Sequence[NodeView],
    victims: Sequence[Victim],
    factors: Mapping[str, float],
    now: float,
    *,
    margin: float = DEFAULT_FACTOR_MARGIN,
    max_preemptors: int = DEFAULT_MAX_PREEMPTORS,
) -> list[Eviction]:
    """Evictions that let the first ``blocked`` tasks (in queue order) fit."""
    ready = {n.node_id: n for n in nodes if n.state == "ready"}
    free: dict[str, list[int]] = {
        n.node_id: [
            n.capacity.cpu_millis - n.allocated.cpu_millis,
            n.capacity.memory_bytes - n.allocated.memory_bytes,
            len(n.gpus) - len(n.gpus_used),
        ]
        for n in ready.values()
    }
    on_node: dict[str, list[Victim]] = {}
    for v in victims:
        if v.node_id in ready:
            on_node.setdefault(v.node_id, []).append(v)
            if v.stopping:  # its room is on its way
                room = free[v.node_id]
                room[0] += v.cpu_millis
                room[1] += v.memory_bytes
                room[2] += v.gpus
    taken: set[str] = set()
    out: list[Eviction] = []
    tried = 0
    for task in blocked:
        if tried >= max_preemptors:
            break
        tried += 1
        mine = factors.get(task.owner_id, 1.0)
        best: tuple[tuple[int, int, float], str, list[tuple[Victim, str]]] | None = None
        for node_id, node in ready.items():
            if first_violated(task.constraints, node.labels) is not None:
                continue
            if (
                task.cpu_millis > node.capacity.cpu_millis
                or task.memory_bytes > node.capacity.memory_bytes
                or task.gpus > len(node.gpus)
            ):
                continue
            cpu, mem, gpus = free[node_id]
            if cpu >= task.cpu_millis and mem >= task.memory_bytes and gpus >= task.gpus:
                best = ((0, 0, 0.0), node_id, [])
                break  # nothing new to evict: it starts once the stopping work ends
            eligible: list[tuple[Victim, str]] = []
            for v in on_node.get(node_id, ()):
                if v.stopping or v.task_id in taken:
                    continue
                if v.started_at is None or now - v.started_at < v.min_runtime_s:
                    continue  # its --min-runtime guard (or not started yet)
                why = outranks(
                    task.priority, mine, v.priority, factors.get(v.owner_id, 1.0), margin
                )
                if why is not None:
                    eligible.append((v, why))
            # Lowest-ranked first, then the most recently started (least work lost).
            eligible.sort(
                key=lambda vw: (
                    vw[0].priority,
                    factors.get(vw[0].owner_id, 1.0),
                    -(vw[0].started_at or 0.0),
                )
            )
            chosen: list[tuple[Victim, str]] = []
            for v, why in eligible:
                if cpu >= task.cpu_millis and mem >= task.memory_bytes and gpus >= task.gpus:
                    break
                chosen.append((v, why))
                cpu, mem, gpus = cpu + v.cpu_millis, mem + v.memory_bytes, gpus + v.gpus
            if not (cpu >= task.cpu_millis and mem >= task.memory_bytes and gpus >= task.gpus):
                continue
            cost = (
                len(chosen),
                max((v.priority for v, _ in chosen), default=0),
                sum(v.cpu_millis for v, _ in chosen) / 1000,
            )
            if best is None or cost < best[0]:
                best = (cost, node_id, chosen)
        if best is None:
            continue
        _, node_id, chosen = best
        for v, why in chosen:
            taken.add(v.task_id)
            out.append(Eviction(v.task_id, node_id, task.task_id, why))
        # The victims' room goes to the task: none of it is free for the next one.
        room = free[node_id]
        for v, _ in chosen:
            room[0] += v.cpu_millis
            room[1] += v.memory_bytes
            room[2] += v.gpus
        room[0] -= task.cpu_millis
        room[1] -= task.memory_bytes
        room[2] -= task.gpus
    return out

"""Queue ETAs: when each queued task is expected to start. Pure.

The estimate replays the queue in order on a timeline per node, as backfill
reservations do (:mod:`dockyard.scheduler.placement`): what runs holds its
resources until its declared end (``started + max_runtime_s``; without one it
never ends), and each queued task, in queue order, is given the earliest time
some ready node has room for it for its whole declared runtime (without one:
for ever), then holds that room. Since declared max runtimes are enforced, a
task's estimate is an upper bound as long as nothing of higher priority
arrives, no node fails and the queue order holds; work usually ends earlier.

``inf`` means not before work without a declared end finishes (or never, when no
node could ever hold the task). Only the first ``horizon`` tasks are estimated.
Host ports are not modelled, and gang members are estimated one by one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dockyard.scheduler.constraints import first_violated
from dockyard.scheduler.placement import NodeView, Running, TaskRequest

INF = math.inf
DEFAULT_HORIZON = 1000


@dataclass(slots=True)
class _Hold:
    start: float
    end: float
    cpu: int
    mem: int
    gpus: int


def _fits(holds: list[_Hold], node: NodeView, task: TaskRequest, start: float, end: float) -> bool:
    """Room for ``task`` on ``node`` at every instant of [start, end)."""
    cpu = node.capacity.cpu_millis - task.resources.cpu_millis
    mem = node.capacity.memory_bytes - task.resources.memory_bytes
    gpus = len(node.gpus) - task.gpus
    # Usage only rises where a hold starts: check at ``start`` and at those points.
    points = [start, *(h.start for h in holds if start < h.start < end)]
    for x in points:
        used_cpu = used_mem = used_gpus = 0
        for h in holds:
            if h.start <= x < h.end:
                used_cpu += h.cpu
                used_mem += h.mem
                used_gpus += h.gpus
        if used_cpu > cpu or used_mem > mem or used_gpus > gpus:
            return False
    return True


def estimate_starts(
    tasks: Sequence[TaskRequest],
    nodes: Sequence[NodeView],
    running: Sequence[Running],
    now: float,
    horizon: int = DEFAULT_HORIZON,
) -> dict[str, float]:
    """Estimated start (``now`` or later, ``inf``) of the first ``horizon`` of
    ``tasks`` (in queue order), by task id."""
    ready = [n for n in nodes if n.state == "ready"]
    holds: dict[str, list[_Hold]] = {n.node_id: [] for n in ready}
    known: dict[str, list[int]] = {n.node_id: [0, 0, 0] for n in ready}
    for r in running:
        if r.node_id in holds:
            end = INF if r.ends_at is None else max(now, r.ends_at)
            res = r.resources
            holds[r.node_id].append(_Hold(now, end, res.cpu_millis, res.memory_bytes, r.gpus))
            known[r.node_id][0] += res.cpu_millis
            known[r.node_id][1] += res.memory_bytes
            known[r.node_id][2] += r.gpus
    for n in ready:  # what the snapshot holds that ``running`` does not explain never ends
        cpu = n.allocated.cpu_millis - known[n.node_id][0]
        mem = n.allocated.memory_bytes - known[n.node_id][1]
        gpus = len(n.gpus_used) - known[n.node_id][2]
        if cpu > 0 or mem > 0 or gpus > 0:
            holds[n.node_id].append(_Hold(now, INF, max(cpu, 0), max(mem, 0), max(gpus, 0)))
    out: dict[str, float] = {}
    for task in tasks[:horizon]:
        duration = INF if task.max_runtime_s is None else max(task.max_runtime_s, 0.0)
        best: tuple[float, NodeView] | None = None
        for node in ready:
            if (
                not task.resources.fits_in(node.capacity)
                or task.gpus > len(node.gpus)
                or first_violated(task.constraints, node.labels) is not None
            ):
                continue
            mine = holds[node.node_id]
            times = sorted({now, *(h.end for h in mine if now < h.end < INF)})
            for t in times:
                if best is not None and t >= best[0]:
                    break
                if _fits(mine, node, task, t, t + duration):
                    best = (t, node)
                    break
            if best is not None and best[0] <= now:
                break  # nothing starts earlier than now
        if best is None:
            out[task.task_id] = INF
            continue
        start, node = best
        res = task.resources
        holds[node.node_id].append(
            _Hold(start, start + duration, res.cpu_millis, res.memory_bytes, task.gpus)
        )
        out[task.task_id] = start
    return out

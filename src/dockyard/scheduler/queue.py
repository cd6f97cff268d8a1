"""Queue order: priority, then fair share, then submit time. Pure.

Tasks of a higher priority always come first. Among tasks of one priority the
next task belongs to the user with the least decayed usage per share (that is,
the highest fair-share factor, see :mod:`dockyard.scheduler.fairshare`), oldest
task first. Each task the order hands out is charged to its owner in advance
(its billing rate times its declared max runtime, or a default), so two users
with backlogs interleave in proportion to their shares instead of one draining
the queue before the other starts.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dockyard.scheduler.fairshare import DEFAULT_SHARE, FairShareConfig, factor

DEFAULT_CONFIG = FairShareConfig()


@dataclass(frozen=True, slots=True)
class QueuedTask:
    task_id: str
    owner_id: str
    priority: int
    submitted_at: float
    cpu_millis: int = 0
    memory_bytes: int = 0
    gpus: int = 0
    max_runtime_s: float | None = None


@dataclass(frozen=True, slots=True)
class Ranked:
    """A task's place in the queue and its owner's fair-share factor at that place."""

    task: QueuedTask
    position: int
    factor: float


def order(
    tasks: Sequence[QueuedTask],
    usage: Mapping[str, float],
    shares: Mapping[str, float],
    config: FairShareConfig = DEFAULT_CONFIG,
) -> list[Ranked]:
    """Every task in ``tasks``, in the order the scheduler should try them."""
    by_priority: dict[int, dict[str, list[QueuedTask]]] = {}
    for task in tasks:
        by_priority.setdefault(task.priority, {}).setdefault(task.owner_id, []).append(task)
    owners = set(shares) | set(usage) | {t.owner_id for t in tasks}
    share = {o: float(shares.get(o, DEFAULT_SHARE)) for o in owners}
    charged = {o: max(0.0, float(usage.get(o, 0.0))) for o in owners}
    total_shares = sum(share.values())
    total_usage = sum(charged.values())

    def ratio(owner: str) -> float:
        if share[owner] <= 0:
            return float("inf")
        return charged[owner] / share[owner]

    out: list[Ranked] = []
    for priority in sorted(by_priority, reverse=True):
        queues = {
            owner: deque(sorted(items, key=lambda t: (t.submitted_at, t.task_id)))
            for owner, items in by_priority[priority].items()
        }
        heap = [(ratio(o), q[0].submitted_at, o) for o, q in queues.items()]
        heapq.heapify(heap)
        while heap:
            _, _, owner = heapq.heappop(heap)
            queue = queues[owner]
            task = queue.popleft()
            out.append(
                Ranked(
                    task,
                    len(out) + 1,
                    factor(charged[owner], share[owner], total_usage, total_shares),
                )
            )
            runtime = task.max_runtime_s or config.default_runtime_s
            cost = config.weights.rate(task.cpu_millis, task.memory_bytes, task.gpus) * runtime
            charged[owner] += cost
            total_usage += cost
            if queue:
                heapq.heappush(heap, (ratio(owner), queue[0].submitted_at, owner))
    return out

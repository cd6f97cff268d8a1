"""Issue 22: queue ETAs from declared runtimes (pure)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.core.resources import Resources
from dockyard.scheduler.eta import estimate_starts
from dockyard.scheduler.placement import NodeView, Running, TaskRequest

GiB = 1024**3


def _node(name: str, cpus: int, used: int = 0) -> NodeView:
    return NodeView(name, name, "ready", Resources(cpus * 1000, 64 * GiB), Resources(used, 0))


def _task(tid: str, cpus: int, runtime: float | None) -> TaskRequest:
    return TaskRequest(tid, Resources(cpus * 1000, GiB), max_runtime_s=runtime)


def test_queue_replays_on_declared_ends() -> None:
    nodes = [_node("a", 4, 4000)]
    running = [Running("a", Resources(4000, 0), ends_at=100.0)]
    tasks = [_task("t1", 4, 50), _task("t2", 2, 10), _task("t3", 2, None), _task("t4", 4, 5)]
    eta = estimate_starts(tasks, nodes, running, now=0.0)
    assert eta["t1"] == 100.0  # when the running work ends
    assert eta["t2"] == 150.0 and eta["t3"] == 150.0  # after t1, side by side
    assert eta["t4"] == math.inf  # t3 declares no end
    assert estimate_starts([_task("x", 8, 1)], nodes, running, 0.0)["x"] == math.inf


def test_unexplained_allocation_never_ends() -> None:
    eta = estimate_starts([_task("t", 2, 1)], [_node("a", 2, 1000)], [], now=5.0)
    assert eta["t"] == math.inf


@settings(max_examples=150, deadline=None)
@given(
    cpus=st.lists(st.integers(1, 8), min_size=1, max_size=4),
    busy=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 4), st.integers(1, 50))),
    queue=st.lists(
        st.tuples(st.integers(1, 8), st.none() | st.integers(1, 40)), min_size=1, max_size=12
    ),
)
def test_estimated_schedule_fits_everywhere_at_all_times(
    cpus: list[int], busy: list[tuple[int, int, int]], queue: list[tuple[int, int | None]]
) -> None:
    nodes = [_node(f"n{i}", c) for i, c in enumerate(cpus)]
    running = []
    load = [0] * len(nodes)
    for where, c, ends in busy:
        i = where % len(nodes)
        if load[i] + c <= cpus[i]:
            load[i] += c
            running.append(Running(f"n{i}", Resources(c * 1000, 0), ends_at=float(ends)))
    nodes = [
        NodeView(n.node_id, n.name, "ready", n.capacity, Resources(load[i] * 1000, 0))
        for i, n in enumerate(nodes)
    ]
    tasks = [_task(f"t{k}", c, r) for k, (c, r) in enumerate(queue)]
    eta = estimate_starts(tasks, nodes, running, now=0.0)
    assert set(eta) == {t.task_id for t in tasks}
    assert all(v >= 0.0 for v in eta.values())
    # A task that fits no node at all never gets a finite estimate.
    for t in tasks:
        if t.resources.cpu_millis > max(cpus) * 1000:
            assert eta[t.task_id] == math.inf
    # Replay: at every start instant, nothing overflows any node (running + started).
    # (Placement of each task is not returned; check the weaker total-capacity bound.)
    for x in {v for v in eta.values() if v < math.inf}:
        used = sum(r.resources.cpu_millis for r in running if (r.ends_at or math.inf) > x)
        for t in tasks:
            start = eta[t.task_id]
            end = start + (t.max_runtime_s if t.max_runtime_s is not None else math.inf)
            if start <= x < end:
                used += t.resources.cpu_millis
        assert used <= sum(cpus) * 1000

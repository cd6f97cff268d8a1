"""Issue 22: gang jobs are placed all at once or not at all (pure placement)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.core.resources import Resources
from dockyard.scheduler.placement import NodeView, TaskRequest, place

GiB = 1024**3


def _nodes(cpus: list[int]) -> list[NodeView]:
    return [
        NodeView(f"n{i}", f"n{i}", "ready", Resources(c * 1000, 8 * GiB), Resources(0, 0))
        for i, c in enumerate(cpus)
    ]


def _gang(name: str, size: int, cpu: int, own_nodes: bool) -> list[TaskRequest]:
    return [
        TaskRequest(
            f"{name}-{k}",
            Resources(cpu * 1000, GiB),
            gang=name,
            gang_size=size,
            gang_nodes=own_nodes,
        )
        for k in range(size)
    ]


def test_two_gangs_that_cannot_both_fit_never_hold_partial_allocations() -> None:
    nodes = _nodes([4, 4])
    a, b = _gang("a", 2, 3, True), _gang("b", 2, 3, True)
    plan = place([*a, *b], nodes)
    assert sorted(plan.assignments) == ["a-0", "a-1"]
    assert set(plan.assignments.values()) == {"n0", "n1"}
    assert all(t.task_id in plan.pending_reasons for t in b)
    assert plan.pending_reasons["b-0"] == "gang: 0 of 2 nodes fit now"
    # The gang that does not fit leaves room for later work (nothing held back).
    small = TaskRequest("small", Resources(1000, GiB))
    plan = place([*_gang("big", 3, 1, True), small], nodes)
    assert plan.assignments == {"small": plan.assignments["small"]}


def test_a_gang_with_missing_members_waits() -> None:
    plan = place(_gang("g", 3, 1, False)[:2], _nodes([8]))
    assert not plan.assignments
    assert plan.pending_reasons["g-0"] == "gang: 2 of 3 members queued"


@settings(max_examples=150, deadline=None)
@given(
    cpus=st.lists(st.integers(1, 8), min_size=1, max_size=6),
    jobs=st.lists(
        st.tuples(st.integers(1, 5), st.integers(1, 4), st.booleans()), min_size=1, max_size=6
    ),
)
def test_gangs_are_all_or_nothing(cpus: list[int], jobs: list[tuple[int, int, bool]]) -> None:
    nodes = _nodes(cpus)
    tasks: list[TaskRequest] = []
    for j, (size, cpu, own) in enumerate(jobs):
        tasks.extend(
            _gang(f"g{j}", size, cpu, own)
            if size > 1
            else [TaskRequest(f"s{j}", Resources(cpu * 1000, GiB))]
        )
    plan = place(tasks, nodes)
    used: Counter[str] = Counter()
    for t in tasks:
        if t.task_id in plan.assignments:
            used[plan.assignments[t.task_id]] += t.resources.cpu_millis
    for n in nodes:
        assert used[n.node_id] <= n.capacity.cpu_millis
    for j, (size, _cpu, own) in enumerate(jobs):
        if size == 1:
            continue
        members = [t for t in tasks if t.gang == f"g{j}"]
        got = [plan.assignments[t.task_id] for t in members if t.task_id in plan.assignments]
        assert len(got) in (0, size)  # never a partial allocation
        if got and own:
            assert len(set(got)) == size
        if not got:
            assert all(t.task_id in plan.pending_reasons for t in members)
    # The first job in queue order is placed whenever it fits an empty cluster.
    size, cpu, own = jobs[0]
    fits_alone = (
        sum(1 for c in cpus if c >= cpu) >= size if own else sum(c // cpu for c in cpus) >= size
    )
    first = [t.task_id for t in tasks if t.task_id.startswith(("g0-", "s0"))]
    if fits_alone:
        assert all(tid in plan.assignments for tid in first)

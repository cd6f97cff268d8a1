"""Issue 22: gang jobs are placed all at once or not at all, get backfill reservations
and never deadlock (pure placement)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.core.resources import Resources
from dockyard.scheduler.placement import NodeView, Running, TaskRequest, place

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


def _busy(cpus: list[int], running: list[Running]) -> list[NodeView]:
    """Nodes holding ``running`` (CPU only; memory is never short here)."""
    used: Counter[str] = Counter()
    for r in running:
        used[r.node_id] += r.resources.cpu_millis
    return [
        NodeView(
            f"n{i}", f"n{i}", "ready", Resources(c * 1000, 8 * GiB), Resources(used[f"n{i}"], 0)
        )
        for i, c in enumerate(cpus)
    ]


def test_a_gang_that_does_not_fit_gets_a_reservation_small_work_cannot_take() -> None:
    # Both nodes busy until t=100; a 2-node gang waits; small jobs arrive behind it.
    running = [Running(f"n{i}", Resources(3000, GiB), ends_at=100.0) for i in range(2)]
    gang = _gang("g", 2, 4, True)
    endless = TaskRequest("endless", Resources(1000, GiB))  # no declared end
    short = TaskRequest("short", Resources(1000, GiB), max_runtime_s=50)
    plan = place([*gang, endless, short], _busy([4, 4], running), running=running, now=0.0)
    assert not plan.assignments.keys() & {"g-0", "g-1"}
    assert sorted(r.node_id for r in plan.reservations) == ["n0", "n1"]
    assert {r.start for r in plan.reservations} == {100.0}
    # The endless job would delay the gang on either node: held back. The short one
    # ends before the gang's start: backfilled.
    assert "endless" not in plan.assignments and "short" in plan.assignments
    assert plan.pending_reasons["endless"].endswith("reserved for a queued task")
    # Without backfill information (no ``running``) nothing is reserved, as before.
    plain = place([*gang, endless], _busy([4, 4], running))
    assert "endless" in plain.assignments and not plain.reservations


@settings(max_examples=200, deadline=None)
@given(
    cpus=st.lists(st.integers(2, 8), min_size=1, max_size=5),
    holds=st.lists(
        st.tuples(st.integers(0, 4), st.integers(1, 4), st.one_of(st.none(), st.integers(1, 90))),
        max_size=8,
    ),
    size=st.integers(2, 4),
    cpu=st.integers(1, 6),
    smalls=st.lists(
        st.tuples(st.integers(1, 4), st.one_of(st.none(), st.integers(1, 120))), max_size=8
    ),
)
def test_backfill_never_delays_a_reserved_gang(
    cpus: list[int],
    holds: list[tuple[int, int, int | None]],
    size: int,
    cpu: int,
    smalls: list[tuple[int, int | None]],
) -> None:
    """Whatever is backfilled behind a gang that does not fit, each node reserved for
    it still has room for its member at the reserved start."""
    free = {f"n{i}": c * 1000 for i, c in enumerate(cpus)}
    running: list[Running] = []
    for node, need, ends in holds:
        name = f"n{node % len(cpus)}"
        if need * 1000 <= free[name]:
            free[name] -= need * 1000
            running.append(Running(name, Resources(need * 1000, GiB), ends_at=ends))
    gang = _gang("g", size, cpu, True)
    queue = [
        *gang,
        *(
            TaskRequest(f"s{k}", Resources(c * 1000, GiB), max_runtime_s=rt)
            for k, (c, rt) in enumerate(smalls)
        ),
    ]
    plan = place(queue, _busy(cpus, running), running=running, now=0.0)
    if any(t.task_id in plan.assignments for t in gang):
        assert all(t.task_id in plan.assignments for t in gang)
        return
    ours = [r for r in plan.reservations if r.task_id.startswith("g-")]
    if not ours:  # the gang can never run here (too few big nodes)
        assert sum(1 for c in cpus if c >= cpu) < size
        return
    assert ours == plan.reservations  # the head's reservation: nobody else's
    assert len({r.node_id for r in ours}) == size  # a node per member
    start = ours[0].start
    assert all(r.start == start for r in ours)
    for reserved in ours:
        node = reserved.node_id
        capacity = cpus[int(node[1:])] * 1000
        stays = sum(
            r.resources.cpu_millis
            for r in running
            if r.node_id == node and (r.ends_at is None or r.ends_at > start)
        )
        placed = sum(
            t.resources.cpu_millis
            for t in queue
            if plan.assignments.get(t.task_id) == node
            and (t.max_runtime_s is None or t.max_runtime_s > start)
        )
        assert stays + placed + cpu * 1000 <= capacity or start == float("inf")


@settings(max_examples=150, deadline=None)
@given(
    cpus=st.lists(st.integers(1, 8), min_size=1, max_size=5),
    a=st.tuples(st.integers(2, 4), st.integers(1, 6), st.booleans()),
    b=st.tuples(st.integers(2, 4), st.integers(1, 6), st.booleans()),
)
def test_two_gangs_never_deadlock(
    cpus: list[int], a: tuple[int, int, bool], b: tuple[int, int, bool]
) -> None:
    """Pass after pass (what was placed ends in between), every gang that fits the
    empty cluster alone is placed: the first at once, the other next: neither waits
    on a part of the cluster the other holds."""
    gangs = {"a": _gang("a", *a), "b": _gang("b", *b)}
    fits = {
        name: (
            sum(1 for c in cpus if c >= cpu) >= size if own else sum(c // cpu for c in cpus) >= size
        )
        for name, (size, cpu, own) in (("a", a), ("b", b))
    }
    waiting = dict(gangs)
    for _ in range(2):
        plan = place([t for g in waiting.values() for t in g], _nodes(cpus), running=[], now=0.0)
        placed = {
            name for name, g in waiting.items() if any(t.task_id in plan.assignments for t in g)
        }
        for name in placed:
            assert all(t.task_id in plan.assignments for t in waiting[name])
        first = next(iter(waiting), None)
        if first is not None and fits[first]:
            assert first in placed
        for name in placed:
            del waiting[name]
    assert not any(fits[name] for name in waiting)

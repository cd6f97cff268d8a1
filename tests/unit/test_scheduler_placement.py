"""Placement: feasibility, scoring, explain, scale, backfill; properties with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.core.errors import ValidationError
from dockyard.core.resources import Resources
from dockyard.scheduler.constraints import parse_constraint, parse_constraints
from dockyard.scheduler.placement import (
    INF,
    SPREAD,
    NodeView,
    Running,
    TaskRequest,
    place,
    reserve,
)

GiB = 1024**3


def node(
    name: str,
    cpu: int = 4000,
    mem: int = 8 * GiB,
    *,
    state: str = "ready",
    used: Resources = Resources(),  # noqa: B008
    labels: dict[str, str] | None = None,
    gpus: int = 0,
    gpus_used: frozenset[int] = frozenset(),
    ports: frozenset[int] = frozenset(),
) -> NodeView:
    return NodeView(
        name,
        name,
        state,
        Resources(cpu, mem),
        used,
        labels or {},
        tuple(range(gpus)),
        gpus_used,
        ports,
    )


def task(tid: str, cpu: int = 1000, mem: int = GiB, **kw: object) -> TaskRequest:
    return TaskRequest(tid, Resources(cpu, mem), **kw)  # type: ignore[arg-type]


# -- constraints -----------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "labels", "ok"),
    [
        ("zone=a", {"zone": "a"}, True),
        ("zone=a", {"zone": "b"}, False),
        ("zone=a", {}, False),
        ("zone!=a", {"zone": "b"}, True),
        ("zone!=a", {}, True),
        ("zone!=a", {"zone": "a"}, False),
        ("zone in a,b", {"zone": "b"}, True),
        ("zone in (a, b)", {"zone": "c"}, False),
        ("zone not in a,b", {"zone": "c"}, True),
        ("zone not in a,b", {"zone": "a"}, False),
        ("gpu==true", {"gpu": "true"}, True),
    ],
)
def test_constraint_matching(text: str, labels: dict[str, str], ok: bool) -> None:
    assert parse_constraint(text).matches(labels) is ok


@pytest.mark.parametrize("text", ["", "zone", "=a", "zone in", "zone ~ a", "zo ne=a"])
def test_bad_constraints_name_the_field(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_constraints([text])
    assert info.value.field == "constraints[0]"


def test_constraint_round_trips_as_text() -> None:
    for text in ("zone=a", "zone!=a", "zone in a,b", "zone not in a,b"):
        assert str(parse_constraint(text)) == text


# -- feasibility and explain ----------------------------------------------
def test_explain_counts_each_reason() -> None:
    nodes = [node(f"m{i}", mem=GiB) for i in range(8)]
    nodes += [node(f"d{i}", state="draining") for i in range(3)]
    nodes += [node("z", labels={"zone": "b"})]
    plan = place([task("t", mem=2 * GiB, constraints=parse_constraints(["zone!=b"]))], nodes)
    assert plan.assignments == {}
    assert plan.pending_reasons["t"] == (
        "0/12 nodes fit: 8 insufficient memory, 3 draining, 1 constraint zone!=b"
    )
    assert plan.pending_detail["t"] == {
        "total": 12,
        "fit": 0,
        "reasons": {"insufficient memory": 8, "draining": 3, "constraint zone!=b": 1},
    }


def test_only_ready_nodes() -> None:
    nodes = [node("a", state="down"), node("b", state="suspect"), node("c", state="draining")]
    plan = place([task("t")], nodes)
    assert plan.pending_reasons["t"] == "0/3 nodes fit: 1 draining, 1 node down, 1 node suspect"
    assert place([task("t")], []).pending_reasons["t"] == "no nodes registered"


def test_constraints_ports_and_gpus() -> None:
    nodes = [
        node("a", labels={"zone": "a"}, ports=frozenset({80})),
        node("b", labels={"zone": "a"}, gpus=2, gpus_used=frozenset({0})),
        node("c", labels={"zone": "b"}, gpus=4),
    ]
    plan = place(
        [
            task("web", ports=(80,), constraints=parse_constraints(["zone=a"])),
            task("gpu", gpus=1, constraints=parse_constraints(["zone=a"])),
            task("gpu2", gpus=2, constraints=parse_constraints(["zone in a,b"])),
            task("gpu3", gpus=3, constraints=parse_constraints(["zone=a"])),
        ],
        nodes,
    )
    assert plan.assignments == {"web": "b", "gpu": "b", "gpu2": "c"}
    assert plan.gpus == {"gpu": (1,), "gpu2": (0, 1)}
    assert plan.pending_reasons["gpu3"] == "0/3 nodes fit: 2 insufficient gpus, 1 constraint zone=a"


def test_binpack_fills_one_node_spread_uses_all() -> None:
    nodes = [node(f"n{i}") for i in range(4)]
    packed = place([task(f"t{i}") for i in range(4)], nodes)
    assert len(set(packed.assignments.values())) == 1
    spread = place([task(f"t{i}", algorithm=SPREAD) for i in range(4)], nodes)
    assert len(set(spread.assignments.values())) == 4


def test_plain_tasks_avoid_gpu_nodes() -> None:
    plan = place([task("t")], [node("gpu", gpus=2), node("plain")])
    assert plan.assignments == {"t": "plain"}


def test_scale_every_task_that_fits_is_placed() -> None:
    nodes = [
        node(f"n{i:04d}", cpu=2000, mem=4 * GiB, labels={"zone": "abc"[i % 3]}) for i in range(5000)
    ]
    zone = parse_constraints(["zone=b"])
    tasks = [task(f"t{i}", cpu=500, mem=GiB // 2, constraints=zone) for i in range(7000)]
    plan = place(tasks, nodes)
    # 1,667 zone-b nodes x 4 tasks each
    assert len(plan.assignments) == 1667 * 4
    assert all(n.startswith("n") and int(n[1:]) % 3 == 1 for n in plan.assignments.values())
    assert plan.pending_reasons[tasks[-1].task_id].startswith("0/5000 nodes fit:")


# -- backfill --------------------------------------------------------------
def test_reserve_finds_earliest_start() -> None:
    n = node("a", cpu=4000, used=Resources(4000, GiB))
    holding = [
        Running("a", Resources(2000, 0), ends_at=100.0),
        Running("a", Resources(2000, GiB), ends_at=50.0),
    ]
    start, room = reserve(task("big", cpu=3000), n, holding, now=10.0)
    assert start == 100.0
    assert room == (1000, 8 * GiB - GiB, 0)
    start, _ = reserve(task("big", cpu=3000), n, [Running("a", Resources(4000, GiB))], 10.0)
    assert start == INF


def test_backfill_runs_short_tasks_but_never_delays_the_head() -> None:
    nodes = [node("a", cpu=4000, used=Resources(3000, GiB))]
    running = [Running("a", Resources(3000, GiB), ends_at=100.0)]
    tasks = [
        task("head", cpu=4000, mem=GiB),
        task("long", cpu=1000, mem=GiB, max_runtime_s=500.0),
        task("unbounded", cpu=1000, mem=GiB),
        task("short", cpu=1000, mem=GiB, max_runtime_s=50.0),
    ]
    plan = place(tasks, nodes, running=running, now=0.0)
    assert plan.reservation is not None
    assert plan.reservation.task_id == "head"
    assert plan.reservation.start == 100.0
    assert plan.assignments == {"short": "a"}
    assert "reserved for a queued task" in plan.pending_reasons["long"]


# -- properties ------------------------------------------------------------
node_st = st.builds(
    lambda i, cpu, mem, gpus, zone, state: node(
        f"n{i}", cpu, mem * GiB, gpus=gpus, labels={"zone": zone}, state=state
    ),
    st.integers(0, 10**6),
    st.integers(1000, 8000),
    st.integers(1, 16),
    st.integers(0, 4),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(["ready", "ready", "ready", "draining", "down"]),
)
task_st = st.builds(
    lambda i, cpu, mem, gpus, ports, cons, algo, rt: task(
        f"t{i}",
        cpu,
        mem * GiB // 2,
        gpus=gpus,
        ports=tuple(sorted(set(ports))),
        constraints=parse_constraints(cons),
        algorithm=algo,
        max_runtime_s=rt,
    ),
    st.integers(0, 10**9),
    st.integers(100, 4000),
    st.integers(1, 8),
    st.integers(0, 3),
    st.lists(st.sampled_from([80, 443, 8080]), max_size=2),
    st.lists(st.sampled_from(["zone=a", "zone!=b", "zone in a,c"]), max_size=1),
    st.sampled_from(["binpack", "spread"]),
    st.one_of(st.none(), st.floats(1, 1000)),
)


def _unique(items: list, attr: str) -> list:  # type: ignore[type-arg]
    seen: set[str] = set()
    out = []
    for item in items:
        key = getattr(item, attr)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(node_st, min_size=0, max_size=12),
    st.lists(task_st, min_size=0, max_size=40),
    st.booleans(),
)
def test_never_overcommits_gpus_exclusive_constraints_hold(
    nodes: list[NodeView], tasks: list[TaskRequest], backfill: bool
) -> None:
    nodes = _unique(nodes, "node_id")
    tasks = _unique(tasks, "task_id")
    plan = place(tasks, nodes, running=[] if backfill else None, now=0.0)
    by_id = {n.node_id: n for n in nodes}
    requests = {t.task_id: t for t in tasks}
    cpu: dict[str, int] = {}
    mem: dict[str, int] = {}
    gpus: dict[str, list[int]] = {}
    ports: dict[str, list[int]] = {}
    for tid, nid in plan.assignments.items():
        t, n = requests[tid], by_id[nid]
        assert n.state == "ready"
        assert all(c.matches(n.labels) for c in t.constraints)
        cpu[nid] = cpu.get(nid, 0) + t.resources.cpu_millis
        mem[nid] = mem.get(nid, 0) + t.resources.memory_bytes
        got = plan.gpus.get(tid, ())
        assert len(got) == t.gpus
        assert set(got) <= set(n.gpus)
        gpus.setdefault(nid, []).extend(got)
        ports.setdefault(nid, []).extend(t.ports)
    for nid, n in by_id.items():
        assert cpu.get(nid, 0) <= n.free.cpu_millis
        assert mem.get(nid, 0) <= n.free.memory_bytes
        assert len(gpus.get(nid, [])) == len(set(gpus.get(nid, [])))  # exclusive
        assert len(ports.get(nid, [])) == len(set(ports.get(nid, [])))
    assert set(plan.assignments) | set(plan.pending_reasons) == set(requests)
    assert not set(plan.assignments) & set(plan.pending_reasons)


@settings(max_examples=150, deadline=None)
@given(st.lists(node_st, min_size=1, max_size=8), st.lists(task_st, max_size=30))
def test_a_pending_task_fits_nowhere_at_the_end(
    nodes: list[NodeView], tasks: list[TaskRequest]
) -> None:
    """Queue order is respected: nothing later in the queue took a place an earlier task
    could have used (free space only shrinks during a pass)."""
    nodes = _unique(nodes, "node_id")
    tasks = _unique(tasks, "task_id")
    plan = place(tasks, nodes)
    requests = {t.task_id: t for t in tasks}
    for n in nodes:
        if n.state != "ready":
            continue
        on = [requests[t] for t, nid in plan.assignments.items() if nid == n.node_id]
        free_cpu = n.free.cpu_millis - sum(t.resources.cpu_millis for t in on)
        free_mem = n.free.memory_bytes - sum(t.resources.memory_bytes for t in on)
        free_gpus = len(n.gpus) - sum(t.gpus for t in on)
        used_ports = {p for t in on for p in t.ports}
        for tid in plan.pending_reasons:
            p = requests[tid]
            fits = (
                p.resources.cpu_millis <= free_cpu
                and p.resources.memory_bytes <= free_mem
                and p.gpus <= free_gpus
                and not used_ports & set(p.ports)
                and all(c.matches(n.labels) for c in p.constraints)
            )
            assert not fits, (tid, n.node_id)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(500, 4000), st.floats(1, 500)), min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(100, 4000), st.one_of(st.none(), st.floats(1, 500)))),
)
def test_backfill_never_delays_the_head(
    holding: list[tuple[int, float]], later: list[tuple[int, float | None]]
) -> None:
    cap = 4000
    held = [Running("a", Resources(min(c, cap), 0), ends_at=e) for c, e in holding]
    used = min(sum(r.resources.cpu_millis for r in held), cap)
    held_fixed = []
    left = used
    for r in held:
        take = min(r.resources.cpu_millis, left)
        left -= take
        if take:
            held_fixed.append(Running("a", Resources(take, 0), ends_at=r.ends_at))
    n = node("a", cpu=cap, mem=GiB, used=Resources(used, 0))
    head = task("head", cpu=cap, mem=0)
    before, _ = reserve(head, n, held_fixed, 0.0)
    tasks = [head] + [
        task(f"l{i}", cpu=c, mem=0, max_runtime_s=r) for i, (c, r) in enumerate(later)
    ]
    plan = place(tasks, [n], running=held_fixed, now=0.0)
    assert "head" not in plan.assignments or used == 0
    added = [
        Running("a", t.resources, ends_at=None if t.max_runtime_s is None else t.max_runtime_s)
        for t in tasks
        if t.task_id in plan.assignments
    ]
    after, _ = reserve(head, n, held_fixed + added, 0.0)
    assert after <= before

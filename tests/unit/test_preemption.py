"""Issue 22: preemption decisions (pure): who may evict whom, and no cycles."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.core.policy import Attempt, RestartMode, RestartPolicy, decide
from dockyard.core.resources import Resources
from dockyard.core.states import TaskState
from dockyard.scheduler.batch import find_cycle
from dockyard.scheduler.placement import NodeView
from dockyard.scheduler.preempt import Contender, Victim, outranks, plan_evictions

GiB = 1024**3


def _node(name: str, cpus: int, used: int) -> NodeView:
    return NodeView(name, name, "ready", Resources(cpus * 1000, 64 * GiB), Resources(used, 0))


def test_higher_priority_evicts_the_fewest_lowest_victims() -> None:
    nodes = [_node("a", 4, 4000), _node("b", 4, 4000)]
    victims = [
        Victim("a1", "a", "u", 0, 2000, 0, started_at=0.0),
        Victim("a2", "a", "u", 0, 2000, 0, started_at=0.0),
        Victim("b1", "b", "u", 5, 4000, 0, started_at=0.0),
    ]
    urgent = Contender("t", "v", 10, 3000, 0)
    out = plan_evictions([urgent], nodes, victims, {}, now=100.0)
    assert [(e.victim, e.node_id) for e in out] == [("b1", "b")]  # one victim beats two
    assert out[0].why == "priority 10 > 5" and out[0].gainer == "t"
    # Equal priority and equal shares: nobody is evicted.
    assert plan_evictions([Contender("t", "v", 0, 3000, 0)], nodes, victims[:2], {}, 100.0) == []


def test_min_runtime_guard_and_room_already_freed() -> None:
    nodes = [_node("a", 4, 4000)]
    young = Victim("y", "a", "u", 0, 4000, 0, started_at=90.0, min_runtime_s=60)
    assert plan_evictions([Contender("t", "v", 9, 1000, 0)], nodes, [young], {}, 100.0) == []
    stopping = Victim("s", "a", "u", 0, 4000, 0, started_at=0.0, stopping=True)
    assert plan_evictions([Contender("t", "v", 9, 1000, 0)], nodes, [stopping], {}, 100.0) == []


def test_under_share_owner_preempts_over_share_with_a_margin() -> None:
    nodes = [_node("a", 2, 2000)]
    victim = [Victim("x", "a", "heavy", 0, 2000, 0, started_at=0.0)]
    light = Contender("t", "light", 0, 2000, 0)
    assert plan_evictions([light], nodes, victim, {"light": 0.5, "heavy": 0.4}, 10.0) == []
    out = plan_evictions([light], nodes, victim, {"light": 0.9, "heavy": 0.4}, 10.0)
    assert [e.victim for e in out] == ["x"] and out[0].why.startswith("fair share 0.90 > 0.40")


@given(st.lists(st.tuples(st.integers(-3, 3), st.floats(0, 1)), min_size=1, max_size=12))
def test_the_may_evict_relation_has_no_cycles(ranks: list[tuple[int, float]]) -> None:
    edges = {
        str(i): [
            str(j)
            for j, (pj, fj) in enumerate(ranks)
            if i != j and outranks(pi, fi, pj, fj) is not None
        ]
        for i, (pi, fi) in enumerate(ranks)
    }
    assert find_cycle(edges) is None


@settings(max_examples=150, deadline=None)
@given(
    cpus=st.lists(st.integers(1, 8), min_size=1, max_size=4),
    running=st.lists(
        st.tuples(st.integers(0, 3), st.integers(1, 4), st.integers(-2, 2), st.booleans()),
        max_size=10,
    ),
    queued=st.lists(st.tuples(st.integers(1, 6), st.integers(-2, 3)), min_size=1, max_size=6),
    factors=st.dictionaries(st.sampled_from("uvw"), st.floats(0, 1)),
)
def test_every_eviction_is_justified_and_lets_its_gainer_fit(
    cpus: list[int],
    running: list[tuple[int, int, int, bool]],
    queued: list[tuple[int, int]],
    factors: dict[str, float],
) -> None:
    load = [0] * len(cpus)
    victims = []
    for k, (where, c, prio, guarded) in enumerate(running):
        i = where % len(cpus)
        if load[i] + c <= cpus[i]:
            load[i] += c
            victims.append(
                Victim(
                    f"r{k}", f"n{i}", "uvw"[k % 3], prio, c * 1000, 0, 0.0, 500.0 if guarded else 0
                )
            )
    nodes = [_node(f"n{i}", c, load[i] * 1000) for i, c in enumerate(cpus)]
    blocked = [Contender(f"q{k}", "uvw"[k % 3], p, c * 1000, 0) for k, (c, p) in enumerate(queued)]
    out = plan_evictions(blocked, nodes, victims, factors, now=100.0)
    by_id = {v.task_id: v for v in victims}
    gainers = {t.task_id: t for t in blocked}
    assert len({e.victim for e in out}) == len(out)  # nobody evicted twice
    for e in out:
        v, g = by_id[e.victim], gainers[e.gainer]
        assert v.min_runtime_s == 0  # the guard held
        assert (
            outranks(
                g.priority, factors.get(g.owner_id, 1.0), v.priority, factors.get(v.owner_id, 1.0)
            )
            is not None
        )
    # Each gainer fits on its node once its victims are gone (and earlier gainers placed).
    room = {n.node_id: n.capacity.cpu_millis - n.allocated.cpu_millis for n in nodes}
    for g in blocked:
        mine = [e for e in out if e.gainer == g.task_id]
        if not mine:
            continue
        node = mine[0].node_id
        room[node] += sum(by_id[e.victim].cpu_millis for e in mine)
        assert room[node] >= g.cpu_millis
        room[node] -= g.cpu_millis


_ATTEMPTS = st.sampled_from(
    [
        Attempt(TaskState.FAILED, "exit_nonzero", ran_for_s=0.5, ended_at=10.0),
        Attempt(TaskState.FAILED, "exit_nonzero", ran_for_s=600.0, ended_at=10.0),
        Attempt(TaskState.SUCCEEDED, "exit_zero", ran_for_s=0.5, ended_at=10.0),
        Attempt(TaskState.LOST, "node_lost", ran_for_s=5.0, ended_at=10.0),
        Attempt(TaskState.KILLED, "killed", ran_for_s=5.0, stop_reason="node_drained"),
    ]
)
_PREEMPTED = Attempt(TaskState.KILLED, "preempted", ran_for_s=30.0, stop_reason="preempted")


def test_a_preempted_attempt_is_requeued_whatever_the_policy() -> None:
    for mode in RestartMode:
        decision = decide(RestartPolicy(mode=mode, max_attempts=0), [_PREEMPTED])
        assert decision.replace and decision.delay_s == 0 and decision.kind == "preempted"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_ATTEMPTS, min_size=1, max_size=6),
    st.lists(st.integers(0, 6), max_size=4),
    st.sampled_from(list(RestartMode)),
    st.integers(0, 3),
)
def test_preempted_attempts_count_for_nothing_in_the_restart_policy(
    history: list[Attempt], at: list[int], mode: RestartMode, max_attempts: int
) -> None:
    """Preempted attempts anywhere before the last one change neither whether the job
    gets another attempt nor its back-off: no restart, reschedule or short run used."""
    policy = RestartPolicy(mode=mode, max_attempts=max_attempts, reschedule_attempts=2)
    with_preemptions = list(history[:-1])
    for index in sorted(at, reverse=True):
        with_preemptions.insert(min(index, len(with_preemptions)), _PREEMPTED)
    with_preemptions.append(history[-1])
    plain, mixed = decide(policy, history), decide(policy, with_preemptions)
    assert (plain.replace, plain.delay_s, plain.kind) == (mixed.replace, mixed.delay_s, mixed.kind)

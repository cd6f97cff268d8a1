"""Queue order and fair share: priority first, shares respected, convergence."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.scheduler.fairshare import (
    FairShareConfig,
    UsageSpan,
    decayed,
    factor,
    factors,
    usage_by_owner,
)
from dockyard.scheduler.queue import QueuedTask, order


def test_decay_halves_per_half_life() -> None:
    full = decayed(1.0, 0.0, 100.0, 100.0, 1e12)
    assert full == pytest.approx(100.0, rel=1e-6)
    later = decayed(1.0, 0.0, 100.0, 100.0 + 3600.0, 3600.0)
    assert later == pytest.approx(decayed(1.0, 0.0, 100.0, 100.0, 3600.0) / 2)
    assert decayed(1.0, 50.0, 40.0, 100.0, 10.0) == 0.0


def test_usage_is_billed_per_core_gib_and_gpu() -> None:
    cfg = FairShareConfig(half_life_s=1e12)
    spans = [
        UsageSpan("a", 0.0, 10.0, cpu_millis=2000, memory_bytes=4 * 1024**3, gpus=1),
        UsageSpan("b", 0.0, 10.0, cpu_millis=1000, memory_bytes=0),
    ]
    usage = usage_by_owner(spans, 10.0, cfg)
    assert usage["a"] == pytest.approx(10 * (2 * 1.0 + 4 * 0.25 + 1 * 2.0), rel=1e-6)
    assert usage["b"] == pytest.approx(10.0, rel=1e-6)


def test_factor_matches_slurm_classic() -> None:
    assert factor(0.0, 1.0, 0.0, 2.0) == 1.0
    assert factor(50.0, 1.0, 100.0, 2.0) == pytest.approx(0.5)  # used exactly its share
    assert factor(100.0, 1.0, 100.0, 2.0) == pytest.approx(0.25)
    assert factor(10.0, 0.0, 100.0, 2.0) == 0.0
    got = factors({"a": 30.0, "b": 10.0}, {"a": 3.0, "b": 1.0})
    assert got["a"] == pytest.approx(got["b"])


def q(tid: str, owner: str, prio: int = 0, at: float = 0.0) -> QueuedTask:
    return QueuedTask(tid, owner, prio, at, cpu_millis=1000, memory_bytes=0)


def test_priority_then_fair_share_then_submit_time() -> None:
    tasks = [q("a1", "a", at=1), q("a2", "a", at=2), q("b1", "b", at=3), q("hi", "c", 5, at=9)]
    ranked = order(tasks, {"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 1.0})
    assert [r.task.task_id for r in ranked] == ["hi", "a1", "b1", "a2"]
    assert [r.position for r in ranked] == [1, 2, 3, 4]
    heavy = order(tasks[:3], {"a": 1e6, "b": 0.0}, {"a": 1.0, "b": 1.0})
    assert [r.task.task_id for r in heavy] == ["b1", "a1", "a2"]
    assert heavy[0].factor == 1.0
    assert heavy[1].factor < 0.3


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(-2, 2), st.floats(0, 100)),
        max_size=40,
    ),
    st.dictionaries(st.sampled_from("abc"), st.floats(0, 1e6)),
)
def test_order_is_a_permutation_sorted_by_priority(
    raw: list[tuple[str, int, float]], usage: dict[str, float]
) -> None:
    tasks = [q(f"t{i}", o, p, at) for i, (o, p, at) in enumerate(raw)]
    ranked = order(tasks, usage, {"a": 1.0, "b": 2.0, "c": 3.0})
    assert sorted(r.task.task_id for r in ranked) == sorted(t.task_id for t in tasks)
    prios = [r.task.priority for r in ranked]
    assert prios == sorted(prios, reverse=True)
    for owner in "abc":  # each owner's tasks of one priority stay in submit order
        for prio in range(-2, 3):
            mine = [r.task.submitted_at for r in ranked if r.task.owner_id == owner]
            mine = [
                r.task.submitted_at
                for r in ranked
                if r.task.owner_id == owner and r.task.priority == prio
            ]
            assert mine == sorted(mine)


def simulate(
    shares: dict[str, float], slots: int, steps: int, half_life: float
) -> dict[str, float]:
    """Every user keeps a backlog of 1-core, 10 s tasks; return each one's CPU-seconds in the
    last half of the run."""
    cfg = FairShareConfig(half_life_s=half_life, default_runtime_s=10.0)
    spans: list[UsageSpan] = []
    running: list[tuple[str, float]] = []  # owner, end
    counter = 0
    got = dict.fromkeys(shares, 0.0)
    for now in range(steps):
        running = [(o, end) for o, end in running if end > now]
        free = slots - len(running)
        if free <= 0:
            continue
        usage = usage_by_owner(spans, float(now), cfg)
        backlog = []
        for owner in shares:
            for _ in range(free):
                counter += 1
                backlog.append(q(f"t{counter}", owner, at=float(counter)))
        for ranked in order(backlog, usage, shares, cfg)[:free]:
            owner = ranked.task.owner_id
            running.append((owner, now + 10.0))
            spans.append(UsageSpan(owner, float(now), now + 10.0, 1000, 0))
            if now >= steps // 2:
                got[owner] += 10.0
    return got


@settings(max_examples=8, deadline=None)
@given(st.dictionaries(st.sampled_from("abcd"), st.integers(1, 6), min_size=2, max_size=4))
def test_fair_share_converges_to_configured_shares(raw: dict[str, int]) -> None:
    shares = {k: float(v) for k, v in raw.items()}
    got = simulate(shares, slots=24, steps=1500, half_life=200.0)
    total = sum(got.values())
    for owner, share in shares.items():
        expected = share / sum(shares.values())
        assert math.isclose(got[owner] / total, expected, abs_tol=0.05), (got, shares)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from("abc"),
            st.floats(0, 5000),
            st.floats(0, 500),
            st.integers(0, 8000),
            st.integers(0, 1 << 34),
            st.integers(0, 4),
        ),
        max_size=40,
    ),
    st.lists(st.floats(0, 20_000), min_size=1, max_size=5),
)
def test_decayed_totals_carried_forward_equal_a_fresh_sum(
    raw: list[tuple[str, float, float, int, int, int]], checkpoints: list[float]
) -> None:
    """Adding each finished span once and decaying the totals gives what summing every
    span again gives, whenever the spans are added (each once it has ended)."""
    from dockyard.scheduler.fairshare import DecayedTotals

    cfg = FairShareConfig(half_life_s=1800.0)
    spans = [UsageSpan(o, s, s + d, c, m, g) for o, s, d, c, m, g in raw]
    totals = DecayedTotals(cfg, 0.0)
    added: set[int] = set()
    for now in [*sorted(checkpoints), 30_000.0]:
        totals.advance(now)
        for i, span in enumerate(spans):
            if i not in added and span.end <= now:
                added.add(i)
                totals.add(span)
        expected = usage_by_owner([spans[i] for i in added], now, cfg)
        assert set(k for k, v in expected.items() if v > 0) == set(totals.totals)
        for owner, value in expected.items():
            assert totals.totals.get(owner, 0.0) == pytest.approx(value, rel=1e-9, abs=1e-9)


def test_decayed_totals_never_decay_backwards() -> None:
    from dockyard.scheduler.fairshare import DecayedTotals

    totals = DecayedTotals(FairShareConfig(half_life_s=100.0), 1000.0)
    totals.add(UsageSpan("a", 900.0, 1000.0, 1000, 0))
    totals.advance(500.0)
    assert totals.as_of == 1000.0 and totals.totals["a"] == pytest.approx(
        decayed(1.0, 900.0, 1000.0, 1000.0, 100.0)
    )
    totals.advance(1100.0)
    assert totals.totals["a"] == pytest.approx(decayed(1.0, 900.0, 1000.0, 1100.0, 100.0))

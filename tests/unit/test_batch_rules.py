"""Issue 22, pure parts: array expressions, release throttle, dependency verdicts."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.agent.logship import LogShipper
from dockyard.agent.reconciler import Reconciler
from dockyard.core.arrays import parse_array
from dockyard.core.dependencies import parse_after
from dockyard.core.errors import ValidationError
from dockyard.core.security import Mount
from dockyard.core.specs import JobSpec, build_job_spec
from dockyard.drivers.sim import SimDriver
from dockyard.protocol.messages import DesiredEntry
from dockyard.scheduler.batch import (
    MET,
    NEVER,
    WAIT,
    JobStatus,
    find_cycle,
    judge,
    judge_all,
    release_count,
)


@pytest.mark.parametrize(
    ("text", "indices", "throttle"),
    [
        ("1-5", [1, 2, 3, 4, 5], None),
        ("1-9:2", [1, 3, 5, 7, 9], None),
        ("1-10:3%2", [1, 4, 7, 10], 2),
        ("1,3,5", [1, 3, 5], None),
        ("0-15:4,20", [0, 4, 8, 12, 20], None),
        ("1-8:3", [1, 4, 7], None),
        ("7", [7], None),
    ],
)
def test_slurm_expressions(text: str, indices: list[int], throttle: int | None) -> None:
    spec = parse_array(text)
    assert list(spec.indices(0, spec.count)) == indices
    assert [spec.index_at(i) for i in range(spec.count)] == indices
    assert spec.throttle == throttle
    assert parse_array(spec.text()) == spec


def test_large_array_is_not_expanded() -> None:
    spec = parse_array("1-100000%50")
    assert spec.count == 100_000 and spec.throttle == 50
    assert spec.index_at(99_999) == 100_000
    assert list(spec.indices(99_998, 10)) == [99_999, 100_000]


@pytest.mark.parametrize("bad", ["", "5-1", "1-3,2", "a", "1-2%0", "1-", "1-5:0", "1,,2"])
def test_bad_expressions_name_the_field(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_array(bad)
    assert info.value.field == "array"


@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.integers(0, 20), st.integers(1, 5)),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 200),
    st.integers(0, 50),
)
def test_positions_walk_every_index_once(
    items: list[tuple[int, int, int]], start: int, count: int
) -> None:
    parts, low = [], 0
    for gap, length, step in items:
        first = low + gap
        parts.append(f"{first}-{first + length}:{step}")
        low = first + length + 1
    spec = parse_array(",".join(parts))
    everything = list(spec.indices(0, spec.count))
    assert len(everything) == spec.count == len(set(everything))
    assert everything == sorted(everything)
    assert list(spec.indices(start, count)) == everything[start : start + count]


@given(
    total=st.integers(0, 10_000),
    throttle=st.none() | st.integers(1, 100),
    steps=st.lists(st.integers(0, 30), max_size=40),
)
def test_release_never_exceeds_the_throttle(
    total: int, throttle: int | None, steps: list[int]
) -> None:
    """Simulate passes: each releases what release_count allows, then some live
    elements end; live never exceeds the throttle and all elements get released."""
    released = live = 0
    for ended in [*steps, *([10**6] * (total + 2))]:
        n = release_count(total, released, live, live, throttle, window=64)
        released += n
        live += n
        assert released <= total
        assert throttle is None or live <= throttle
        assert live <= 64
        live -= min(live, ended)
        if released == total and live == 0:
            break
    assert released == total


def test_dependency_verdicts() -> None:
    running, ok, bad = JobStatus("running"), JobStatus("ended", True), JobStatus("ended")
    assert judge("ok", running) == WAIT
    assert judge("ok", ok) == MET and judge("ok", bad) == NEVER
    assert judge("notok", ok) == NEVER and judge("notok", bad) == MET
    assert judge("any", ok) == MET and judge("any", bad) == MET
    assert judge("any", None) == NEVER
    verdict, _ = judge_all([("ok", "a"), ("any", "b")], {"a": ok, "b": running})
    assert verdict == WAIT
    verdict, _ = judge_all([("ok", "a"), ("ok", "b")], {"a": bad, "b": running})
    assert verdict == NEVER


def test_parse_after() -> None:
    deps = parse_after(["ok:a,any:b", "c", "afternotok:d"])
    assert [d.text() for d in deps] == ["ok:a", "any:b", "ok:c", "notok:d"]
    for bad in ("maybe:a", "ok:", "ok:a b"):
        with pytest.raises(ValidationError) as info:
            parse_after([bad])
        assert info.value.field == "after"


@given(st.dictionaries(st.integers(0, 8), st.lists(st.integers(0, 8), max_size=3), max_size=9))
def test_find_cycle_matches_a_topological_sort(graph: dict[int, list[int]]) -> None:
    edges = {str(k): [str(v) for v in vs] for k, vs in graph.items()}
    cycle = find_cycle(edges)
    # Kahn's algorithm: acyclic iff every node can be removed.
    nodes = set(edges) | {v for vs in edges.values() for v in vs}
    indegree = dict.fromkeys(nodes, 0)
    for vs in edges.values():
        for v in vs:
            indegree[v] += 1
    ready = [n for n, d in indegree.items() if d == 0]
    removed = 0
    while ready:
        n = ready.pop()
        removed += 1
        for v in edges.get(n, []):
            indegree[v] -= 1
            if indegree[v] == 0:
                ready.append(v)
    assert (cycle is None) == (removed == len(nodes))
    if cycle is not None:
        assert cycle[0] == cycle[-1]
        assert all(b in edges[a] for a, b in itertools.pairwise(cycle))


def test_checkpoint_signal_is_validated_and_normalised() -> None:
    spec = build_job_spec(name="j", image="busybox", checkpoint_signal="usr2")
    assert spec.checkpoint_signal == "SIGUSR2"
    assert JobSpec.from_dict(spec.to_dict()).checkpoint_signal == "SIGUSR2"
    assert build_job_spec(name="j", image="busybox").checkpoint_signal == ""
    with pytest.raises(ValidationError) as bad:
        build_job_spec(name="j", image="busybox", checkpoint_signal="SIGKILL")
    assert bad.value.field == "checkpoint_signal"
    with pytest.raises(ValidationError) as taken:
        build_job_spec(
            name="j", image="busybox", checkpoint_signal="USR1", mounts=["v:/dockyard/checkpoint"]
        )
    assert taken.value.field == "mounts"


def test_a_desired_entry_carries_its_stop_signal() -> None:
    entry = DesiredEntry("t", "busybox", 100, 1000, stop_signal="SIGUSR1", desired="stop")
    assert DesiredEntry.decode(entry.encode()).stop_signal == "SIGUSR1"
    plain = DesiredEntry("t", "busybox", 100, 1000)
    assert "stop_signal" not in plain.encode()
    assert DesiredEntry.decode(plain.encode()).stop_signal == ""


def test_a_shared_checkpoint_root_replaces_only_checkpoint_volumes(tmp_path: Path) -> None:
    reconciler = Reconciler(SimDriver(), "n1", lambda _: None, LogShipper(lambda _: None))
    reconciler.checkpoint_root = tmp_path
    ckpt = Mount("ckpt-w1-3", "/dockyard/checkpoint", kind="volume")
    moved = reconciler._shared_checkpoint("alice", ckpt)
    assert moved == Mount(str(tmp_path / "alice" / "ckpt-w1-3"), "/dockyard/checkpoint")
    assert (tmp_path / "alice" / "ckpt-w1-3").is_dir()
    other = Mount("data", "/data", kind="volume")
    assert reconciler._shared_checkpoint("alice", other) == other
    assert reconciler._shared_checkpoint("..", ckpt) == ckpt  # never a path out of the root
    reconciler.checkpoint_root = None
    assert reconciler._shared_checkpoint("alice", ckpt) == ckpt

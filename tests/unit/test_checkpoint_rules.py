"""core/checkpoints: which checkpoints are over for good (pure)."""

from __future__ import annotations

from dockyard.core.checkpoints import CheckpointKey, JobFacts, over, parse_key


def key(text: str) -> CheckpointKey:
    parsed = parse_key(text)
    assert parsed is not None, text
    return parsed


def test_keys_parse_only_in_their_own_shape() -> None:
    assert key("u1/ckpt-w1") == CheckpointKey("u1", "w1", None)
    assert key("u1/ckpt-w1-3") == CheckpointKey("u1", "w1", 3)
    assert key("u1/ckpt-w1-3").key == "u1/ckpt-w1-3"
    for bad in ("u1/ckpt-", "../ckpt-w1", "u1/../ckpt-w1", "u1/w1", "u1/ckpt-w1/x", "ckpt-w1"):
        assert parse_key(bad) is None, bad


def test_a_job_with_a_live_attempt_keeps_its_checkpoint() -> None:
    keys = [key("u1/ckpt-w1"), key("u1/ckpt-w2")]
    jobs = {"w1": JobFacts("u1"), "w2": JobFacts("u1")}
    done = over(keys, jobs, users={"u1"}, live={("w1", None)})
    assert [k.workload_id for k in done] == ["w2"]


def test_array_elements_go_one_by_one_and_a_gang_as_a_whole() -> None:
    arr = [key("u1/ckpt-a-0"), key("u1/ckpt-a-1")]
    gang = [key("u1/ckpt-g-0"), key("u1/ckpt-g-1")]
    facts = {"a": JobFacts("u1"), "g": JobFacts("u1", gang=True)}
    done = over(arr + gang, facts, users={"u1"}, live={("a", 1), ("g", 1)})
    assert [k.key for k in done] == ["u1/ckpt-a-0"]  # rank 0 of the gang waits for rank 1


def test_unknown_workloads_go_only_when_their_owner_is_ours() -> None:
    keys = [key("u1/ckpt-gone"), key("other/ckpt-gone2")]
    done = over(keys, {}, users={"u1"}, live=set())
    assert [k.key for k in done] == ["u1/ckpt-gone"]  # another cluster's is never judged


def test_a_checkpoint_of_another_owner_than_its_workload_is_left_alone() -> None:
    done = over([key("u2/ckpt-w1")], {"w1": JobFacts("u1")}, users={"u1", "u2"}, live=set())
    assert done == []


def test_a_service_checkpoint_goes_once_it_is_removed_and_its_replicas_ended() -> None:
    k = [key("u1/ckpt-s1")]
    alive = JobFacts("u1", kind="service")
    removed = JobFacts("u1", kind="service", deleted=True)
    assert over(k, {"s1": alive}, {"u1"}, set()) == []
    assert over(k, {"s1": removed}, {"u1"}, {("s1", None)}) == []
    assert over(k, {"s1": removed}, {"u1"}, set()) == k

"""Restart and reschedule decisions (core/policy.py): pure, so tested exhaustively here."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.core.errors import ValidationError
from dockyard.core.policy import Attempt, RestartMode, RestartPolicy, decide
from dockyard.core.states import TaskState

FAILED = Attempt(TaskState.FAILED, "exit_nonzero", ran_for_s=0.5)
OK = Attempt(TaskState.SUCCEEDED, "exit_zero", ran_for_s=0.5)


def lost(at: float) -> Attempt:
    return Attempt(TaskState.LOST, "node_lost", ran_for_s=10, ended_at=at)


def test_never_on_failure_always() -> None:
    assert not decide(RestartPolicy(), [FAILED]).replace
    on_failure = RestartPolicy(mode=RestartMode.ON_FAILURE)
    assert decide(on_failure, [FAILED]).replace and not decide(on_failure, [OK]).replace
    assert decide(RestartPolicy(mode=RestartMode.ALWAYS), [OK]).replace


def test_owner_kill_and_expiry_are_never_replaced() -> None:
    always = RestartPolicy(mode=RestartMode.ALWAYS)
    for state in (TaskState.KILLED, TaskState.EXPIRED):
        assert not decide(always, [Attempt(state, "killed", 1.0)]).replace


def test_crash_loop_back_off_doubles_to_the_cap_and_resets_after_a_long_run() -> None:
    policy = RestartPolicy(mode=RestartMode.ON_FAILURE, initial_delay_s=1, max_delay_s=8)
    delays = [decide(policy, [FAILED] * n).delay_s for n in range(1, 7)]
    assert delays == [1, 2, 4, 8, 8, 8]
    long_run = Attempt(TaskState.FAILED, "exit_nonzero", ran_for_s=3600)
    assert decide(policy, [FAILED, FAILED, FAILED, long_run]).delay_s == 1


def test_max_attempts_bounds_restarts() -> None:
    policy = RestartPolicy(mode=RestartMode.ON_FAILURE, max_attempts=2)
    assert decide(policy, [FAILED, FAILED]).replace
    assert not decide(policy, [FAILED, FAILED, FAILED]).replace


def test_lost_tasks_are_replaced_at_once_up_to_the_attempts_per_interval() -> None:
    policy = RestartPolicy()  # never restarts, but reschedules: the node failed, not the task
    assert decide(policy, [lost(1000)]).delay_s == 0
    history = [lost(1000), lost(1100), lost(1200)]
    assert decide(policy, history).replace
    assert not decide(policy, [*history, lost(1300)]).replace
    # outside the interval the old losses no longer count
    assert decide(policy, [*history, lost(1000 + 3600 + 1)]).replace


def test_reschedule_delay_is_exponential_with_a_cap() -> None:
    policy = RestartPolicy(reschedule_attempts=10, reschedule_delay_s=5, reschedule_max_delay_s=30)
    delays = [decide(policy, [lost(t) for t in range(n)]).delay_s for n in range(1, 6)]
    assert delays == [5, 10, 20, 30, 30]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"mode": "sometimes"}, "restart"),
        ({"max_attempts": -1}, "restart.max_attempts"),
        ({"initial_delay_s": 0}, "restart.initial_delay_s"),
        ({"reschedule_attempts": -1}, "restart.reschedule_attempts"),
        ({"reschedule_interval_s": 0}, "restart.reschedule_interval_s"),
        ({"reschedule_delay_s": 600, "reschedule_max_delay_s": 60}, "restart.reschedule_delay_s"),
    ],
)
def test_bad_policies_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        RestartPolicy.from_dict(data)
    assert info.value.field == field


@given(
    st.lists(
        st.tuples(st.sampled_from(list(TaskState)), st.floats(0, 1e5), st.floats(0, 1e6)),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from(list(RestartMode)),
)
def test_delays_are_bounded_and_round_trip(
    raw: list[tuple[TaskState, float, float]], mode: RestartMode
) -> None:
    policy = RestartPolicy(mode=mode, max_delay_s=60, reschedule_delay_s=1)
    assert RestartPolicy.from_dict(policy.to_dict()) == policy
    history = [Attempt(state, "x", ran, ended_at=at) for state, ran, at in raw]
    decision = decide(policy, history)
    assert 0 <= decision.delay_s <= max(policy.max_delay_s, policy.reschedule_max_delay_s)
    if not decision.replace:
        assert decision.delay_s == 0


_ATTEMPTS = st.builds(
    Attempt,
    st.sampled_from(
        [TaskState.SUCCEEDED, TaskState.FAILED, TaskState.LOST, TaskState.KILLED, TaskState.EXPIRED]
    ),
    st.sampled_from(["exit_zero", "exit_nonzero", "node_lost", "node_drained", "killed"]),
    st.floats(0, 7200),
    st.sampled_from(["", "node_drained"]),
    st.floats(0, 1e4),
)


@given(
    mode=st.sampled_from(list(RestartMode)),
    max_attempts=st.none() | st.integers(0, 5),
    reschedule_attempts=st.integers(0, 5),
    earlier=st.lists(_ATTEMPTS, max_size=8),
    last=_ATTEMPTS,
)
def test_a_last_attempt_refused_alone_is_refused_with_any_history(
    mode: RestartMode,
    max_attempts: int | None,
    reschedule_attempts: int,
    earlier: list[Attempt],
    last: Attempt,
) -> None:
    """The server skips reading a job's history when the last attempt alone gets no
    replacement (server/lifecycle.follow_up): more history must never turn a no into
    a yes."""
    policy = RestartPolicy(
        mode=mode, max_attempts=max_attempts, reschedule_attempts=reschedule_attempts
    )
    if not decide(policy, [last]).replace:
        assert not decide(policy, [*earlier, last]).replace

"""The pure service planner: replicas, back-off, unhealthy restarts, rolling updates, reverts."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.core.rollout import (
    MAX_BACKOFF_S,
    STOP_SCALED_DOWN,
    STOP_SERVICE_REMOVED,
    STOP_UNHEALTHY,
    STOP_UPDATED,
    Plan,
    Replica,
    Rollout,
    RolloutStatus,
    ended_on_its_own,
    plan,
)
from dockyard.core.services import Health, UpdateConfig, UpdateOrder
from dockyard.core.states import TaskState

NOW = 1000.0
_ids = itertools.count()


def rep(
    version: int = 1,
    state: TaskState = TaskState.RUNNING,
    health: Health = Health.HEALTHY,
    desired_run: bool = True,
    created_at: float = NOW - 100,
    finished_at: float | None = None,
    stop_reason: str = "",
) -> Replica:
    return Replica(
        task_id=f"t{next(_ids)}",
        version=version,
        state=state,
        desired_run=desired_run,
        health=health,
        created_at=created_at,
        finished_at=finished_at,
        stop_reason=stop_reason,
    )


def step(replicas: list[Replica], **kw: object) -> Plan:
    args: dict[str, object] = {
        "version": 1,
        "replicas_wanted": 3,
        "checked": True,
        "update": UpdateConfig(),
        "rollout": Rollout(),
        "now": NOW,
        "can_revert": False,
    }
    args.update(kw)
    return plan(replicas=replicas, **args)  # type: ignore[arg-type]


def test_starts_missing_replicas_and_scales_down_the_unready_first() -> None:
    assert step([rep(), rep(), rep()]).idle  # at its replicas: nothing to write
    result = step([rep()])
    assert result.start == 2 and result.stop == [] and result.delay_s == 0
    ready_one, starting = rep(), rep(health=Health.STARTING, created_at=NOW - 1)
    result = step([ready_one, starting, rep(), rep()], replicas_wanted=3)
    assert result.stop == [(starting.task_id, STOP_SCALED_DOWN)]


def test_crash_loop_backs_off_doubling_to_a_cap() -> None:
    crashed = [
        rep(state=TaskState.FAILED, finished_at=NOW - 5, health=Health.NONE) for _ in range(3)
    ]
    result = step(crashed, replicas_wanted=1)
    assert result.start == 1 and result.delay_s == 4.0
    many = [rep(state=TaskState.FAILED, finished_at=NOW - 1) for _ in range(12)]
    assert step(many, replicas_wanted=1).delay_s == MAX_BACKOFF_S
    # Stops the controller asked for are not failures.
    scaled = [rep(state=TaskState.KILLED, finished_at=NOW - 1, stop_reason=STOP_UPDATED)]
    assert step(scaled, replicas_wanted=1).delay_s == 0


def test_unhealthy_replica_is_stopped_and_replaced() -> None:
    sick = rep(health=Health.UNHEALTHY)
    result = step([rep(), rep(), sick])
    assert result.stop == [(sick.task_id, STOP_UNHEALTHY)]
    assert result.start == 1


def test_removed_service_stops_everything_active() -> None:
    live, ended = rep(), rep(state=TaskState.FAILED, finished_at=NOW - 1)
    result = step([live, ended], removed=True)
    assert result.stop == [(live.task_id, STOP_SERVICE_REMOVED)]
    assert result.start == 0


def updating(started: float = NOW - 10) -> Rollout:
    return Rollout(RolloutStatus.UPDATING, 1, 2, started, "")


def test_start_first_keeps_capacity_and_respects_max_parallel() -> None:
    old = [rep(version=1) for _ in range(3)]
    result = step(old, version=2, rollout=updating(), update=UpdateConfig(max_parallel=1))
    assert result.start == 1 and result.stop == []
    new_starting = rep(version=2, health=Health.STARTING, created_at=NOW - 2)
    result = step([*old, new_starting], version=2, rollout=updating())
    assert result.start == 0 and result.stop == []
    new_ready = rep(version=2, created_at=NOW - 2)
    result = step([*old, new_ready], version=2, rollout=updating())
    assert result.start == 1
    assert len(result.stop) == 1 and result.stop[0][1] == STOP_UPDATED


def test_stop_first_stops_before_starting() -> None:
    old = [rep(version=1) for _ in range(3)]
    cfg = UpdateConfig(max_parallel=2, order=UpdateOrder.STOP_FIRST)
    result = step(old, version=2, rollout=updating(), update=cfg)
    assert len(result.stop) == 2 and result.start == 2


def test_rollout_completes_when_only_ready_new_replicas_remain() -> None:
    new = [rep(version=2, created_at=NOW - 5) for _ in range(3)]
    result = step(new, version=2, rollout=updating())
    assert result.rollout is not None and result.rollout.status == RolloutStatus.COMPLETED


def test_failed_new_replica_reverts_or_holds() -> None:
    old = [rep(version=1) for _ in range(3)]
    crashed = rep(version=2, state=TaskState.FAILED, finished_at=NOW - 1, created_at=NOW - 3)
    result = step([*old, crashed], version=2, rollout=updating(), can_revert=True)
    assert (
        result.revert
        and result.rollout is not None
        and result.rollout.status == RolloutStatus.REVERTING
    )
    assert result.start == 0
    held = step(
        [*old, crashed],
        version=2,
        rollout=updating(),
        can_revert=True,
        update=UpdateConfig(auto_revert=False),
    )
    assert (
        not held.revert and held.rollout is not None and held.rollout.status == RolloutStatus.FAILED
    )
    # Held: the old version keeps serving, nothing new starts.
    after = step([*old, crashed], version=2, rollout=held.rollout)
    assert after.start == 0 and after.stop == []


def test_new_replica_not_ready_by_the_deadline_fails_the_rollout() -> None:
    old = [rep(version=1) for _ in range(2)]
    slow = rep(version=2, health=Health.STARTING, created_at=NOW - 61)
    result = step(
        [*old, slow], version=2, rollout=updating(NOW - 70), can_revert=True, replicas_wanted=2
    )
    assert result.revert
    within = rep(version=2, health=Health.STARTING, created_at=NOW - 30)
    ok = step([*old, within], version=2, rollout=updating(NOW - 70), replicas_wanted=2)
    assert not ok.revert and ok.rollout is None


@settings(max_examples=200, deadline=None)
@given(
    wanted=st.integers(0, 6),
    parallel=st.integers(1, 4),
    stop_first=st.booleans(),
    old_n=st.integers(0, 6),
    new_ready=st.integers(0, 6),
    new_starting=st.integers(0, 6),
)
def test_rolling_never_exceeds_its_bounds(
    wanted: int, parallel: int, stop_first: bool, old_n: int, new_ready: int, new_starting: int
) -> None:
    cfg = UpdateConfig(
        max_parallel=parallel,
        order=UpdateOrder.STOP_FIRST if stop_first else UpdateOrder.START_FIRST,
    )
    old = [rep(version=1) for _ in range(old_n)]
    ready_new = [rep(version=2, created_at=NOW - 1) for _ in range(new_ready)]
    starting = [
        rep(version=2, health=Health.STARTING, created_at=NOW - 1) for _ in range(new_starting)
    ]
    result = step(
        [*old, *ready_new, *starting],
        version=2,
        rollout=updating(),
        update=cfg,
        replicas_wanted=wanted,
    )
    in_progress = new_starting + result.start
    if old:
        # At most max_parallel new replicas in progress once this step is applied.
        assert result.start == 0 or in_progress <= parallel
        stopped_old = {t for t, why in result.stop if why == STOP_UPDATED}
        assert stopped_old <= {r.task_id for r in old}
        if not stop_first:
            # start-first: ready replicas never drop below what was ready (capped at wanted).
            ready_after = new_ready + old_n - len(stopped_old)
            assert ready_after >= min(wanted, new_ready + old_n)
    # Never more new replicas than wanted, counting those already started.
    assert result.start <= max(0, wanted - new_ready - new_starting)


def test_a_run_once_service_that_ran_starts_nothing_more() -> None:
    """``run_once`` (Compose's one-shot steps): once its replica of this version ended
    on its own, with exit 0 or not, the planner replaces it no more; before, and for
    a replica the controller stopped, it starts as usual."""
    succeeded = rep(state=TaskState.SUCCEEDED, finished_at=NOW - 1)
    failed = rep(state=TaskState.FAILED, finished_at=NOW - 1)
    assert step([], replicas_wanted=1).start == 1
    assert step([succeeded], replicas_wanted=1).start == 1  # an ordinary service restarts
    assert step([succeeded], replicas_wanted=1, ran=True).start == 0
    assert step([failed], replicas_wanted=1, ran=True).start == 0
    assert ended_on_its_own(succeeded) and ended_on_its_own(failed)
    scaled = rep(state=TaskState.KILLED, finished_at=NOW - 1, stop_reason=STOP_SCALED_DOWN)
    assert not ended_on_its_own(scaled)
    assert not ended_on_its_own(rep())

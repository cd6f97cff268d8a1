"""What a service needs next: replicas to start and stop, rollouts and reverts. Pure.

The service controller (``server/services.py``) calls :func:`plan` for each
service with its replicas as they are and applies the :class:`Plan`; calling it
again with the same input gives the same plan, so the controller is
level-triggered like the agent's reconciler.

Versions: every change of a service's containers makes a new spec version.
Replicas of older versions are replaced under the service's
:class:`UpdateConfig`. A new-version replica that fails (ends, or turns
unhealthy) or is not ready ``deadline_s`` after it was created fails the
rollout: with ``auto_revert`` the previous spec comes back as a newer version
(``revert``), which then rolls out the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dockyard.core.services import Health, UpdateConfig, UpdateOrder
from dockyard.core.states import TaskState

#: Crash-loop back-off of a service's replicas: 1 s doubling to this cap.
MAX_BACKOFF_S = 30.0
#: Failures older than this no longer lengthen the back-off.
BACKOFF_WINDOW_S = 120.0

# Stop reasons the controller gives (Task.stop_reason).
STOP_UNHEALTHY = "unhealthy"
STOP_UPDATED = "updated"
STOP_SCALED_DOWN = "scaled_down"
STOP_SERVICE_REMOVED = "service_removed"
CONTROLLER_STOPS = frozenset({STOP_UPDATED, STOP_SCALED_DOWN, STOP_SERVICE_REMOVED})


class RolloutStatus(StrEnum):
    STABLE = "stable"  # nothing to roll out
    UPDATING = "updating"
    COMPLETED = "completed"
    FAILED = "failed"  # failed without auto-revert: progress stops
    REVERTING = "reverting"
    REVERTED = "reverted"


@dataclass(frozen=True, slots=True)
class Replica:
    """One task of a service, as the controller sees it."""

    task_id: str
    version: int
    state: TaskState
    desired_run: bool
    health: Health
    created_at: float
    finished_at: float | None = None
    stop_reason: str = ""
    reason: str = ""

    @property
    def active(self) -> bool:
        """Counts toward the replicas: not ended and not asked to stop."""
        return self.desired_run and not self.state.terminal


@dataclass(frozen=True, slots=True)
class Rollout:
    """A service's rollout state (stored as JSON on the workload)."""

    status: RolloutStatus = RolloutStatus.STABLE
    from_version: int = 0
    to_version: int = 0
    started_at: float = 0.0
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "started_at": self.started_at,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Rollout:
        data = data or {}
        return cls(
            status=RolloutStatus(str(data.get("status") or RolloutStatus.STABLE)),
            from_version=int(data.get("from_version") or 0),
            to_version=int(data.get("to_version") or 0),
            started_at=float(data.get("started_at") or 0.0),
            message=str(data.get("message") or ""),
        )

    @property
    def in_progress(self) -> bool:
        return self.status in (RolloutStatus.UPDATING, RolloutStatus.REVERTING)


@dataclass(slots=True)
class Plan:
    """What to do now. ``start`` new replicas of ``version``, not before ``delay_s``."""

    version: int
    start: int = 0
    delay_s: float = 0.0
    stop: list[tuple[str, str]] = field(default_factory=list)  # (task id, stop reason)
    revert: bool = False
    rollout: Rollout | None = None  # a changed rollout state to store
    events: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)

    @property
    def idle(self) -> bool:
        """Nothing to write: the service is where it should be."""
        return not (self.start or self.stop or self.revert or self.rollout or self.events)


def ready(replica: Replica, checked: bool) -> bool:
    """Running and, when the service has a health check, healthy."""
    if replica.state != TaskState.RUNNING or not replica.desired_run:
        return False
    return replica.health == Health.HEALTHY if checked else True


def ended_on_its_own(replica: Replica) -> bool:
    """A replica that ended by itself (its command exited, or it was lost), not one
    the controller stopped."""
    return (
        replica.state.terminal
        and replica.stop_reason not in CONTROLLER_STOPS
        and replica.stop_reason != STOP_UNHEALTHY
    )


def backoff(replicas: Sequence[Replica], version: int, now: float) -> float:
    """Delay before starting a replica: doubles with each recent failure of ``version``."""
    failures = sum(
        1
        for r in replicas
        if r.version == version
        and r.state.terminal
        and r.stop_reason not in CONTROLLER_STOPS
        and r.state != TaskState.SUCCEEDED
        and (r.finished_at or 0.0) > now - BACKOFF_WINDOW_S
    )
    if failures == 0:
        return 0.0
    return float(min(MAX_BACKOFF_S, 2.0 ** (failures - 1)))


def plan(
    *,
    version: int,
    replicas_wanted: int,
    checked: bool,
    update: UpdateConfig,
    rollout: Rollout,
    replicas: Sequence[Replica],
    now: float,
    can_revert: bool,
    removed: bool = False,
    ran: bool = False,
) -> Plan:
    """Decide the next step for one service (see the module docstring). ``ran``: a
    run-once service whose replica of this version ended on its own (exit 0 or not):
    nothing more is started."""
    result = Plan(version=version)
    if removed:
        result.stop = [(r.task_id, STOP_SERVICE_REMOVED) for r in replicas if r.active]
        return result

    # Unhealthy replicas are restarted: stop them; the count below replaces them.
    for r in replicas:
        if r.active and r.health == Health.UNHEALTHY:
            result.stop.append((r.task_id, STOP_UNHEALTHY))
    stopping = {tid for tid, _ in result.stop}
    live = [r for r in replicas if r.active and r.task_id not in stopping]
    new = [r for r in live if r.version == version]
    old = [r for r in live if r.version != version]
    new_ready = [r for r in new if ready(r, checked)]

    why = (
        _failed(replicas, version, rollout, update, checked, now)
        if rollout.status == RolloutStatus.UPDATING
        else ""
    )
    if why:
        if update.auto_revert and can_revert:
            result.revert = True
            result.rollout = Rollout(
                RolloutStatus.REVERTING, version, version + 1, now, f"reverting: {why}"
            )
            result.events.append(("rollout_reverting", f"version {version} failed: {why}"))
            return result
        result.rollout = Rollout(
            RolloutStatus.FAILED, rollout.from_version, version, rollout.started_at, why
        )
        result.events.append(("rollout_failed", f"version {version} failed: {why}"))
        return result
    if rollout.status == RolloutStatus.FAILED:
        # Hold: keep what runs, replace nothing of the failed version.
        return result

    if old and rollout.in_progress:
        _roll(result, update, replicas_wanted, new, old, new_ready, replicas, now)
        return result
    if old and not rollout.in_progress:
        # Old replicas without a rollout (e.g. a scale during a held failure): retire them.
        result.stop += [(r.task_id, STOP_UPDATED) for r in old]

    # Steady state: exactly ``replicas_wanted`` of the current version.
    if len(new) < replicas_wanted and not ran:
        result.start = replicas_wanted - len(new)
        result.delay_s = backoff(replicas, version, now)
    elif len(new) > replicas_wanted:
        extra = sorted(new, key=lambda r: (ready(r, checked), -r.created_at))
        result.stop += [(r.task_id, STOP_SCALED_DOWN) for r in extra[: len(new) - replicas_wanted]]
    if rollout.in_progress and not old and len(new_ready) >= replicas_wanted:
        done = (
            RolloutStatus.REVERTED
            if rollout.status == RolloutStatus.REVERTING
            else RolloutStatus.COMPLETED
        )
        result.rollout = Rollout(
            done, rollout.from_version, version, rollout.started_at, f"version {version} is live"
        )
        result.events.append((f"rollout_{done.value}", f"version {version} is live"))
    return result


def _roll(
    result: Plan,
    update: UpdateConfig,
    wanted: int,
    new: list[Replica],
    old: list[Replica],
    new_ready: list[Replica],
    replicas: Sequence[Replica],
    now: float,
) -> None:
    """One step of a rolling update (at most ``max_parallel`` new replicas in progress)."""
    budget = update.max_parallel - (len(new) - len(new_ready))
    # Old replicas go first when they are not ready anyway, then the oldest.
    retire = sorted(old, key=lambda r: (r.state == TaskState.RUNNING, r.created_at))
    if update.order == UpdateOrder.START_FIRST:
        start = max(0, min(budget, wanted - len(new)))
        # Keep ``wanted`` serving: stop an old one for each new one that is ready.
        surplus = max(0, len(new_ready) + len(old) - wanted)
        result.stop += [(r.task_id, STOP_UPDATED) for r in retire[:surplus]]
    else:
        stop_n = min(max(budget, 0), len(old)) if len(new) + len(old) >= wanted else 0
        result.stop += [(r.task_id, STOP_UPDATED) for r in retire[:stop_n]]
        start = max(0, min(budget, wanted - len(new) - (len(old) - stop_n)))
    result.start = start
    result.delay_s = backoff(replicas, result.version, now) if start else 0.0


def _failed(
    replicas: Sequence[Replica],
    version: int,
    rollout: Rollout,
    update: UpdateConfig,
    checked: bool,
    now: float,
) -> str:
    """Why the rollout to ``version`` failed, or "" if it has not."""
    for r in replicas:
        if r.version != version or r.created_at < rollout.started_at:
            continue
        if r.health == Health.UNHEALTHY:
            return f"replica {r.task_id} failed its health checks"
        if (
            r.state.terminal
            and r.stop_reason not in CONTROLLER_STOPS
            and r.stop_reason != STOP_UNHEALTHY
        ):
            return f"replica {r.task_id} ended: {r.state} ({r.reason})"
        if r.active and not ready(r, checked) and now - r.created_at > update.deadline_s:
            return f"replica {r.task_id} not ready within {update.deadline_s:g}s"
    return ""

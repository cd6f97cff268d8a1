"""Task states, the transitions between them and the reasons for failures."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from dockyard.core.errors import InvalidTransition


class TaskState(StrEnum):
    """Lifecycle of a task (one container, one attempt, on one node)."""

    PENDING = "pending"
    ASSIGNED = "assigned"
    PULLING = "pulling"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"
    LOST = "lost"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def rank(self) -> int:
        """Position in the forward order; terminal states share the last rank."""
        return _RANK[self]


TERMINAL_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.KILLED, TaskState.LOST, TaskState.EXPIRED}
)
ACTIVE_STATES = frozenset(set(TaskState) - TERMINAL_STATES)
#: States in which a task holds resources on its node.
PLACED_STATES = frozenset(
    {TaskState.ASSIGNED, TaskState.PULLING, TaskState.STARTING, TaskState.RUNNING}
)

_RANK = {
    TaskState.PENDING: 0,
    TaskState.ASSIGNED: 1,
    TaskState.PULLING: 2,
    TaskState.STARTING: 3,
    TaskState.RUNNING: 4,
    **dict.fromkeys(TERMINAL_STATES, 5),
}


class DesiredState(StrEnum):
    """What the server wants of a task."""

    RUN = "run"
    STOP = "stop"


class Reason:
    """Machine-readable reasons attached to task state changes and events."""

    EXIT_ZERO = "exit_zero"
    EXIT_NONZERO = "exit_nonzero"
    OOM_KILLED = "oom_killed"
    KILLED = "killed"
    FORCED_KILL = "forced_kill"
    IMAGE_NOT_FOUND = "image_not_found"
    IMAGE_PULL_FAILED = "image_pull_failed"
    CREATE_FAILED = "create_failed"
    START_FAILED = "start_failed"
    NODE_LOST = "node_lost"
    CONTAINER_VANISHED = "container_vanished"
    MAX_RUNTIME_EXCEEDED = "max_runtime_exceeded"
    NODE_DRAINED = "node_drained"
    BACKOFF = "backoff"
    RESCHEDULED = "rescheduled"
    SUBMITTED = "submitted"
    PLACED = "placed"
    UNSCHEDULABLE = "unschedulable"
    KILL_REQUESTED = "kill_requested"
    ADOPTED = "adopted"
    # Batch (issue 22): held until its dependencies are met; failed because one can
    # never be; an array element was released.
    WAITING_DEPENDENCY = "waiting_dependency"
    DEPENDENCY_NEVER_SATISFIED = "dependency_never_satisfied"
    #: Stopped to make room for more important work; requeued as a new attempt.
    PREEMPTED = "preempted"
    #: A gang member ended (not by succeeding): the rest of its gang is stopped.
    GANG_MEMBER_ENDED = "gang_member_ended"


def can_transition(current: TaskState, new: TaskState) -> bool:
    """True when ``current -> new`` moves the task forward.

    Reports may skip intermediate states (a fast container can go from
    ``assigned`` straight to ``running``), but never go back and never leave a
    terminal state.
    """
    if current.terminal:
        return False
    if new.terminal:
        return True
    return new.rank > current.rank


def check_transition(current: TaskState, new: TaskState) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> new`` is allowed."""
    if not can_transition(current, new):
        raise InvalidTransition(f"task cannot go from {current} to {new}")


def outcome(exit_code: int | None, oom_killed: bool, stop_requested: bool) -> tuple[TaskState, str]:
    """Decide the terminal state and reason of an exited container.

    ``oom_killed`` must come from Docker's OOMKilled flag, never be guessed
    from exit code 137.
    """
    if stop_requested:
        return TaskState.KILLED, Reason.KILLED
    if oom_killed:
        return TaskState.FAILED, Reason.OOM_KILLED
    if exit_code == 0:
        return TaskState.SUCCEEDED, Reason.EXIT_ZERO
    return TaskState.FAILED, Reason.EXIT_NONZERO


def run_seconds(started: str | None, finished: str | None) -> float | None:
    """How long a container ran by its runtime's own clock (RFC 3339 times, Docker's
    nanoseconds allowed), or None when either is missing or unreadable. A duration
    on one clock: an agent's offset from the server cancels out."""
    start, end = _instant(started), _instant(finished)
    if start is None or end is None or end < start:
        return None
    return end - start


def _instant(text: str | None) -> float | None:
    if not text:
        return None
    head, dot, rest = text.partition(".")
    if dot:  # at most microseconds for fromisoformat; keep the zone suffix
        digits = len(rest) - len(rest.lstrip("0123456789"))
        rest = rest[: min(digits, 6)] + rest[digits:]
    try:
        return datetime.fromisoformat(head + dot + rest if dot else head).timestamp()
    except ValueError:
        return None

"""Restart and reschedule policies: what happens after a task ends. Pure.

Two situations, as in Nomad:

* **Restart** — the container itself ended (exit code, OOM). ``never`` leaves it;
  ``on-failure`` starts a new attempt after a failure; ``always`` after any end.
  Delays grow like Kubernetes' CrashLoopBackOff: ``initial * 2^(n-1)`` capped at
  ``max_delay_s``, where ``n`` counts the consecutive short runs (a run that
  lasted ``reset_after_s`` or longer resets the count). ``max_attempts`` bounds
  restarts (``None``: unbounded).
* **Reschedule** — the task was lost with its node or moved off a draining node.
  At most ``reschedule_attempts`` replacements within ``reschedule_interval_s``
  (Nomad's ``attempts``/``interval``). The k-th replacement in that window waits
  ``reschedule_delay_s * 2^(k-1)`` capped at ``reschedule_max_delay_s`` (Nomad's
  exponential ``delay``/``max_delay``). Unlike Nomad (batch: 1 attempt per 24 h,
  5 s delay; service: unlimited, 30 s doubling to 1 h), the defaults are
  3 attempts per hour with **no delay**: a task lost with its node did nothing
  wrong, and replacing it at once is the point (see ``bench/failover.py``).

A task killed by its owner, or expired at its max runtime, is never replaced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dockyard.core.errors import ValidationError
from dockyard.core.states import TaskState


class RestartMode(StrEnum):
    NEVER = "never"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"


DEFAULT_INITIAL_DELAY_S = 1.0
DEFAULT_MAX_DELAY_S = 60.0
DEFAULT_RESET_AFTER_S = 60.0
DEFAULT_RESCHEDULE_ATTEMPTS = 3
DEFAULT_RESCHEDULE_INTERVAL_S = 3600.0
DEFAULT_RESCHEDULE_DELAY_S = 0.0
DEFAULT_RESCHEDULE_MAX_DELAY_S = 300.0
#: Largest restart count and longest period a policy may name (a year).
MAX_ATTEMPTS = 1_000_000
MAX_PERIOD_S = 365 * 86400.0

#: Stop reasons (why the server asked a task to stop) that call for a replacement.
RESCHEDULE_STOP_REASONS = frozenset({"node_drained"})
#: A task stopped for this was preempted: requeued at once whatever the policy, and
#: never counted as a restart, a reschedule or a short run of the job.
PREEMPTED = "preempted"


def _number(
    data: Mapping[str, Any],
    key: str,
    default: float,
    high: float = MAX_PERIOD_S,
    *,
    whole: bool = False,
) -> float:
    """``data[key]`` (or the default) as a finite number from 0 to ``high``; else a
    ValidationError naming ``restart.<key>`` (never a TypeError or OverflowError)."""
    value = data.get(key, default)
    kind = "a whole number" if whole else "a number"
    if isinstance(value, str):  # "2.5" was taken before; stored policies may have it
        try:
            value = float(value) if len(value) <= 64 else math.nan
        except ValueError:
            raise ValidationError(f"restart.{key}", f"must be {kind}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"restart.{key}", f"must be {kind}")
    if whole and not isinstance(value, int):
        if not (math.isfinite(value) and value.is_integer()):
            raise ValidationError(f"restart.{key}", f"must be {kind}")
    if not 0 <= value <= high:  # also NaN and infinities
        raise ValidationError(f"restart.{key}", f"must be between 0 and {high:g}")
    return float(value)


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    mode: RestartMode = RestartMode.NEVER
    max_attempts: int | None = None
    initial_delay_s: float = DEFAULT_INITIAL_DELAY_S
    max_delay_s: float = DEFAULT_MAX_DELAY_S
    reset_after_s: float = DEFAULT_RESET_AFTER_S
    reschedule_attempts: int = DEFAULT_RESCHEDULE_ATTEMPTS
    reschedule_interval_s: float = DEFAULT_RESCHEDULE_INTERVAL_S
    reschedule_delay_s: float = DEFAULT_RESCHEDULE_DELAY_S
    reschedule_max_delay_s: float = DEFAULT_RESCHEDULE_MAX_DELAY_S

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "max_attempts": self.max_attempts,
            "initial_delay_s": self.initial_delay_s,
            "max_delay_s": self.max_delay_s,
            "reset_after_s": self.reset_after_s,
            "reschedule_attempts": self.reschedule_attempts,
            "reschedule_interval_s": self.reschedule_interval_s,
            "reschedule_delay_s": self.reschedule_delay_s,
            "reschedule_max_delay_s": self.reschedule_max_delay_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RestartPolicy:
        data = data or {}
        try:
            mode = RestartMode(data.get("mode", RestartMode.NEVER))
        except (TypeError, ValueError):  # also an unhashable value
            raise ValidationError(
                "restart", f"must be one of {', '.join(m.value for m in RestartMode)}"
            ) from None
        max_attempts = data.get("max_attempts")
        policy = cls(
            mode=mode,
            max_attempts=None
            if max_attempts is None
            else int(_number(data, "max_attempts", 0, MAX_ATTEMPTS, whole=True)),
            initial_delay_s=_number(data, "initial_delay_s", DEFAULT_INITIAL_DELAY_S),
            max_delay_s=_number(data, "max_delay_s", DEFAULT_MAX_DELAY_S),
            reset_after_s=_number(data, "reset_after_s", DEFAULT_RESET_AFTER_S),
            reschedule_attempts=int(
                _number(data, "reschedule_attempts", DEFAULT_RESCHEDULE_ATTEMPTS, whole=True)
            ),
            reschedule_interval_s=_number(
                data, "reschedule_interval_s", DEFAULT_RESCHEDULE_INTERVAL_S
            ),
            reschedule_delay_s=_number(data, "reschedule_delay_s", DEFAULT_RESCHEDULE_DELAY_S),
            reschedule_max_delay_s=_number(
                data, "reschedule_max_delay_s", DEFAULT_RESCHEDULE_MAX_DELAY_S
            ),
        )
        policy.validate()
        return policy

    def validate(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValidationError("restart.max_attempts", "must be 0 or more")
        if not 0 < self.initial_delay_s <= self.max_delay_s <= 86400:
            raise ValidationError(
                "restart.initial_delay_s", "need 0 < initial_delay_s <= max_delay_s <= 86400"
            )
        if self.reset_after_s < 0:
            raise ValidationError("restart.reset_after_s", "must be 0 or more")
        if not 0 <= self.reschedule_attempts <= 1000:
            raise ValidationError("restart.reschedule_attempts", "must be between 0 and 1000")
        if self.reschedule_interval_s <= 0:
            raise ValidationError("restart.reschedule_interval_s", "must be more than 0")
        if not 0 <= self.reschedule_delay_s <= self.reschedule_max_delay_s <= 86400:
            raise ValidationError(
                "restart.reschedule_delay_s",
                "need 0 <= reschedule_delay_s <= reschedule_max_delay_s <= 86400",
            )


@dataclass(frozen=True, slots=True)
class Attempt:
    """One earlier task of the same job, as the policy sees it."""

    state: TaskState
    reason: str
    ran_for_s: float
    stop_reason: str = ""
    ended_at: float = 0.0  # epoch seconds; counts reschedules inside the interval


@dataclass(frozen=True, slots=True)
class Decision:
    replace: bool
    delay_s: float = 0.0
    why: str = ""
    kind: str = ""  # "restart" or "reschedule"


def _is_reschedule(attempt: Attempt) -> bool:
    return attempt.state == TaskState.LOST or (
        attempt.state == TaskState.KILLED and attempt.stop_reason in RESCHEDULE_STOP_REASONS
    )


def _is_preempted(attempt: Attempt) -> bool:
    return attempt.state == TaskState.KILLED and attempt.stop_reason == PREEMPTED


def decide(policy: RestartPolicy, history: Sequence[Attempt]) -> Decision:
    """Decide whether the job whose attempts are ``history`` (oldest first) gets another.

    The last element is the attempt that just ended. A preempted attempt is requeued
    at once and left out of everything the policy counts (Slurm's requeue after
    preemption does not count against the job either): it did nothing wrong.
    """
    if not history:
        return Decision(False, why="no attempt")
    last = history[-1]
    if _is_preempted(last):
        return Decision(True, 0.0, "requeued after preemption", "preempted")
    number = len(history) + 1  # the next attempt's number, preempted ones included
    history = [a for a in history if not _is_preempted(a)]
    if _is_reschedule(last):
        since = last.ended_at - policy.reschedule_interval_s
        used = sum(1 for a in history if _is_reschedule(a) and a.ended_at >= since)
        if used > policy.reschedule_attempts:
            return Decision(
                False,
                why=f"reschedule attempts ({policy.reschedule_attempts} per "
                f"{policy.reschedule_interval_s:g}s) used",
            )
        delay = min(policy.reschedule_delay_s * 2 ** (used - 1), policy.reschedule_max_delay_s)
        return Decision(
            True, delay, f"replacing task lost with its node ({last.reason})", "reschedule"
        )
    if last.state in (TaskState.KILLED, TaskState.EXPIRED):
        return Decision(False, why=f"task {last.state}")
    if policy.mode == RestartMode.NEVER:
        return Decision(False, why="restart policy never")
    if last.state == TaskState.SUCCEEDED and policy.mode != RestartMode.ALWAYS:
        return Decision(False, why="succeeded")
    restarts = sum(1 for a in history if not _is_reschedule(a)) - 1
    if policy.max_attempts is not None and restarts >= policy.max_attempts:
        return Decision(False, why=f"restart attempts ({policy.max_attempts}) used")
    short_runs = 0
    for attempt in reversed(history):
        if _is_reschedule(attempt):
            continue
        if attempt.ran_for_s >= policy.reset_after_s:
            break
        short_runs += 1
    if short_runs == 0:  # the last run was long enough: start again at the initial delay
        short_runs = 1
    delay = min(policy.initial_delay_s * 2 ** (short_runs - 1), policy.max_delay_s)
    if last.state == TaskState.SUCCEEDED:
        why = f"restart policy always: restarting in {delay:g}s"
    else:
        why = f"{last.reason}: back-off {delay:g}s before attempt {number}"
    return Decision(True, delay, why, "restart")


__all__ = [
    "Attempt",
    "Decision",
    "RestartMode",
    "RestartPolicy",
    "decide",
]

"""Per-user quotas: admission of pending tasks and consumed-quota checks. Pure.

A quota (set by an admin per user) may bound, concurrently, ``max_cpu``
(cores), ``max_memory`` (bytes or ``4g``), ``max_tasks``; and, over a rolling
``period_s`` (default 30 days), ``cpu_hours``. A pending task that would go
over a concurrent bound stays pending with reason ``quota``; running tasks of a
user whose consumed CPU-hours pass the bound are stopped with ``quota_exceeded``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dockyard.core.errors import ValidationError
from dockyard.core.resources import parse_cpu, parse_memory

DEFAULT_PERIOD_S = 30 * 86400.0
#: Bounds of the counted quotas (far above any cluster) and of the period (10 years).
MAX_TASKS = 10**9
MAX_CPU_HOURS = 1e12
MAX_PERIOD_S = 10 * 365 * 86400.0
QUOTA_KEYS = ("max_cpu", "max_memory", "max_tasks", "cpu_hours", "period_s")


@dataclass(frozen=True, slots=True)
class Quota:
    max_cpu_millis: int | None = None
    max_memory_bytes: int | None = None
    max_tasks: int | None = None
    cpu_hours: float | None = None
    period_s: float = DEFAULT_PERIOD_S

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Quota:
        data = data or {}
        unknown = set(data) - set(QUOTA_KEYS)
        if unknown:
            raise ValidationError("quota", f"unknown keys: {', '.join(sorted(unknown))}")
        try:
            return cls(
                max_cpu_millis=None
                if data.get("max_cpu") is None
                else parse_cpu(data["max_cpu"], "quota.max_cpu"),
                max_memory_bytes=None
                if data.get("max_memory") is None
                else parse_memory(data["max_memory"], "quota.max_memory"),
                max_tasks=None
                if data.get("max_tasks") is None
                else int(_number(data["max_tasks"], "max_tasks", 0, MAX_TASKS, whole=True)),
                cpu_hours=None
                if data.get("cpu_hours") is None
                else _number(data["cpu_hours"], "cpu_hours", 0, MAX_CPU_HOURS),
                period_s=_number(
                    data.get("period_s", DEFAULT_PERIOD_S),
                    "period_s",
                    0,
                    MAX_PERIOD_S,
                    low_open=True,
                ),
            )
        except (TypeError, ValueError) as exc:
            raise ValidationError("quota", f"malformed quota: {exc}") from None


def _number(
    value: Any, key: str, low: float, high: float, *, whole: bool = False, low_open: bool = False
) -> float:
    """A finite number in range (a numeric string is taken), else a ValidationError
    naming ``quota.<key>``: never a TypeError or an OverflowError."""
    if isinstance(value, str):
        try:
            value = float(value) if len(value) <= 64 else math.nan
        except ValueError:
            raise ValidationError(f"quota.{key}", "must be a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"quota.{key}", "must be a number")
    if whole and not (isinstance(value, int) or (math.isfinite(value) and value.is_integer())):
        raise ValidationError(f"quota.{key}", "must be a whole number")
    if not (low < value if low_open else low <= value) or not value <= high:  # and NaN
        above = "more than" if low_open else "at least"
        raise ValidationError(f"quota.{key}", f"must be {above} {low:g} and at most {high:g}")
    return float(value)


@dataclass(slots=True)
class OwnerUsage:
    """What an owner holds now (placed tasks) and has consumed in the quota period."""

    cpu_millis: int = 0
    memory_bytes: int = 0
    tasks: int = 0
    cpu_seconds_consumed: float = 0.0


@dataclass(frozen=True, slots=True)
class Candidate:
    task_id: str
    owner_id: str
    cpu_millis: int
    memory_bytes: int


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: list[str] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)  # task id -> reason


def over_consumed(quota: Quota, usage: OwnerUsage) -> bool:
    return quota.cpu_hours is not None and usage.cpu_seconds_consumed > quota.cpu_hours * 3600


def admit(
    candidates: Sequence[Candidate],
    usage: Mapping[str, OwnerUsage],
    quotas: Mapping[str, Quota],
) -> Admission:
    """Admit candidates in order while each owner stays within their quota.

    Admitted tasks count against the owner for later candidates in the same pass.
    """
    held: dict[str, str] = {}
    admitted: list[str] = []
    running = {
        owner: OwnerUsage(u.cpu_millis, u.memory_bytes, u.tasks, u.cpu_seconds_consumed)
        for owner, u in usage.items()
    }
    for cand in candidates:
        quota = quotas.get(cand.owner_id)
        if quota is None:
            admitted.append(cand.task_id)
            continue
        now = running.setdefault(cand.owner_id, OwnerUsage())
        why = None
        if over_consumed(quota, now):
            why = f"quota: {quota.cpu_hours:g} CPU-hours used in the period"
        elif quota.max_tasks is not None and now.tasks + 1 > quota.max_tasks:
            why = f"quota: max_tasks {quota.max_tasks} reached"
        elif (
            quota.max_cpu_millis is not None
            and now.cpu_millis + cand.cpu_millis > quota.max_cpu_millis
        ):
            why = f"quota: max_cpu {quota.max_cpu_millis / 1000:g} cores reached"
        elif (
            quota.max_memory_bytes is not None
            and now.memory_bytes + cand.memory_bytes > quota.max_memory_bytes
        ):
            why = f"quota: max_memory {quota.max_memory_bytes} bytes reached"
        if why:
            held[cand.task_id] = why
            continue
        admitted.append(cand.task_id)
        now.tasks += 1
        now.cpu_millis += cand.cpu_millis
        now.memory_bytes += cand.memory_bytes
    return Admission(admitted, held)

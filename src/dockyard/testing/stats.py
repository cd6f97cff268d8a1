"""Figures benchmarks and tests report: percentiles, CPU time, the machine's CPUs
(one definition for every report)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import psutil


def percentile(values: Iterable[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = pct / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def cpu_seconds(procs: Iterable[psutil.Process]) -> float:
    """User + system CPU seconds these processes have used (all their threads)."""
    return sum(sum(p.cpu_times()[:2]) for p in procs)


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0

"""Figures benchmarks and tests report: percentiles, CPU time, the machine's CPUs
(one definition for every report)."""

from __future__ import annotations

import json
import math
import os
import time
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


def reference_ops_per_s(rounds: int = 3, ops: int = 20_000) -> float:
    """This machine's single-thread speed on a fixed pure-Python workload (best of
    ``rounds``): JSON encode/decode and dict building, the kind of work a task's
    trip through dockyard is made of. Benchmarks report it beside their rates so
    figures taken on different machines (or under different load) can be compared
    as ratios; it is not a property of dockyard."""
    best = math.inf
    for _ in range(rounds):
        started = time.perf_counter()
        for index in range(ops):
            row = {"id": f"t{index:06d}", "state": "running", "cpu": index % 7, "env": {"A": "1"}}
            json.loads(json.dumps(row))
        best = min(best, time.perf_counter() - started)
    return ops / best


def per_reference_kops(rate: float, reference: float) -> float:
    """``rate`` per thousand reference operations per second: comparable across machines."""
    return rate / (reference / 1000)

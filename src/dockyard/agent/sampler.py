"""Sampling running containers' resource use (cgroup counters via the driver)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dockyard.drivers.base import Driver
from dockyard.protocol.messages import TaskUsage, UsageSample

log = logging.getLogger(__name__)

GIB = 1024**3
DEFAULT_INTERVAL_S = 1.0


@dataclass
class _Totals:
    cpu_s: float = 0.0
    max_memory_bytes: int = 0
    memory_gib_s: float = 0.0
    last: float = 0.0


class UsageSampler:
    """Every ``interval`` seconds, sample each running container and ship the totals.

    CPU seconds come from the cgroup's cumulative counter; memory-seconds are the
    integral of sampled usage; max memory is the cgroup's peak (or the largest sample).
    """

    def __init__(
        self,
        driver: Driver,
        running: Callable[[], dict[str, str]],
        send: Callable[[tuple[UsageSample, ...]], None],
        interval: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self._driver = driver
        self._running = running
        self._send = send
        self.interval = interval
        self._lock = threading.Lock()
        self._totals: dict[str, _Totals] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def final(self, task_id: str) -> TaskUsage:
        """The totals of a task that ended (and forget it)."""
        with self._lock:
            totals = self._totals.pop(task_id, _Totals())
        return TaskUsage(totals.cpu_s, totals.max_memory_bytes, totals.memory_gib_s)

    def sample_once(self) -> None:
        batch: list[UsageSample] = []
        for task_id, container_id in self._running().items():
            usage = self._driver.usage(container_id)
            if usage is None:
                continue
            now = time.monotonic()
            with self._lock:
                totals = self._totals.setdefault(task_id, _Totals(last=now))
                totals.memory_gib_s += usage.memory_bytes / GIB * max(0.0, now - totals.last)
                totals.last = now
                totals.cpu_s = max(totals.cpu_s, usage.cpu_seconds)
                totals.max_memory_bytes = max(
                    totals.max_memory_bytes, usage.max_memory_bytes, usage.memory_bytes
                )
                batch.append(
                    UsageSample(task_id, totals.cpu_s, totals.max_memory_bytes, totals.memory_gib_s)
                )
        if batch:
            self._send(tuple(batch))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample_once()
            except Exception:
                log.exception("sampling failed")

"""A pool of daemon threads for work that blocks for a container's whole life.

Each running container has a watcher (waits for its exit) and two log followers.
Starting three threads per task was most of a hollow node's CPU, so idle threads
are reused. ``concurrent.futures.ThreadPoolExecutor`` cannot serve: its threads
are joined at interpreter exit, and a follower of a container that outlives the
agent (containers keep running across agent restarts) would keep the agent from
exiting. Work never queues behind busy threads: a new thread starts instead.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)


class Watchers:
    def __init__(self, name: str = "watch") -> None:
        self._name = name
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._idle = 0
        self._started = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` on an idle thread, or a new one; its future."""
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("watchers are shut down")
            if self._idle:
                self._idle -= 1
            else:
                self._started += 1
                threading.Thread(
                    target=self._worker, name=f"{self._name}-{self._started}", daemon=True
                ).start()
        self._work.put((future, lambda: fn(*args)))
        return future

    def shutdown(self) -> None:
        """Idle threads end; busy ones end after their work (daemons: not waited for)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, 0
        for _ in range(idle):
            self._work.put(None)

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, run = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(run())
                except BaseException as exc:  # handed to the future
                    log.exception("watcher failed")
                    future.set_exception(exc)
            with self._lock:
                if self._closed:
                    return
                self._idle += 1

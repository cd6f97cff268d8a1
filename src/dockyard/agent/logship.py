"""Batching log lines into reliable ``logs`` messages."""

from __future__ import annotations

import threading
from collections.abc import Callable

from dockyard.protocol.messages import LogLine

MAX_BATCH = 500
FLUSH_INTERVAL_S = 0.1


class LogShipper:
    """Collects ``(task, stream, seq, ts, text)`` lines and ships them in batches.

    Sequence numbers count lines from the container's start, per stream, so a
    restarted agent re-reading a container's log produces the same numbers and
    the server drops what it already has.
    """

    def __init__(self, send: Callable[[tuple[LogLine, ...]], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._batch: list[LogLine] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.flush()

    def add(self, task_id: str, stream: str, seq: int, ts: str, text: str) -> None:
        with self._lock:
            self._batch.append(LogLine(task_id, stream, seq, ts, text))
            if len(self._batch) >= MAX_BATCH:
                self._flush_locked()

    def flush(self) -> None:
        """Hand every buffered line to the connection now (in order)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self._send(tuple(batch))

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL_S):
            self.flush()

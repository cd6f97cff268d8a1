"""Batching log lines into reliable ``logs`` messages, one in flight at a time.

The server stores lines in the order they arrive, and followers read them in
that order. Were two batches in flight at once, a lost first one re-sent after
the second would be stored after it (the lossy-link test saw lines 1-4 after
5-30). So a batch waits while the previous one is unacknowledged (stop and
wait: the lines gather into the next batch meanwhile, so a slow link means
bigger batches, not fewer lines). Past ``MAX_HELD`` waiting lines (a server
that does not answer for a long time) batches go out without waiting, so
memory stays bounded; their order is then the link's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from dockyard.protocol.messages import LogLine

MAX_BATCH = 500
FLUSH_INTERVAL_S = 0.1
#: Lines held back behind an unacknowledged batch before they go out anyway.
MAX_HELD = 20 * MAX_BATCH
#: How often ``drain`` looks again while a batch waits for its ack.
DRAIN_POLL_S = 0.02


class LogShipper:
    """Collects ``(task, stream, seq, ts, text)`` lines and ships them in batches.

    Sequence numbers count lines from the container's start, per stream, so a
    restarted agent re-reading a container's log produces the same numbers and
    the server drops what it already has.
    """

    def __init__(
        self,
        send: Callable[[tuple[LogLine, ...]], str | None],
        pending: Callable[[str], bool] | None = None,
    ) -> None:
        """``send`` hands a batch to the connection and returns its message id;
        ``pending(id)`` says whether that message still waits for its ack (None:
        never wait)."""
        self._send = send
        self._pending = pending
        self._lock = threading.Lock()
        self._batch: list[LogLine] = []
        #: Ids of the batches sent and maybe not yet acknowledged.
        self._in_flight: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        with self._lock:  # everything into the connection's outbox, waiting or not
            self._in_flight.clear()
            self._pending = None
            self._flush_locked()

    def add(self, task_id: str, stream: str, seq: int, ts: str, text: str) -> None:
        with self._lock:
            self._batch.append(LogLine(task_id, stream, seq, ts, text))
            if len(self._batch) % MAX_BATCH == 0:
                self._flush_locked()

    def flush(self) -> None:
        """Hand buffered lines to the connection (in order), unless the previous
        batch is still unacknowledged."""
        with self._lock:
            self._flush_locked()

    def drain(self, timeout: float) -> bool:
        """Hand every buffered line to the connection, waiting (at most ``timeout``)
        for the batches before them to be acknowledged: a task's final status goes
        after its lines, so a ``logs`` read once it ended finds all of them. False if
        some are still held when the time is up (they follow later)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self._flush_locked()
                if not self._batch:
                    return True
            if time.monotonic() >= deadline or self._stop.wait(DRAIN_POLL_S):
                return False

    def held(self) -> int:
        """Lines waiting behind an unacknowledged batch (or for the next flush)."""
        with self._lock:
            return len(self._batch)

    def _waiting(self) -> bool:
        pending = self._pending
        if pending is None:
            return False
        self._in_flight = [i for i in self._in_flight if pending(i)]
        return bool(self._in_flight) and len(self._batch) < MAX_HELD

    def _flush_locked(self) -> None:
        while self._batch and not self._waiting():
            chunk: Sequence[LogLine] = self._batch[:MAX_BATCH]
            self._batch = self._batch[MAX_BATCH:]
            msg_id = self._send(tuple(chunk))
            if msg_id:
                self._in_flight.append(msg_id)

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL_S):
            self.flush()

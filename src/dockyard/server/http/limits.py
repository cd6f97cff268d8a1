"""Caps on what one user may hold open at once (log follows, exec sessions, event streams),
and the default request-body limit (enforced by ``guard.RequestGuard``).

Long-lived requests never hold a worker thread (they are async), but each still
costs the server a poll or a relay; a cap per user keeps one user from starving
the others, and a closed client gives its slot back at once.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from dockyard.server.errors import TooManyRequests

#: Open streams one user may hold, per kind of stream.
DEFAULT_PER_USER = 16
#: Largest request body of a route without its own limit (``server.max_body_bytes``).
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class StreamLimit:
    """Counts open streams per user; :meth:`hold` refuses one past the cap (429)."""

    def __init__(self, kind: str, per_user: int = DEFAULT_PER_USER) -> None:
        self.kind = kind
        self.per_user = per_user
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}

    def acquire(self, user_id: str) -> None:
        with self._lock:
            held = self._open.get(user_id, 0)
            if held >= self.per_user:
                raise TooManyRequests(
                    f"you already have {held} open {self.kind} (at most {self.per_user}); "
                    "close one first"
                )
            self._open[user_id] = held + 1

    def release(self, user_id: str) -> None:
        with self._lock:
            left = self._open.get(user_id, 0) - 1
            if left > 0:
                self._open[user_id] = left
            else:
                self._open.pop(user_id, None)

    def slot(self, user_id: str) -> Slot:
        """Take a slot (429 past the cap) that is given back exactly once."""
        self.acquire(user_id)
        return Slot(self, user_id)

    @contextmanager
    def hold(self, user_id: str) -> Iterator[None]:
        self.acquire(user_id)
        try:
            yield
        finally:
            self.release(user_id)

    def open(self, user_id: str) -> int:
        with self._lock:
            return self._open.get(user_id, 0)


class Slot:
    """One open stream's place under its user's cap; :meth:`release` is idempotent, so
    both the stream's own end and its collection (a stream that never started) may
    call it."""

    def __init__(self, limit: StreamLimit, user_id: str) -> None:
        self._limit = limit
        self._user_id = user_id
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            if not self._held:
                return
            self._held = False
        self._limit.release(self._user_id)

    def tie_to(self, stream: object) -> None:
        """Release when ``stream`` (a generator) is collected, started or not."""
        weakref.finalize(stream, self.release)

"""The live event stream: one poller of the events table, fanned out to every client.

However many dashboards are open, the store sees one query every
``interval`` seconds (and none while nobody listens). Each subscriber is an
asyncio queue on the HTTP server's event loop; the hub thread hands it batches
with ``call_soon_threadsafe``, already filtered by ownership (admins see every
event, users the events of their own tasks). A client too slow to keep up gets
a ``reset`` and reloads instead of making the server buffer without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from dockyard.server.loop import Loop
from dockyard.server.metrics import ServerMetrics
from dockyard.server.state.auth import Principal
from dockyard.server.state.reads import events_after, last_event_id
from dockyard.store.db import Database

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.25
BATCH = 2000
#: Batches a subscriber may have queued before it is told to reset.
MAX_QUEUED = 200

#: Put on a subscriber's queue: the client fell behind and must reload.
RESET = "reset"
#: Put on a subscriber's queue: the server is stopping.
CLOSED = "closed"


def visible(principal: Principal, row: dict[str, Any]) -> bool:
    return principal.is_admin or row.get("owner_id") == principal.user_id


def public(row: dict[str, Any]) -> dict[str, Any]:
    """The row as clients see it (owner ids stay inside the server)."""
    return {k: v for k, v in row.items() if k != "owner_id"}


@dataclass(eq=False)
class Subscriber:
    principal: Principal
    loop: asyncio.AbstractEventLoop
    start_id: int
    queue: asyncio.Queue[list[dict[str, Any]] | str] = field(default_factory=asyncio.Queue)
    overflowed: bool = False

    def deliver(self, item: list[dict[str, Any]] | str) -> None:
        """Runs on the subscriber's loop."""
        if self.overflowed:
            return
        if isinstance(item, list) and self.queue.qsize() >= MAX_QUEUED:
            self.overflowed = True
            item = RESET
        self.queue.put_nowait(item)


class EventHub(Loop):
    """Polls the events table for all live streams at once (its thread starts with the
    first subscriber)."""

    name = "event-hub"

    def __init__(
        self,
        db: Database,
        metrics: ServerMetrics | None = None,
        interval: float = POLL_INTERVAL_S,
    ) -> None:
        super().__init__(interval)
        self._db = db
        self._metrics = metrics
        self._lock = threading.Lock()
        self._subs: set[Subscriber] = set()
        self._cursor = 0
        self.polls = 0  # store reads done, for tests and benchmarks

    def latest_id(self) -> int:
        with self._db.read() as session:
            return last_event_id(session)

    def subscribe(self, principal: Principal, loop: asyncio.AbstractEventLoop) -> Subscriber:
        """Register a stream. Events with ids above ``start_id`` will reach it."""
        with self._lock:
            if self._stop.is_set():
                raise RuntimeError("event hub stopped")
            if not self._subs:
                self._cursor = self.latest_id()
            sub = Subscriber(principal=principal, loop=loop, start_id=self._cursor)
            self._subs.add(sub)
            if not self.started:
                self.start()
        if self._metrics is not None:
            self._metrics.stream_clients.inc()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            if sub not in self._subs:
                return
            self._subs.discard(sub)
        if self._metrics is not None:
            self._metrics.stream_clients.dec()

    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def stop(self) -> None:
        """End every stream and the polling thread."""
        with self._lock:
            self._stop.set()
            subs = list(self._subs)
        for sub in subs:
            self._send(sub, CLOSED)
        super().stop()

    def _send(self, sub: Subscriber, item: list[dict[str, Any]] | str) -> None:
        try:
            sub.loop.call_soon_threadsafe(sub.deliver, item)
        except RuntimeError:  # its loop is closed: the server is going away
            self.unsubscribe(sub)

    def step(self) -> None:
        self.poll()

    def poll(self) -> int:
        """Read new events once and hand them to every subscriber; returns how many."""
        with self._lock:
            subs = list(self._subs)
            cursor = self._cursor
        if not subs:
            return 0
        with self._db.read() as session:
            rows = events_after(session, cursor, BATCH)
        self.polls += 1
        if not rows:
            return 0
        with self._lock:
            self._cursor = max(self._cursor, rows[-1]["id"])
        if self._metrics is not None:
            self._metrics.events_streamed.inc(len(rows))
        for sub in subs:
            mine = [public(r) for r in rows if r["id"] > sub.start_id and visible(sub.principal, r)]
            if mine:
                self._send(sub, mine)
        if len(rows) == BATCH:
            self._wake.set()  # more are waiting: read again at once
        return len(rows)


def format_sse(event: str, data: str, event_id: int | None = None) -> str:
    """One server-sent event (``data`` must be a single line, e.g. compact JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


async def next_item(sub: Subscriber, timeout: float) -> list[dict[str, Any]] | str | None:
    """The subscriber's next batch or marker, or None after ``timeout`` seconds."""
    with contextlib.suppress(TimeoutError):
        return await asyncio.wait_for(sub.queue.get(), timeout)
    return None

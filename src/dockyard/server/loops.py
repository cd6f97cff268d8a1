"""Control loops: the scheduler and the node monitor. Each is one thread.

Both read a snapshot from the store, decide with pure code, and write the
result back in one transaction; the store stays the truth.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import select, update

from dockyard.core.resources import Resources
from dockyard.core.states import DesiredState, Reason, TaskState
from dockyard.scheduler.placement import NodeView, TaskRequest, place
from dockyard.server import nodes as node_ops
from dockyard.server.events import EventKind, record
from dockyard.server.jobs import bump_generation
from dockyard.store.db import Database
from dockyard.store.tables import Node, Task

log = logging.getLogger(__name__)

PENDING_BATCH = 2000


class Loop:
    """A thread that runs ``step`` every ``interval`` seconds or when woken."""

    name = "loop"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.step()
            except Exception:
                log.exception("%s step failed", self.name)

    def step(self) -> None:
        raise NotImplementedError


class SchedulerLoop(Loop):
    """Places pending tasks on ready nodes with enough free CPU and memory."""

    name = "scheduler"

    def __init__(self, db: Database, push: Callable[[set[str]], None], interval: float = 1.0):
        super().__init__(interval)
        self._db = db
        self._push = push

    def step(self) -> None:
        with self._db.read() as session:
            pending = list(
                session.execute(
                    select(Task.id, Task.cpu_millis, Task.memory_bytes, Task.message)
                    .where(Task.state == TaskState.PENDING, Task.desired_state == DesiredState.RUN)
                    .order_by(Task.created_at)
                    .limit(PENDING_BATCH)
                ).all()
            )
            if not pending:
                return
            allocated = node_ops.allocations(session)
            views = [
                NodeView(
                    node_id=n.id,
                    name=n.name,
                    state=n.state,
                    capacity=Resources(n.cpu_millis, n.memory_bytes),
                    allocated=Resources(*allocated.get(n.id, (0, 0))),
                )
                for n in session.scalars(select(Node).order_by(Node.id))
            ]
        requests = [
            TaskRequest(row.id, Resources(row.cpu_millis, row.memory_bytes)) for row in pending
        ]
        plan = place(requests, views)
        messages = {row.id: row.message for row in pending}
        touched: set[str] = set()
        now = time.time()
        with self._db.write() as session:
            ready = {n.id for n in session.scalars(select(Node).where(Node.state == "ready"))}
            for task_id, node_id in plan.assignments.items():
                if node_id not in ready:
                    continue
                result = session.execute(
                    update(Task)
                    .where(Task.id == task_id, Task.state == TaskState.PENDING)
                    .values(
                        state=TaskState.ASSIGNED,
                        node_id=node_id,
                        assigned_at=now,
                        reason=Reason.PLACED,
                        message="",
                    )
                )
                if result.rowcount:  # type: ignore[attr-defined]
                    task = session.get(Task, task_id)
                    if task is not None:
                        record(
                            session,
                            EventKind.TASK,
                            Reason.PLACED,
                            f"placed on {node_id}",
                            task=task,
                        )
                    touched.add(node_id)
            for node_id in touched:
                bump_generation(session, node_id)
            for task_id, why in plan.pending_reasons.items():
                if messages.get(task_id) != why:
                    session.execute(
                        update(Task)
                        .where(Task.id == task_id, Task.state == TaskState.PENDING)
                        .values(reason=Reason.UNSCHEDULABLE, message=why)
                    )
        if touched:
            self._push(touched)


class NodeMonitor(Loop):
    """Marks nodes down when their heartbeats stop, judged on this server's monotonic clock."""

    name = "node-monitor"

    def __init__(
        self,
        db: Database,
        last_seen: Callable[[], dict[str, float]],
        grace: float,
        on_change: Callable[[], None],
        interval: float = 0.25,
    ) -> None:
        super().__init__(interval)
        self._db = db
        self._last_seen = last_seen
        self._grace = grace
        self._on_change = on_change
        # Every node gets one full grace period after this server starts.
        self._started = time.monotonic()

    def step(self) -> None:
        now = time.monotonic()
        seen = self._last_seen()
        with self._db.read() as session:
            ready = list(session.scalars(select(Node.id).where(Node.state == "ready")))
        overdue = {
            node_id: now - seen.get(node_id, self._started)
            for node_id in ready
            if now - seen.get(node_id, self._started) > self._grace
        }
        if not overdue:
            return
        with self._db.write() as session:
            for node_id, silence in overdue.items():
                node = session.get(Node, node_id)
                if node is not None and node.state == "ready":
                    node_ops.mark_down(session, node, silence)
        self._on_change()

"""Control loops: the scheduler and the node monitor. Each is one thread.

Both read a snapshot from the store, decide with pure code, and write the
result back in one transaction; the store stays the truth.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dockyard.core.quota import Admission, Candidate, OwnerUsage, Quota, admit
from dockyard.core.states import PLACED_STATES, DesiredState, Reason, TaskState
from dockyard.scheduler.fairshare import FairShareConfig
from dockyard.server.control import preemption, scheduling
from dockyard.server.control.scheduling import FairShareState
from dockyard.server.loop import Loop
from dockyard.server.metrics import ServerMetrics
from dockyard.server.state import arrays, usage_history
from dockyard.server.state import nodes as node_ops
from dockyard.server.state.accounting import consumed_cpu_seconds
from dockyard.server.state.events import EventKind, record
from dockyard.server.state.jobs import request_stop
from dockyard.store.db import Database
from dockyard.store.tables import Node, Task, User

log = logging.getLogger(__name__)

PENDING_BATCH = 2000
#: How often the reaper rolls up and prunes the usage history.
HISTORY_EVERY_S = 30.0


class SchedulerLoop(Loop):
    """Places pending tasks in queue order (priority, fair share, age) on ready nodes.

    Each pass reads a snapshot, lets the pure scheduler order the queue
    (scheduler/queue.py) and place tasks (scheduler/placement.py), then writes
    the plan in one transaction, guarded so a task that stopped being pending or
    a node that stopped being ready in between is left alone. While an admin holds
    the queue locked, nothing new is placed and pending tasks say so.
    """

    name = "scheduler"

    def __init__(
        self,
        db: Database,
        push: Callable[[set[str]], None],
        interval: float = 0.25,
        metrics: ServerMetrics | None = None,
        fair_share: FairShareConfig | None = None,
    ):
        super().__init__(interval)
        self._db = db
        self._push = push
        self._metrics = metrics
        self.fair = FairShareState(fair_share or scheduling.fair_share_config())
        #: Tasks placed by the last pass, and where its time went (benchmarks read them).
        self.last_placed = 0
        self.last_timing: dict[str, float] = {}

    def _observe_placement(self, row: Any, now: float) -> None:
        """Scheduling latency: from when the task could first be placed to its placement."""
        if self._metrics is not None:
            since = max(row.created_at, row.not_before or 0.0)
            self._metrics.placements.inc()
            self._metrics.scheduling_latency.observe(max(0.0, now - since))

    def _preempt(self, session: Session, decision: scheduling.Pass, now: float) -> set[str]:
        """Tasks that did not fit may evict less important work (control/preemption.py);
        the nodes whose desired sets changed."""
        plan = decision.plan
        held = decision.admission.held
        build = scheduling.Requests()
        blocked = [
            preemption.contender(row, build.constraints(row.constraints))
            for r in decision.ranked
            if (row := decision.rows.get(r.task.task_id)) is not None
            and row.id in plan.pending_reasons
            and row.id not in held
            and not row.gang_size
        ]
        if not blocked:
            return set()
        evictions = preemption.decide(
            session,
            blocked,
            scheduling.node_views(session),
            self.fair.current(session, now),
            scheduling.shares(session),
            now,
        )
        owners = {tid: row.owner_id for tid, row in decision.rows.items()}
        preemption.apply(session, evictions, owners)
        return {e.node_id for e in evictions}

    def step(self) -> None:
        now = time.time()
        started = time.perf_counter()
        self.last_placed = 0
        with self._db.read() as session:
            batch_work = arrays.has_batch_work(session)
        if batch_work:  # job arrays to release, dependencies to judge
            with self._db.write() as session:
                arrays.advance_batch(session, now)
        with self._db.read() as session:
            lock = scheduling.queue_lock(session)
            if lock is not None:
                rows = scheduling.pending_rows(session, now)
                decision = None
            else:
                decision = scheduling.decide(session, now, self.fair, quota_admission)
        if lock is not None:
            if rows:
                with self._db.write() as session:
                    scheduling.hold_all(
                        session, rows, f"queue locked by {lock['by']}: nothing new starts"
                    )
            return
        if decision is None:
            return
        writing = time.perf_counter()
        with self._db.write() as session:
            touched = scheduling.commit_plan(
                session, decision, now, lambda row: self._observe_placement(row, now)
            )
            if preemption.enabled():
                touched |= self._preempt(session, decision, now)
        self.last_timing = {
            "read_s": decision.read_s,
            "place_s": decision.place_s,
            "write_s": time.perf_counter() - writing,
        }
        self.last_placed = sum(
            1 for tid in decision.plan.assignments if decision.plan.assignments[tid] in touched
        )
        if self._metrics is not None:
            self._metrics.scheduler_step.observe(time.perf_counter() - started)
        if touched:
            self._push(touched)


def quota_admission(session: Session, pending: list[Any], now: float) -> Admission:
    """Which pending tasks their owners' quotas let through now (the rest say why)."""
    owners = {row.owner_id for row in pending}
    quotas = {
        u.id: Quota.from_dict(u.quota)
        for u in session.scalars(select(User).where(User.id.in_(owners)))
        if u.quota
    }
    if not quotas:
        return Admission([row.id for row in pending], {})
    usage: dict[str, OwnerUsage] = {}
    placed = [s.value for s in PLACED_STATES]
    for owner_id, cpu, mem, count in session.execute(
        select(Task.owner_id, func.sum(Task.cpu_millis), func.sum(Task.memory_bytes), func.count())
        .where(Task.owner_id.in_(list(quotas)), Task.state.in_(placed))
        .group_by(Task.owner_id)
    ).all():
        usage[str(owner_id)] = OwnerUsage(int(cpu or 0), int(mem or 0), int(count or 0))
    for owner_id, quota in quotas.items():
        if quota.cpu_hours is not None:
            usage.setdefault(owner_id, OwnerUsage()).cpu_seconds_consumed = consumed_cpu_seconds(
                session, owner_id, quota.period_s, now
            )
    candidates = [Candidate(r.id, r.owner_id, r.cpu_millis, r.memory_bytes) for r in pending]
    return admit(candidates, usage, quotas)


class ReaperLoop(Loop):
    """Stops tasks past their max runtime, and tasks left on draining nodes past the deadline."""

    name = "reaper"

    def __init__(self, db: Database, push: Callable[[set[str]], None], interval: float = 0.25):
        super().__init__(interval)
        self._db = db
        self._push = push
        self._history_due = 0.0

    def _maintain_history(self, now: float) -> None:
        """Every HISTORY_EVERY_S: roll usage history up and prune it (bounded)."""
        if now < self._history_due:
            return
        self._history_due = now + HISTORY_EVERY_S
        with self._db.write() as session:
            usage_history.maintain(session, now)

    def step(self) -> None:
        now = time.time()
        self._maintain_history(now)
        placed = [
            s.value
            for s in (TaskState.ASSIGNED, TaskState.PULLING, TaskState.STARTING, TaskState.RUNNING)
        ]
        with self._db.read() as session:
            expired = list(
                session.scalars(
                    select(Task.id).where(
                        Task.state == TaskState.RUNNING,
                        Task.desired_state == DesiredState.RUN,
                        Task.max_runtime_s.is_not(None),
                        Task.started_at + Task.max_runtime_s <= now,
                    )
                )
            )
            drained_nodes = list(
                session.scalars(
                    select(Node.id).where(
                        Node.draining.is_(True),
                        Node.drain_deadline.is_not(None),
                        Node.drain_deadline <= now,
                    )
                )
            )
            evicted = (
                list(
                    session.scalars(
                        select(Task.id).where(
                            Task.node_id.in_(drained_nodes),
                            Task.state.in_(placed),
                            Task.desired_state == DesiredState.RUN,
                        )
                    )
                )
                if drained_nodes
                else []
            )
        if not expired and not evicted:
            return
        touched: set[str] = set()
        with self._db.write() as session:
            for task_id in expired:
                task = session.get(Task, task_id)
                if task is not None and task.desired_state == DesiredState.RUN:
                    request_stop(
                        session,
                        task,
                        Reason.MAX_RUNTIME_EXCEEDED,
                        f"ran longer than its max runtime ({task.max_runtime_s:g}s)",
                    )
                    touched.add(task.node_id or "")
            for task_id in evicted:
                task = session.get(Task, task_id)
                if task is not None and task.desired_state == DesiredState.RUN:
                    request_stop(
                        session,
                        task,
                        Reason.NODE_DRAINED,
                        "node drain deadline passed; moving the task",
                    )
                    touched.add(task.node_id or "")
        touched.discard("")
        self._push(touched)


class NodeMonitor(Loop):
    """Marks nodes down when their heartbeats stop, judged on this server's monotonic clock.

    A node silent for longer than ``suspect_after`` is ``suspect`` (nothing new is
    placed there); within ``grace`` of its last heartbeat (two checks before the grace
    runs out, so the declaring write lands inside it) it is ``down`` and its tasks
    are lost and replaced.
    """

    name = "node-monitor"
    #: How often the ready and suspect nodes are re-read from the store.
    REREAD_S = 1.0

    def __init__(
        self,
        db: Database,
        last_seen: Callable[[], dict[str, float]],
        grace: float,
        on_change: Callable[[], None],
        suspect_after: float | None = None,
        forget: Callable[[set[str]], None] = lambda _: None,
        interval: float = 0.1,
    ) -> None:
        super().__init__(interval)
        self._db = db
        self._last_seen = last_seen
        self._grace = grace
        self._suspect_after = suspect_after if suspect_after is not None else grace / 2
        self._forget = forget
        self._on_change = on_change
        # Every node gets one full grace period after this server starts.
        self._started = time.monotonic()
        self._alive_cache: dict[str, str] | None = None
        self._alive_read_at = 0.0

    def _alive(self, now: float) -> dict[str, str]:
        """Nodes the store has as ready or suspect, re-read at most every REREAD_S:
        reading 5,000 rows ten times a second took a core's worth of the GIL from
        the gateway. Changes made here are applied to the copy at once; nodes that
        join or come back are seen by the next read."""
        if self._alive_cache is None or now - self._alive_read_at >= self.REREAD_S:
            with self._db.read() as session:
                self._alive_cache = {
                    str(node_id): str(state)
                    for node_id, state in session.execute(
                        select(Node.id, Node.state).where(Node.state.in_(["ready", "suspect"]))
                    ).all()
                }
            self._alive_read_at = now
        return self._alive_cache

    def step(self) -> None:
        now = time.monotonic()
        seen = self._last_seen()
        alive = self._alive(now)
        silence = {node_id: now - seen.get(node_id, self._started) for node_id in alive}
        # Down *within* the grace: a node that would pass it before the next check is
        # declared now, with as much again left for the transaction that declares it.
        limit = self._grace - 2 * self.interval
        down = {n: s for n, s in silence.items() if s > limit}
        suspect = {
            n
            for n, s in silence.items()
            if self._suspect_after < s <= limit and alive[n] == "ready"
        }
        recovered = {
            n for n, s in silence.items() if s <= self._suspect_after and alive[n] == "suspect"
        }
        if not (down or suspect or recovered):
            return
        with self._db.write() as session:
            # Heartbeats may have arrived since the snapshot: judge again, inside the write.
            seen = self._last_seen()
            now = time.monotonic()
            silence = {n: now - seen.get(n, self._started) for n in silence}
            down = {n: s for n, s in down.items() if silence[n] > limit}
            suspect = {n for n in suspect if silence[n] > self._suspect_after}
            recovered = {n for n in recovered if silence[n] <= self._suspect_after}
            for node_id, quiet in down.items():
                node = session.get(Node, node_id)
                if node is not None and node.state in ("ready", "suspect"):
                    node_ops.mark_down(session, node, quiet)
            for node_id in suspect | recovered:
                node = session.get(Node, node_id)
                if node is not None and node.state in ("ready", "suspect"):
                    node.state = "suspect" if node_id in suspect else "ready"
                    alive[node_id] = node.state
                    record(
                        session,
                        EventKind.NODE,
                        f"node_{node.state}",
                        f"{node.name}: {silence[node_id]:.1f}s since last heartbeat",
                        node_id=node_id,
                    )
        for node_id in down:
            alive.pop(node_id, None)
        self._forget(set(down) | suspect | recovered)
        self._on_change()

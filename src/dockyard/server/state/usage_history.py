"""Usage history: a bounded, downsampled CPU and memory series per task and per node.

Agents sample every running container each second and ship running *totals*
(CPU seconds, memory GiB-seconds, peak memory); heartbeats carry each node's
host CPU busy percentage and memory in use. The gateway turns these into the
usage of each interval and adds them to 10-second buckets kept in memory
(:class:`UsageBuffer`, apply thread only); a bucket is written once, when it
has closed (one INSERT per bucket, no read-modify-write on the hot path).

The reaper (``control/loops.py``) calls :func:`maintain`: it rolls closed minutes
of 10 s rows up into 60 s rows and prunes by age (10 s rows for an hour, 60 s
rows for a day) and by count (:data:`MAX_ROWS` per resolution, oldest first).
``/admin/gc`` removes the history of the tasks it deletes.

A row covers ``seconds`` of samples; its means are ``cpu_s / seconds`` (CPU
cores for a task; for a node, the host's busy fraction) and
``memory_gib_s / seconds`` (GiB).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Table, delete, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dockyard.server.state.auth import Principal
from dockyard.server.state.batch import chunks
from dockyard.store.tables import Task, UsageHistory

log = logging.getLogger(__name__)

GIB = 1024**3
Subject = Literal["task", "node", "owner"]
TASK: Subject = "task"
NODE: Subject = "node"
#: The sum over an owner's tasks (id: the user id), and over everyone's (id ``*``):
#: kept as series of their own so the overview reads one row per bucket, not one per
#: task. Their ``seconds`` is the bucket's width, so ``cpu_s / seconds`` is the mean
#: of the sum (cores), like ``memory_gib_s / seconds``.
OWNER: Subject = "owner"
EVERYONE = "*"
#: Bucket widths in seconds, and how long rows of each are kept.
FINE_S = 10
COARSE_S = 60
KEEP_S = {FINE_S: 3600, COARSE_S: 86_400}
#: At most this many rows per resolution; past it the oldest buckets go first.
MAX_ROWS = {FINE_S: 500_000, COARSE_S: 500_000}
#: Open buckets kept in memory at most (a bound, far above nodes + running tasks).
MAX_OPEN = 200_000
#: A minute is rolled up this long after it closed (10 s buckets are written ~2 s
#: after theirs close; a leader change can delay a few).
ROLLUP_LAG_S = 30
#: A node's heartbeat usage counts for the time since its previous one, at most this.
MAX_NODE_GAP_S = 10.0

_TABLE: Table = UsageHistory.__table__  # type: ignore[assignment]


class UsageBuffer:
    """The open 10 s buckets, ``(subject, id, bucket) -> [seconds, cpu_s, GiB-s, peak]``.

    Used by one thread only (the gateway's apply thread)."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str, int], list[float]] = {}
        self._node_seen: dict[str, float] = {}
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._open)

    def add(
        self,
        subject: Subject,
        subject_id: str,
        at: float,
        seconds: float,
        cpu_s: float,
        memory_gib_s: float,
        max_memory_bytes: int,
    ) -> None:
        if seconds <= 0:
            return
        bucket = int(at // FINE_S) * FINE_S
        key = (subject, subject_id, bucket)
        acc = self._open.get(key)
        if acc is None:
            if len(self._open) >= MAX_OPEN:
                self.dropped += 1
                return
            self._open[key] = [seconds, cpu_s, memory_gib_s, float(max_memory_bytes)]
            return
        acc[0] += seconds
        acc[1] += cpu_s
        acc[2] += memory_gib_s
        acc[3] = max(acc[3], float(max_memory_bytes))

    def add_task(
        self,
        task_id: str,
        at: float,
        previous: tuple[float, float, float | None],
        totals: tuple[float, float, int],
        owner_id: str | None = None,
    ) -> None:
        """A task's new totals ``(cpu_s, GiB-s, peak)`` after ``previous`` ``(cpu_s,
        GiB-s, when)``: the difference is what it used since. A first sample (no
        previous time) or a re-sent one (nothing grew) adds nothing."""
        cpu_before, mem_before, when = previous
        if when is None or at <= when:
            return
        cpu = max(0.0, totals[0] - cpu_before)
        mem = max(0.0, totals[1] - mem_before)
        if cpu == 0.0 and mem == 0.0:
            return
        self.add(TASK, task_id, at, at - when, cpu, mem, totals[2])
        if owner_id is not None:
            for who in (owner_id, EVERYONE):
                self.add(OWNER, who, at, at - when, cpu, mem, 0)

    def add_node(self, node_id: str, at: float, cpu_percent: float, memory_bytes: int) -> None:
        """A heartbeat's host usage, standing for the time since the node's previous one."""
        before = self._node_seen.get(node_id)
        self._node_seen[node_id] = at
        if before is not None and at <= before:
            return
        seconds = min(MAX_NODE_GAP_S, at - before) if before is not None else 1.0
        busy = max(0.0, min(1.0, cpu_percent / 100))
        self.add(
            NODE, node_id, at, seconds, busy * seconds, memory_bytes / GIB * seconds, memory_bytes
        )

    def forget_nodes(self, node_ids: Iterable[str]) -> None:
        for node_id in node_ids:
            self._node_seen.pop(node_id, None)

    def closed(self, now: float) -> list[dict[str, Any]]:
        """Take the buckets that have closed by ``now`` as rows to insert."""
        rows = []
        for key in [k for k in self._open if k[2] + FINE_S <= now]:
            seconds, cpu_s, mem, peak = self._open.pop(key)
            if key[0] == OWNER:
                seconds = float(FINE_S)  # a sum: its mean over the bucket
            rows.append(
                {
                    "subject": key[0],
                    "subject_id": key[1],
                    "res": FINE_S,
                    "bucket": key[2],
                    "seconds": seconds,
                    "cpu_s": cpu_s,
                    "memory_gib_s": mem,
                    "max_memory_bytes": int(peak),
                }
            )
        return rows


def _insert(dialect: str) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(_TABLE).on_conflict_do_nothing()
    return sqlite.insert(_TABLE).on_conflict_do_nothing()


def store(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert closed buckets (one already stored for its key is kept). Buckets of tasks
    deleted meanwhile (``dockyard rm``, garbage collection) are dropped: a task's
    history never outlives it."""
    task_ids = list({r["subject_id"] for r in rows if r["subject"] == TASK})
    if task_ids:
        alive = {
            str(tid)
            for chunk in chunks(task_ids)
            for tid in session.scalars(select(Task.id).where(Task.id.in_(chunk)))
        }
        rows = [r for r in rows if r["subject"] != TASK or r["subject_id"] in alive]
    if rows:
        session.execute(_insert(session.get_bind().dialect.name), list(rows))


@dataclass(frozen=True, slots=True)
class Maintained:
    rolled_up: int
    pruned: int


def maintain(session: Session, now: float) -> Maintained:
    """Roll closed minutes of 10 s rows up into 60 s rows; prune by age and count."""
    h = UsageHistory
    rolled = 0
    done = session.scalar(select(func.max(h.bucket)).where(h.res == COARSE_S))
    start: int | None
    if done is not None:
        start = int(done) + COARSE_S
    else:
        first = session.scalar(select(func.min(h.bucket)).where(h.res == FINE_S))
        start = int(first) // COARSE_S * COARSE_S if first is not None else None
    # the minutes that closed at least ROLLUP_LAG_S ago: [start, end)
    end = int((now - ROLLUP_LAG_S - COARSE_S) // COARSE_S) * COARSE_S + COARSE_S
    if start is not None and start < end:
        minute = (h.bucket - h.bucket % COARSE_S).label("minute")
        source = (
            select(
                h.subject,
                h.subject_id,
                literal(COARSE_S).label("res"),
                minute,
                func.sum(h.seconds),
                func.sum(h.cpu_s),
                func.sum(h.memory_gib_s),
                func.max(h.max_memory_bytes),
            )
            .where(h.res == FINE_S, h.bucket >= start, h.bucket < end)
            .group_by(h.subject, h.subject_id, minute)
        )
        columns = [
            "subject",
            "subject_id",
            "res",
            "bucket",
            "seconds",
            "cpu_s",
            "memory_gib_s",
            "max_memory_bytes",
        ]
        session.execute(_insert(session.get_bind().dialect.name).from_select(columns, source))
        # (an INSERT ... SELECT's rowcount is not reported by every driver: counted)
        rolled = int(
            session.scalar(
                select(func.count()).where(h.res == COARSE_S, h.bucket >= start, h.bucket < end)
            )
            or 0
        )
    pruned = 0
    for res, keep in KEEP_S.items():
        result = session.execute(delete(h).where(h.res == res, h.bucket < now - keep))
        pruned += int(getattr(result, "rowcount", 0) or 0)
        count = int(session.scalar(select(func.count()).where(h.res == res)) or 0)
        if count > MAX_ROWS[res]:
            cut = session.scalar(
                select(h.bucket)
                .where(h.res == res)
                .order_by(h.bucket.desc())
                .offset(MAX_ROWS[res])
                .limit(1)
            )
            if cut is not None:
                result = session.execute(delete(h).where(h.res == res, h.bucket <= cut))
                pruned += int(getattr(result, "rowcount", 0) or 0)
    return Maintained(rolled, pruned)


def forget_tasks(session: Session, task_ids: Sequence[str]) -> int:
    """Delete the history of these tasks (garbage collection)."""
    removed = 0
    for chunk in chunks(list(task_ids)):
        result = session.execute(
            delete(UsageHistory).where(
                UsageHistory.subject == TASK, UsageHistory.subject_id.in_(chunk)
            )
        )
        removed += int(getattr(result, "rowcount", 0) or 0)
    return removed


@dataclass(frozen=True, slots=True)
class Point:
    """One bucket: its start, mean CPU (cores; a node: busy fraction), mean memory
    (bytes), the largest memory seen, and how many subjects it sums."""

    t: int
    cpu: float
    memory_bytes: float
    max_memory_bytes: int
    subjects: int


def resolution_for(window_s: float) -> int:
    """10 s buckets for an hour or less, 60 s beyond."""
    return FINE_S if window_s <= KEEP_S[FINE_S] else COARSE_S


def series(
    session: Session,
    subject: Subject,
    subject_ids: Sequence[str] | None,
    since: float,
    res: int,
) -> list[Point]:
    """Points from ``since`` at ``res``, summed over the subjects: ``subject_ids``, or
    (``None``) every subject of the kind."""
    h = UsageHistory
    query = (
        select(
            h.bucket,
            func.sum(h.cpu_s / h.seconds),
            func.sum(h.memory_gib_s / h.seconds),
            func.max(h.max_memory_bytes),
            func.count(),
        )
        .where(h.subject == subject, h.res == res, h.bucket >= since, h.seconds > 0)
        .group_by(h.bucket)
        .order_by(h.bucket)
    )
    if subject_ids is not None:
        query = query.where(h.subject_id.in_(list(subject_ids)))
    return [
        Point(int(b), float(cpu or 0.0), float(mem or 0.0) * GIB, int(peak or 0), int(n))
        for b, cpu, mem, peak, n in session.execute(query.limit(KEEP_S[res] // res + 10))
    ]


def owner_scope(who: Principal) -> str:
    """The ``owner`` series of the tasks ``who`` may see: everyone's for admins."""
    return EVERYONE if who.is_admin else who.user_id


@dataclass(frozen=True, slots=True)
class Latest:
    subject_id: str
    bucket: int
    cpu: float
    memory_bytes: float


def latest(session: Session, subject: Subject, now: float, limit: int) -> tuple[list[Latest], int]:
    """Each subject's newest 10 s bucket of the last minute, the ``limit`` busiest
    (by CPU) of them, and how many more there were."""
    h = UsageHistory
    rows = session.execute(
        select(h.subject_id, h.bucket, h.cpu_s / h.seconds, h.memory_gib_s / h.seconds).where(
            h.subject == subject, h.res == FINE_S, h.bucket >= now - 60, h.seconds > 0
        )
    ).all()
    newest: dict[str, Latest] = {}
    for sid, bucket, cpu, mem in rows:
        seen = newest.get(sid)
        if seen is None or bucket > seen.bucket:
            newest[sid] = Latest(str(sid), int(bucket), float(cpu), float(mem) * GIB)
    ranked = sorted(newest.values(), key=lambda x: (-x.cpu, x.subject_id))
    return ranked[:limit], max(0, len(ranked) - limit)

"""The scheduler's I/O shell: read a snapshot for the pure scheduler, write its plan back.

``SchedulerLoop.step`` (server/loops.py), the queue API and ``dockyard plan``
share these reads, so what ``dockyard queue`` shows is what the loop does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from dockyard.core.image_ref import tagged
from dockyard.core.quota import Admission
from dockyard.core.resources import Resources
from dockyard.core.states import PLACED_STATES, DesiredState, Reason, TaskState
from dockyard.scheduler.constraints import Constraint, parse_constraints
from dockyard.scheduler.fairshare import (
    DEFAULT_HALF_LIFE_S,
    DecayedTotals,
    FairShareConfig,
    UsageSpan,
    factors,
    usage_by_owner,
)
from dockyard.scheduler.placement import NodeView, Plan, Running, TaskRequest, place
from dockyard.scheduler.queue import QueuedTask, Ranked, order
from dockyard.server.state.batch import chunks
from dockyard.server.state.events import insert_events
from dockyard.server.state.jobs import bump_generations
from dockyard.server.state.tasks import assign
from dockyard.store.bulk import executemany
from dockyard.store.tables import Accounting, Event, Node, SchedulerSetting, Task, User

TASKS = cast(Table, Task.__table__)
EVENTS = cast(Table, Event.__table__)
QUEUE_LOCKED = "queue_locked"
QUEUE_LOCKED_REASON = "queue_locked"
#: Pending tasks considered per owner in one pass (the rest wait for the next), and
#: at most in all: bounds a pass's latency under a burst of submissions.
PER_OWNER_BATCH = 2000
MAX_BATCH = 10000
#: Fair-share usage changes slowly: recompute it at most this often.
USAGE_TTL_S = 5.0
#: ... and sum every accounting record afresh this often (between, only new ones).
USAGE_REBUILD_S = 600.0
#: Records this far below the newest seq are read again at each refresh (once each).
USAGE_SEQ_MARGIN = 1000


# -- queue lock --------------------------------------------------------------
def queue_lock(session: Session) -> dict[str, Any] | None:
    """``{"by": name, "at": time}`` while an admin holds the queue locked, else None."""
    row = session.get(SchedulerSetting, QUEUE_LOCKED)
    if row is None or not row.value:
        return None
    return {"by": row.updated_by, "at": row.updated_at}


def set_queue_lock(session: Session, locked: bool, who: str) -> None:
    row = session.get(SchedulerSetting, QUEUE_LOCKED)
    if row is None:
        row = SchedulerSetting(key=QUEUE_LOCKED, value=locked, updated_at=time.time())
        session.add(row)
    row.value = locked
    row.updated_at = time.time()
    row.updated_by = who[:64]


# -- snapshot ------------------------------------------------------------------
PENDING_COLUMNS = (
    Task.id,
    Task.owner_id,
    Task.priority,
    Task.created_at,
    Task.not_before,
    Task.cpu_millis,
    Task.memory_bytes,
    Task.gpus,
    Task.ports,
    Task.constraints,
    Task.algorithm,
    Task.max_runtime_s,
    Task.message,
    Task.image,
    Task.port_map,
    Task.workload_id,
    Task.gang_size,
    Task.gang_nodes,
)


def pending_rows(session: Session, now: float, per_owner: int | None = None) -> list[Any]:
    """Pending tasks that may be placed now; with ``per_owner``, each owner's first
    ``per_owner`` by priority and age (so one user's backlog cannot hide another's)."""
    where = (
        Task.state == TaskState.PENDING,
        Task.desired_state == DesiredState.RUN,
        or_(Task.not_before.is_(None), Task.not_before <= now),
        Task.held.is_(False),  # waiting for its dependencies (server/state/arrays.py)
    )
    if per_owner is None:
        return list(session.execute(select(*PENDING_COLUMNS).where(*where)).all())
    rank = (
        func.row_number()
        .over(partition_by=Task.owner_id, order_by=(Task.priority.desc(), Task.created_at))
        .label("rank")
    )
    inner = select(*PENDING_COLUMNS, rank).where(*where).subquery()
    query = select(*(inner.c[c.key] for c in PENDING_COLUMNS)).where(inner.c.rank <= per_owner)
    return list(session.execute(query).all())


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x) if text else ()


def node_views(session: Session) -> list[NodeView]:
    placed = [s.value for s in PLACED_STATES]
    alloc: dict[str, tuple[int, int]] = {
        str(node_id): (int(cpu or 0), int(mem or 0))
        for node_id, cpu, mem in session.execute(
            select(Task.node_id, func.sum(Task.cpu_millis), func.sum(Task.memory_bytes))
            .where(Task.state.in_(placed), Task.node_id.is_not(None))
            .group_by(Task.node_id)
        ).all()
    }
    gpus_used: dict[str, set[int]] = {}
    ports_used: dict[str, set[int]] = {}
    for node_id, gpu_indices, ports in session.execute(
        select(Task.node_id, Task.gpu_indices, Task.ports).where(
            Task.state.in_(placed), or_(Task.gpu_indices != "", Task.ports != "")
        )
    ).all():
        gpus_used.setdefault(str(node_id), set()).update(_int_list(gpu_indices))
        ports_used.setdefault(str(node_id), set()).update(_int_list(ports))
    views = []
    for n in session.execute(
        select(
            Node.id,
            Node.name,
            Node.state,
            Node.draining,
            Node.cpu_millis,
            Node.memory_bytes,
            Node.labels,
            Node.gpus,
            Node.images,
        ).order_by(Node.id)
    ).all():
        views.append(
            NodeView(
                node_id=n.id,
                name=n.name,
                state="draining" if n.draining and n.state == "ready" else n.state,
                capacity=Resources(n.cpu_millis, n.memory_bytes),
                allocated=Resources(*alloc.get(n.id, (0, 0))),
                labels={str(k): str(v) for k, v in (n.labels or {}).items()},
                gpus=_int_list(n.gpus),
                gpus_used=frozenset(gpus_used.get(n.id, ())),
                ports_used=frozenset(ports_used.get(n.id, ())),
                images=frozenset(str(i) for i in (n.images or ())),
            )
        )
    return views


def running_tasks(session: Session) -> list[Running]:
    """Placed tasks with their latest end by declared max runtime (for backfill)."""
    placed = [s.value for s in PLACED_STATES]
    now = time.time()
    out = []
    for row in session.execute(
        select(
            Task.node_id,
            Task.cpu_millis,
            Task.memory_bytes,
            Task.gpus,
            Task.ports,
            Task.max_runtime_s,
            Task.started_at,
            Task.assigned_at,
        ).where(Task.state.in_(placed), Task.node_id.is_not(None))
    ).all():
        ends = None
        if row.max_runtime_s is not None:
            ends = (row.started_at or row.assigned_at or now) + row.max_runtime_s
        out.append(
            Running(
                str(row.node_id),
                Resources(row.cpu_millis, row.memory_bytes),
                int(row.gpus or 0),
                _int_list(row.ports),
                ends,
            )
        )
    return out


def shares(session: Session) -> dict[str, float]:
    return {
        str(uid): float(share) for uid, share in session.execute(select(User.id, User.share)).all()
    }


def _finished_span(row: Any) -> UsageSpan | None:
    wall = float(row.wall_s or 0.0)
    if wall <= 0:
        return None
    gpus = int(row.gpus or 0) or round(float(row.gpu_s or 0.0) / wall)
    return UsageSpan(
        str(row.owner_id),
        row.ended_at - wall,
        row.ended_at,
        round(row.cpu_limit * 1000),
        int(row.memory_limit_bytes),
        gpus,
    )


def finished_spans(
    session: Session, now: float, config: FairShareConfig, after_seq: int = 0
) -> list[tuple[int, UsageSpan]]:
    """Accounting records (by ``seq``, past ``after_seq``) as spans; records older than
    20 half-lives (under a millionth) are left out."""
    horizon = now - 20 * config.half_life_s
    out = []
    for row in session.execute(
        select(
            Accounting.seq,
            Accounting.owner_id,
            Accounting.ended_at,
            Accounting.wall_s,
            Accounting.cpu_limit,
            Accounting.memory_limit_bytes,
            Accounting.gpu_s,
            Task.gpus,
        )
        .outerjoin(Task, Task.id == Accounting.task_id)
        .where(Accounting.ended_at >= horizon, Accounting.seq > after_seq)
    ).all():
        span = _finished_span(row)
        if span is not None:
            out.append((int(row.seq), span))
    return out


def held_spans(session: Session, now: float) -> list[UsageSpan]:
    """What placed tasks hold, from their start (or assignment) until ``now``."""
    spans = []
    for held in session.execute(
        select(
            Task.owner_id,
            Task.started_at,
            Task.assigned_at,
            Task.cpu_millis,
            Task.memory_bytes,
            Task.gpus,
        ).where(Task.state.in_([s.value for s in PLACED_STATES]))
    ).all():
        start = held.started_at or held.assigned_at
        if start is not None:
            spans.append(
                UsageSpan(
                    str(held.owner_id),
                    start,
                    now,
                    held.cpu_millis,
                    held.memory_bytes,
                    int(held.gpus or 0),
                )
            )
    return spans


def usage_spans(session: Session, now: float, config: FairShareConfig) -> list[UsageSpan]:
    """What each user held, from accounting (finished) and placed tasks (until now).

    Usage is billed on what was allocated (cores, memory, GPUs) for as long as it
    was held, as Slurm bills allocated TRES; records older than 20 half-lives
    (under a millionth) are ignored.
    """
    return [span for _, span in finished_spans(session, now, config)] + held_spans(session, now)


@dataclass
class FairShareState:
    """Decayed usage per user, cached for ``USAGE_TTL_S``. Finished tasks' usage is
    kept decayed (``DecayedTotals``) and only accounting records not yet seen are
    read at a refresh, so a pass costs the same with 10 or 100,000 records; every
    ``USAGE_REBUILD_S`` it is summed afresh (records deleted by retention drop out)."""

    config: FairShareConfig = field(default_factory=lambda: fair_share_config())
    usage: dict[str, float] = field(default_factory=dict)
    computed_at: float = -1e18
    _finished: DecayedTotals | None = None
    _rebuilt_at: float = -1e18
    #: Records at or below this seq are in ``_finished``; above it, ``_seen`` says.
    _low: int = 0
    _seen: set[int] = field(default_factory=set)

    def current(self, session: Session, now: float, force: bool = False) -> dict[str, float]:
        if not force and now - self.computed_at < USAGE_TTL_S:
            return self.usage
        if force or self._finished is None or now - self._rebuilt_at >= USAGE_REBUILD_S:
            self._finished = DecayedTotals(self.config, now)
            self._rebuilt_at, self._low, self._seen = now, 0, set()
        finished = self._finished
        finished.advance(now)
        for seq, span in finished_spans(session, now, self.config, self._low):
            if seq not in self._seen:
                self._seen.add(seq)
                finished.add(span)
        # A record committed late under a lower seq (PostgreSQL hands seqs out before
        # commit) is still read while it is within USAGE_SEQ_MARGIN of the newest.
        low = max(self._seen, default=0) - USAGE_SEQ_MARGIN
        if low > self._low:
            self._low = low
            self._seen = {seq for seq in self._seen if seq > low}
        usage = dict(finished.totals)
        for owner, value in usage_by_owner(held_spans(session, now), now, self.config).items():
            usage[owner] = usage.get(owner, 0.0) + value
        self.usage = usage
        self.computed_at = now
        return self.usage


def fair_share_config() -> FairShareConfig:
    """Defaults, or ``DOCKYARD_FAIRSHARE_HALF_LIFE`` (seconds) from the environment."""
    raw = os.environ.get("DOCKYARD_FAIRSHARE_HALF_LIFE")
    try:
        half_life = float(raw) if raw else DEFAULT_HALF_LIFE_S
    except ValueError:
        half_life = DEFAULT_HALF_LIFE_S
    return FairShareConfig(half_life_s=half_life if half_life > 0 else DEFAULT_HALF_LIFE_S)


@dataclass(frozen=True, slots=True)
class FairShareNow:
    usage: dict[str, float]
    factors: dict[str, float]


def fair_share_now(
    session: Session, now: float, config: FairShareConfig | None = None
) -> FairShareNow:
    """Every user's decayed usage and fair-share factor at ``now``."""
    config = config or fair_share_config()
    usage = usage_by_owner(usage_spans(session, now, config), now, config)
    return FairShareNow(usage, factors(usage, shares(session)))


def queued(rows: Sequence[Any]) -> list[QueuedTask]:
    return [
        QueuedTask(
            r.id,
            r.owner_id,
            int(r.priority or 0),
            r.created_at,
            r.cpu_millis,
            r.memory_bytes,
            int(r.gpus or 0),
            r.max_runtime_s,
        )
        for r in rows
    ]


class Requests:
    """Builds TaskRequests, parsing each distinct constraint list once."""

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, ...], tuple[Constraint, ...]] = {}

    def constraints(self, raw: Sequence[str] | None) -> tuple[Constraint, ...]:
        key = tuple(raw or ())
        parsed = self._parsed.get(key)
        if parsed is None:
            parsed = self._parsed[key] = parse_constraints(key)
        return parsed

    def build(self, row: Any) -> TaskRequest:
        return TaskRequest(
            row.id,
            Resources(row.cpu_millis, row.memory_bytes),
            int(row.gpus or 0),
            _int_list(row.ports),
            self.constraints(row.constraints),
            row.algorithm or "binpack",
            row.max_runtime_s,
            tagged(row.image or ""),
            sum(1 for _, host in row.port_map or () if not host),
            *self._gang(row),
        )

    @staticmethod
    def _gang(row: Any) -> tuple[str, int, bool]:
        """A gang member's job id, gang size and whether it needs a node of its own
        (a row without the columns, the dry run's, is no gang)."""
        size = int(getattr(row, "gang_size", 0) or 0)
        return (row.workload_id if size else "", size, bool(getattr(row, "gang_nodes", False)))


@dataclass
class Pass:
    """One scheduling decision: the queue order, what quotas held back, and the plan."""

    rows: dict[str, Any]
    ranked: list[Ranked]
    admission: Admission
    plan: Plan
    #: Seconds spent reading the snapshot and ordering, and in placement.
    read_s: float = 0.0
    place_s: float = 0.0


def decide(
    session: Session,
    now: float,
    fair: FairShareState,
    admit: Callable[[Session, list[Any], float], Admission],
    per_owner: int | None = PER_OWNER_BATCH,
) -> Pass | None:
    """Read the snapshot and decide (pure scheduler calls); None when nothing is pending."""
    started = time.perf_counter()
    rows = pending_rows(session, now, per_owner)
    if not rows:
        return None
    ranked = order(queued(rows), fair.current(session, now), shares(session), fair.config)
    if len(ranked) > MAX_BATCH:
        ranked = ranked[:MAX_BATCH]
    by_id = {r.id: r for r in rows}
    in_order = [by_id[r.task.task_id] for r in ranked]
    admission = admit(session, in_order, now)
    admitted = set(admission.admitted)
    build = Requests()
    requests = [build.build(row) for row in in_order if row.id in admitted]
    views = node_views(session)
    placing = time.perf_counter()
    plan = place(requests, views, running=LazyRunning(session), now=now)
    plan.pending_reasons.update(admission.held)
    done = time.perf_counter()
    return Pass(by_id, ranked, admission, plan, placing - started, done - placing)


class LazyRunning(Sequence[Running]):
    """Placed tasks, read only if backfill needs them (a head task is blocked)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._items: list[Running] | None = None

    def _load(self) -> list[Running]:
        if self._items is None:
            self._items = running_tasks(self._session)
        return self._items

    def __len__(self) -> int:
        return len(self._load())

    def __getitem__(self, index: Any) -> Any:
        return self._load()[index]

    def __iter__(self) -> Any:
        return iter(self._load())


# -- writing the plan ----------------------------------------------------------
_PENDING_REASON = (
    update(TASKS)
    .where(TASKS.c.id == bindparam("tid"), TASKS.c.state == TaskState.PENDING.value)
    .values(
        reason=bindparam("reason"), message=bindparam("message"), pending_detail=bindparam("detail")
    )
)


def commit_plan(
    session: Session,
    decision: Pass,
    now: float,
    on_placed: Callable[[Any], None] = lambda _: None,
) -> set[str]:
    """Write assignments (guarded: still pending, node still ready) and pending reasons,
    in bulk. Returns the nodes whose desired sets changed."""
    plan = decision.plan
    ready = set(
        session.scalars(select(Node.id).where(Node.state == "ready", Node.draining.is_(False)))
    )
    wanted = [tid for tid, nid in plan.assignments.items() if nid in ready]
    still: set[str] = set()
    for chunk in chunks(wanted):
        still.update(
            session.scalars(
                select(Task.id).where(Task.id.in_(chunk), Task.state == TaskState.PENDING)
            )
        )
    rows = decision.rows
    params = []
    events = []
    touched: set[str] = set()
    for tid in wanted:
        if tid not in still:
            continue
        nid = plan.assignments[tid]
        touched.add(nid)
        gpus = plan.gpus.get(tid, ())
        params.append(
            {
                "tid": tid,
                "node": nid,
                "gpu_indices": ",".join(str(g) for g in gpus),
                **published(rows[tid], plan.host_ports.get(tid, ())),
            }
        )
        gpu_note = f" with GPUs {','.join(str(g) for g in gpus)}" if gpus else ""
        events.append(
            {
                "at": now,
                "kind": "task",
                "reason": Reason.PLACED,
                "message": f"placed on {nid}{gpu_note}",
                "task_id": tid,
                "node_id": nid,
                "owner_id": rows[tid].owner_id,
            }
        )
        on_placed(rows[tid])
    if params:
        assign(session, params, now)
        insert_events(session, events)
    bump_generations(session, touched)
    held = decision.admission.held
    changes = []
    for tid, why in plan.pending_reasons.items():
        row = rows.get(tid)
        if row is None or row.message == why:
            continue
        changes.append(
            {
                "tid": tid,
                "reason": "quota" if tid in held else Reason.UNSCHEDULABLE,
                "message": why,
                "detail": plan.pending_detail.get(tid),
            }
        )
    executemany(session.connection(), _PENDING_REASON, changes)
    return touched


def published(row: Any, allocated: tuple[int, ...]) -> dict[str, Any]:
    """The ``ports``/``port_map`` columns of a placed task: allocated host ports fill
    the port map's empty host sides in order; other tasks keep theirs."""
    if not allocated:
        return {"host_ports": row.ports or "", "port_map": list(row.port_map or [])}
    given = iter(allocated)
    port_map = [[c, h or next(given)] for c, h in row.port_map]
    hosts = [int(p) for p in (row.ports or "").split(",") if p] + [h for _, h in port_map]
    return {"host_ports": ",".join(str(p) for p in hosts), "port_map": port_map}


def hold_all(session: Session, rows: Sequence[Any], why: str) -> None:
    """The queue is locked: every pending task says so; nothing is placed."""
    table = TASKS
    changes = [
        {"tid": r.id, "reason": QUEUE_LOCKED_REASON, "message": why}
        for r in rows
        if r.message != why
    ]
    if changes:
        session.execute(
            update(table)
            .where(table.c.id == bindparam("tid"), table.c.state == TaskState.PENDING.value)
            .values(reason=bindparam("reason"), message=bindparam("message")),
            changes,
        )

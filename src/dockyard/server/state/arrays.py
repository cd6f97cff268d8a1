"""Job arrays and dependencies in the store (docs/batch.md).

An array is one workload plus one ``job_arrays`` row holding its normalised
index expression: submitting 100,000 elements writes two rows. Before each
scheduling pass :func:`advance_batch` turns the next elements into pending tasks
(at most the throttle live at once, at most a window pending; pure rules in
:mod:`dockyard.scheduler.batch`), and judges dependencies: held jobs and waiting
arrays whose dependencies are met are released, those whose dependencies can
never be met fail with reason ``dependency_never_satisfied``; the others say
``waiting on ID (running)``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session

from dockyard.core.arrays import ArraySpec, parse_array
from dockyard.core.dependencies import parse_after
from dockyard.core.errors import ValidationError
from dockyard.core.ids import new_id
from dockyard.core.specs import JobSpec
from dockyard.core.states import PLACED_STATES, DesiredState, Reason, TaskState
from dockyard.scheduler.batch import MET, NEVER, JobStatus, judge_all, release_count
from dockyard.server.errors import Conflict
from dockyard.server.state.auth import Principal
from dockyard.server.state.batch import chunks
from dockyard.server.state.events import EventKind, event_row, insert_events
from dockyard.server.state.jobs import effective_max_runtime, request_stop, scheduling_fields
from dockyard.server.state.tasks import end_pending, fail_held, release_held
from dockyard.server.state.workload_specs import remember_job
from dockyard.store.errors import NotFound
from dockyard.store.tables import JobArray, JobDependency, Task, Workload

_TASKS = cast(Table, Task.__table__)
WAITING, RELEASING, RELEASED, CANCELLED, FAILED = (
    "waiting",
    "releasing",
    "released",
    "cancelled",
    "failed",
)
OPEN_STATES = (WAITING, RELEASING)
_LIVE = [TaskState.PENDING.value, *(s.value for s in PLACED_STATES)]


# -- submit ----------------------------------------------------------------------
def resolve_after(
    session: Session, principal: Principal, spec: JobSpec, field: str = "after"
) -> list[tuple[str, str]]:
    """The job's dependencies as (kind, workload id): each ID is a job id or a task
    id of a job the caller may see; anything else is a 422 naming ``field``."""
    out: list[tuple[str, str]] = []
    for dep in parse_after(spec.after, field):
        query = select(Workload.id).where(
            Workload.kind == "job",
            or_(
                Workload.id == dep.ref,
                Workload.id.in_(select(Task.workload_id).where(Task.id == dep.ref)),
            ),
        )
        if not principal.is_admin:
            query = query.where(Workload.owner_id == principal.user_id)
        workload_id = session.scalar(query.limit(1))
        if workload_id is None:
            raise ValidationError(field, f"unknown job {dep.ref}")
        pair = (dep.kind, str(workload_id))
        if pair not in out:
            out.append(pair)
    # A new job can only name jobs that exist already, so it closes no cycle.
    return out


def submit_array(
    session: Session,
    owner: Principal,
    spec: JobSpec,
    after: Sequence[tuple[str, str]],
    max_runtime_cap_s: float | None = None,
    policy: dict[str, Any] | None = None,
) -> JobArray:
    """Store an array as one workload and one ``job_arrays`` row (no task rows)."""
    parsed = parse_array(spec.array)
    now = time.time()
    workload_id = new_id()
    raw = {
        **spec.to_dict(),
        "policy": policy,
        "effective_max_runtime_s": effective_max_runtime(spec, max_runtime_cap_s),
    }
    session.add(
        Workload(
            id=workload_id,
            owner_id=owner.user_id,
            name=spec.name,
            kind="job",
            spec=raw,
            created_at=now,
        )
    )
    session.flush()
    row = JobArray(
        workload_id=workload_id,
        owner_id=owner.user_id,
        indices=parsed.indices_text,
        total=parsed.count,
        released=0,
        throttle=parsed.throttle,
        phase=WAITING if after else RELEASING,
        reason=Reason.WAITING_DEPENDENCY if after else Reason.SUBMITTED,
        message=("waiting on " + ", ".join(w for _, w in after)) if after else "",
        created_at=now,
    )
    session.add(row)
    if after:
        session.execute(
            insert(cast(Table, JobDependency.__table__)),
            [{"workload_id": workload_id, "kind": k, "on_workload_id": w} for k, w in after],
        )
    insert_events(
        session,
        [
            event_row(
                EventKind.TASK,
                Reason.SUBMITTED,
                f"array {spec.name} submitted: {parsed.count} elements ({parsed.text()})",
                owner_id=owner.user_id,
            )
        ],
    )
    remember_job(workload_id, spec, raw)
    return row


# -- views ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ArrayView:
    row: JobArray
    name: str
    counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        r = self.row
        unreleased = r.total - r.released
        return {
            "id": r.workload_id,
            "name": self.name,
            "indices": r.indices,
            "throttle": r.throttle,
            "total": r.total,
            "released": r.released,
            "state": r.phase,
            "reason": r.reason,
            "message": r.message,
            "created_at": r.created_at,
            "counts": {**self.counts, "unreleased": unreleased},
        }


def find_array(session: Session, principal: Principal, ref: str) -> JobArray:
    query = select(JobArray).where(JobArray.workload_id == ref)
    if not principal.is_admin:
        query = query.where(JobArray.owner_id == principal.user_id)
    row = session.scalar(query)
    if row is None:
        raise NotFound("array", ref)
    return row


def array_view(session: Session, row: JobArray) -> ArrayView:
    workload = session.get(Workload, row.workload_id)
    counts = {
        str(state): int(n)
        for state, n in session.execute(
            select(Task.state, func.count())
            .where(Task.workload_id == row.workload_id)
            .group_by(Task.state)
        ).all()
    }
    return ArrayView(row, workload.name if workload else "?", counts)


def cancel_array(session: Session, principal: Principal, ref: str) -> JobArray:
    """No more elements start: unreleased ones never will, pending ones end
    (``killed``); placed ones are asked to stop."""
    row = find_array(session, principal, ref)
    if row.phase not in OPEN_STATES:
        raise Conflict(f"array {row.workload_id} is {row.phase}; nothing left to cancel")
    row.phase = CANCELLED
    row.reason = Reason.KILLED
    row.message = f"cancelled by {principal.name}"
    for task in session.scalars(
        select(Task).where(Task.workload_id == row.workload_id, Task.state.in_(_LIVE))
    ):
        if task.state == TaskState.PENDING:
            end_pending(session, task, Reason.KILLED, f"array cancelled by {principal.name}")
        else:
            request_stop(session, task, Reason.KILLED, f"array cancelled by {principal.name}")
    return row


# -- the step before each scheduling pass --------------------------------------------
def has_batch_work(session: Session) -> bool:
    """Cheap check: is there an open array or a held task?"""
    return bool(
        session.scalar(select(exists().where(JobArray.phase.in_(OPEN_STATES))))
        or session.scalar(
            select(exists().where(Task.held.is_(True), Task.state == TaskState.PENDING.value))
        )
    )


def advance_batch(session: Session, now: float) -> int:
    """Judge dependencies and release array elements; the tasks created."""
    judge_dependencies(session, now)
    return release_elements(session, now)


def release_elements(session: Session, now: float) -> int:
    arrays = list(session.scalars(select(JobArray).where(JobArray.phase == RELEASING)))
    if not arrays:
        return 0
    ids = [a.workload_id for a in arrays]
    live: dict[str, int] = {}
    pending: dict[str, int] = {}
    for chunk in chunks(ids):
        for workload_id, state, n in session.execute(
            select(Task.workload_id, Task.state, func.count())
            .where(Task.workload_id.in_(chunk), Task.state.in_(_LIVE))
            .group_by(Task.workload_id, Task.state)
        ).all():
            live[workload_id] = live.get(workload_id, 0) + int(n)
            if state == TaskState.PENDING.value:
                pending[workload_id] = pending.get(workload_id, 0) + int(n)
    raws = {
        str(w): raw
        for chunk in chunks(ids)
        for w, raw in session.execute(
            select(Workload.id, Workload.spec).where(Workload.id.in_(chunk))
        ).all()
    }
    rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for array in arrays:
        n = release_count(
            array.total,
            array.released,
            live.get(array.workload_id, 0),
            pending.get(array.workload_id, 0),
            array.throttle,
        )
        if n <= 0:
            continue
        raw = raws.get(array.workload_id)
        if raw is None:
            continue
        spec = JobSpec.from_dict(raw)
        parsed = ArraySpec(parse_array(array.indices).ranges, array.throttle)
        base = _element_row(spec, array, raw.get("effective_max_runtime_s"), now)
        indices = list(parsed.indices(array.released, n))
        rows.extend({**base, "id": new_id(), "array_index": i} for i in indices)
        array.released += len(indices)
        if array.released >= array.total:
            array.phase = RELEASED
        events.append(
            event_row(
                EventKind.TASK,
                "array_released",
                f"array {spec.name}: elements {indices[0]}..{indices[-1]} released "
                f"({array.released}/{array.total})",
                owner_id=array.owner_id,
            )
        )
    if rows:
        session.connection().execute(insert(_TASKS), rows)
    insert_events(session, events)
    return len(rows)


def _element_row(
    spec: JobSpec, array: JobArray, max_runtime_s: float | None, now: float
) -> dict[str, Any]:
    return {
        "workload_id": array.workload_id,
        "owner_id": array.owner_id,
        "name": spec.name,
        "attempt": 1,
        "image": spec.image,
        "cpu_millis": spec.resources.cpu_millis,
        "memory_bytes": spec.resources.memory_bytes,
        "state": TaskState.PENDING.value,
        "desired_state": DesiredState.RUN.value,
        "reason": Reason.SUBMITTED,
        "message": "",
        # Queue age is the array's: its elements keep their place in the queue.
        "created_at": array.created_at,
        "max_runtime_s": max_runtime_s,
        "stop_reason": "",
        "held": False,
        "gang_size": 0,
        "gang_nodes": False,
        **scheduling_fields(spec),
    }


def job_statuses(session: Session, workload_ids: Sequence[str]) -> dict[str, JobStatus]:
    """Each job's phase (pending, running, ended) and, once ended, whether every
    element's last attempt succeeded. Jobs that do not exist are left out."""
    wanted = list(set(workload_ids))
    exists_ = {
        str(w)
        for chunk in chunks(wanted)
        for w in session.scalars(select(Workload.id).where(Workload.id.in_(chunk)))
    }
    arrays = {
        a.workload_id: a
        for chunk in chunks(wanted)
        for a in session.scalars(select(JobArray).where(JobArray.workload_id.in_(chunk)))
    }
    placed: dict[str, int] = {}
    pending: dict[str, int] = {}
    for chunk in chunks(wanted):
        for workload_id, state, n in session.execute(
            select(Task.workload_id, Task.state, func.count())
            .where(Task.workload_id.in_(chunk), Task.state.in_(_LIVE))
            .group_by(Task.workload_id, Task.state)
        ).all():
            target = pending if state == TaskState.PENDING.value else placed
            target[workload_id] = target.get(workload_id, 0) + int(n)
    ended = [
        w
        for w in exists_
        if not placed.get(w)
        and not pending.get(w)
        and (w not in arrays or arrays[w].phase not in OPEN_STATES)
    ]
    succeeded: dict[str, int] = {}
    for chunk in chunks(ended):
        for workload_id, n in session.execute(
            select(Task.workload_id, func.count(func.distinct(func.coalesce(Task.array_index, -1))))
            .where(Task.workload_id.in_(chunk), Task.state == TaskState.SUCCEEDED.value)
            .group_by(Task.workload_id)
        ).all():
            succeeded[workload_id] = int(n)
    gangs = {
        str(w): int(n)
        for chunk in chunks(ended)
        for w, n in session.execute(
            select(Task.workload_id, func.max(Task.gang_size))
            .where(Task.workload_id.in_(chunk))
            .group_by(Task.workload_id)
        ).all()
    }
    out: dict[str, JobStatus] = {}
    for w in exists_:
        if placed.get(w):
            out[w] = JobStatus("running")
        elif pending.get(w) or (w in arrays and arrays[w].phase in OPEN_STATES):
            out[w] = JobStatus("pending")
        else:
            array = arrays.get(w)
            elements = array.total if array is not None else max(gangs.get(w, 0), 1)
            ok = (array is None or array.phase == RELEASED) and succeeded.get(w, 0) >= elements
            out[w] = JobStatus("ended", ok)
    return out


def _describe(each: list[tuple[str, str, str]], statuses: dict[str, JobStatus]) -> str:
    parts = []
    for kind, job, verdict in each:
        if verdict == MET:
            continue
        status = statuses.get(job)
        if status is None:
            parts.append(f"{job} (gone)")
        elif status.phase == "ended":
            outcome = "succeeded" if status.ok else "did not succeed"
            parts.append(f"{job} ({outcome}, needed {kind})")
        else:
            parts.append(f"{job} ({status.phase})")
    return ", ".join(parts)


def judge_dependencies(session: Session, now: float) -> None:
    held = list(
        session.execute(
            select(Task.id, Task.workload_id, Task.message, Task.owner_id).where(
                Task.held.is_(True), Task.state == TaskState.PENDING.value
            )
        ).all()
    )
    waiting = list(session.scalars(select(JobArray).where(JobArray.phase == WAITING)))
    dependants = {str(r.workload_id) for r in held} | {a.workload_id for a in waiting}
    if not dependants:
        return
    deps: dict[str, list[tuple[str, str]]] = {}
    for chunk in chunks(sorted(dependants)):
        for workload_id, kind, on in session.execute(
            select(JobDependency.workload_id, JobDependency.kind, JobDependency.on_workload_id)
            .where(JobDependency.workload_id.in_(chunk))
            .order_by(JobDependency.id)
        ).all():
            deps.setdefault(str(workload_id), []).append((str(kind), str(on)))
    statuses = job_statuses(session, [on for items in deps.values() for _, on in items])
    verdicts = {w: judge_all(deps.get(w, []), statuses) for w in dependants}
    release: dict[str, str] = {}
    fail: dict[str, tuple[str, str]] = {}
    messages: list[dict[str, Any]] = []
    for row in held:
        verdict, each = verdicts[str(row.workload_id)]
        if verdict == MET:
            release[row.id] = row.owner_id
        elif verdict == NEVER:
            text = "dependency can never be met: " + _describe(each, statuses)
            fail[row.id] = (text, row.owner_id)
        else:
            text = "waiting on " + _describe(each, statuses)
            if text != row.message:
                messages.append({"tid": row.id, "message": text})
    release_held(session, release)
    fail_held(session, fail)
    if messages:
        session.execute(
            update(_TASKS)
            .where(_TASKS.c.id == bindparam("tid"), _TASKS.c.state == TaskState.PENDING.value)
            .values(message=bindparam("message")),
            messages,
        )
    events: list[dict[str, Any]] = []
    for array in waiting:
        verdict, each = verdicts[array.workload_id]
        if verdict == MET:
            array.phase = RELEASING
            array.reason = Reason.SUBMITTED
            array.message = ""
        elif verdict == NEVER:
            array.phase = FAILED
            array.reason = Reason.DEPENDENCY_NEVER_SATISFIED
            array.message = "dependency can never be met: " + _describe(each, statuses)
            events.append(
                event_row(
                    EventKind.TASK,
                    Reason.DEPENDENCY_NEVER_SATISFIED,
                    f"array {array.workload_id}: {array.message}",
                    owner_id=array.owner_id,
                )
            )
        else:
            array.message = "waiting on " + _describe(each, statuses)
    insert_events(session, events)

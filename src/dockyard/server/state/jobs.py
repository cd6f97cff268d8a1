"""Submitting, finding and killing jobs: the operations behind the task API."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, insert, select, update
from sqlalchemy.orm import Session

from dockyard.core.ids import new_id
from dockyard.core.specs import JobSpec
from dockyard.core.states import PLACED_STATES, DesiredState, Reason, TaskState
from dockyard.scheduler.constraints import parse_constraints
from dockyard.server.state.auth import Principal
from dockyard.server.state.batch import chunks
from dockyard.server.state.events import EventKind, event_row, insert_events, record
from dockyard.server.state.workload_specs import remember_job
from dockyard.store.errors import NotFound
from dockyard.store.tables import JobDependency, Node, Task, Workload


def effective_max_runtime(spec: JobSpec, cap_s: float | None) -> float | None:
    """The job's own limit, bounded by the cluster-wide cap an admin configured."""
    limits = [x for x in (spec.max_runtime_s, cap_s) if x is not None]
    return min(limits) if limits else None


def submit_job(
    session: Session,
    owner: Principal,
    spec: JobSpec,
    max_runtime_cap_s: float | None = None,
    policy: dict[str, Any] | None = None,
    after: Sequence[tuple[str, str]] = (),
) -> Task:
    """Store a job and its first task (pending) in one transaction (a gang job: all
    its members; a job with dependencies ``after``, (kind, workload id) pairs: held)."""
    (task_id,) = insert_jobs(
        session, new_jobs(owner, [spec], max_runtime_cap_s, policy, [list(after)])
    )
    task = session.get(Task, task_id)
    assert task is not None  # inserted just now, in this transaction
    return task


@dataclass(frozen=True, slots=True)
class NewJobs:
    """The rows of jobs about to be submitted, built before the write transaction
    (building them is most of a submit's work: the store's writers queue on one lock)."""

    workloads: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    events: list[dict[str, Any]]
    specs: list[JobSpec]
    #: job_dependencies rows; the first task of each job, in order.
    dependencies: list[dict[str, Any]] = field(default_factory=list)
    first_tasks: list[str] = field(default_factory=list)


def new_jobs(
    owner: Principal,
    specs: Sequence[JobSpec],
    max_runtime_cap_s: float | None = None,
    policy: dict[str, Any] | None = None,
    after: Sequence[Sequence[tuple[str, str]]] | None = None,
) -> NewJobs:
    """The rows of jobs and their first tasks (pending), in order; nothing is written.
    Raises a 422 naming the first bad constraint. ``after``: per job, the resolved
    dependencies (kind, workload id); a job with some starts held."""
    for spec in specs:
        parse_constraints(spec.constraints)
    now = time.time()
    workloads = [
        {
            "id": new_id(),
            "owner_id": owner.user_id,
            "name": spec.name,
            "kind": "job",
            # The policy checked at submit travels with the spec; the agent checks again.
            "spec": {**spec.to_dict(), "policy": policy},
            "created_at": now,
        }
        for spec in specs
    ]
    waits = list(after or [()] * len(specs))
    tasks: list[dict[str, Any]] = []
    first_tasks: list[str] = []
    dependencies: list[dict[str, Any]] = []
    for spec, workload, deps in zip(specs, workloads, waits, strict=True):
        members = spec.gang_size or 1
        for rank in range(members):
            tasks.append(
                {
                    "id": new_id(),
                    "workload_id": workload["id"],
                    "owner_id": owner.user_id,
                    "name": spec.name,
                    "attempt": 1,
                    "image": spec.image,
                    "cpu_millis": spec.resources.cpu_millis,
                    "memory_bytes": spec.resources.memory_bytes,
                    "state": TaskState.PENDING.value,
                    "desired_state": DesiredState.RUN.value,
                    "reason": Reason.WAITING_DEPENDENCY if deps else Reason.SUBMITTED,
                    "message": "waiting on " + ", ".join(w for _, w in deps) if deps else "",
                    "created_at": now,
                    "max_runtime_s": effective_max_runtime(spec, max_runtime_cap_s),
                    "stop_reason": "",
                    "held": bool(deps),
                    "array_index": rank if spec.gang_size else None,
                    "gang_size": spec.gang_size,
                    "gang_nodes": spec.gang_nodes,
                    **scheduling_fields(spec),
                }
            )
            if rank == 0:
                first_tasks.append(tasks[-1]["id"])
        dependencies.extend(
            {"workload_id": workload["id"], "kind": kind, "on_workload_id": on} for kind, on in deps
        )
    events = [
        event_row(
            EventKind.TASK,
            Reason.SUBMITTED,
            f"job {task['name']} submitted",
            task_id=task["id"],
            owner_id=owner.user_id,
        )
        for task in tasks
    ]
    return NewJobs(workloads, tasks, events, list(specs), dependencies, first_tasks)


def insert_jobs(session: Session, jobs: NewJobs) -> list[str]:
    """Write :func:`new_jobs`' rows (one executemany per table); the task ids, in order."""
    connection = session.connection()
    if jobs.workloads:
        connection.execute(insert(cast(Table, Workload.__table__)), jobs.workloads)
        connection.execute(insert(cast(Table, Task.__table__)), jobs.tasks)
    if jobs.dependencies:
        connection.execute(insert(cast(Table, JobDependency.__table__)), jobs.dependencies)
    insert_events(session, jobs.events)
    for workload, spec in zip(jobs.workloads, jobs.specs, strict=True):
        remember_job(workload["id"], spec, workload["spec"])
    return list(jobs.first_tasks)


def scheduling_fields(spec: JobSpec) -> dict[str, Any]:
    """The task columns the scheduler reads, from a job's spec."""
    return {
        "priority": spec.priority,
        "constraints": list(spec.constraints),
        "ports": ",".join(str(p) for p in spec.ports),
        "gpus": spec.gpus,
        "algorithm": spec.algorithm,
    }


def visible_tasks(principal: Principal) -> Sequence[ColumnElement[bool]]:
    """WHERE clauses limiting tasks to what ``principal`` may see."""
    if principal.is_admin:
        return ()
    return (Task.owner_id == principal.user_id,)


def find_task(session: Session, principal: Principal, ref: str) -> Task:
    """Find a task by id or by name (newest first) among those the caller may see.

    Tasks of other users are reported as not found, so their existence leaks nothing.
    """
    task = session.scalar(task_ref_query(principal, ref, by_id=True))
    if task is None:
        task = session.scalar(task_ref_query(principal, ref, by_id=False))
    if task is None:
        raise NotFound("task", ref)
    return task


def task_ref_query(principal: Principal, ref: str, *, by_id: bool) -> Select[Task]:
    """The task with id ``ref`` (``by_id``), or else the newest named ``ref``, among
    those ``principal`` may see. Two indexed lookups (the primary key, then
    ``ix_tasks_name_created`` / ``ix_tasks_owner_name``): one query with ``id = ref
    OR name = ref`` could use neither index and scanned every task."""
    key = Task.id == ref if by_id else Task.name == ref
    query = select(Task).where(key, *visible_tasks(principal))
    return query if by_id else query.order_by(Task.created_at.desc()).limit(1)


def bump_generations(session: Session, node_ids: Iterable[str | None]) -> None:
    """These nodes' desired task sets changed: their agents must converge again."""
    wanted = {n for n in node_ids if n is not None}
    for chunk in chunks(sorted(wanted)):
        session.execute(
            update(Node).where(Node.id.in_(chunk)).values(generation=Node.generation + 1)
        )


def request_stop(session: Session, task: Task, stop_reason: str, message: str) -> None:
    """Set a placed task's desired state to stop; its agent converges."""
    if task.desired_state == DesiredState.STOP:
        return
    task.desired_state = DesiredState.STOP
    task.stop_requested_at = time.time()
    task.stop_reason = stop_reason
    bump_generations(session, [task.node_id])
    record(
        session,
        EventKind.TASK,
        Reason.KILL_REQUESTED if stop_reason == Reason.KILLED else stop_reason,
        message,
        task=task,
    )


def placed_tasks(session: Session, node_id: str) -> list[Task]:
    return list(
        session.scalars(
            select(Task).where(
                Task.node_id == node_id, Task.state.in_([s.value for s in PLACED_STATES])
            )
        )
    )

"""What happens after a task ends: restarts with back-off and reschedules.

A gang job's members are one job: a member that ends other than by succeeding
ends its whole attempt. The others are stopped (reason ``gang_member_ended``) and,
when the restart policy gives the ended member another attempt, every rank gets
one, queued as a gang again (placed all at once); otherwise the gang fails as a
whole. As Slurm does for a multi-node job and Volcano's ``RestartJob`` policy.
"""

from __future__ import annotations

import time
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dockyard.core.ids import new_id
from dockyard.core.policy import Attempt, Decision, decide
from dockyard.core.states import PLACED_STATES, DesiredState, Reason, TaskState
from dockyard.server.state.events import EventKind, record
from dockyard.server.state.jobs import request_stop
from dockyard.server.state.workload_specs import WorkloadSpec, workload_specs
from dockyard.store.tables import Task


class Ended(Protocol):
    """What deciding on a replacement reads of an ended task (a row or an ORM object)."""

    @property
    def state(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def started_at(self) -> float | None: ...
    @property
    def finished_at(self) -> float | None: ...
    @property
    def stop_reason(self) -> str: ...


def may_replace(workload: WorkloadSpec | None, task: Ended) -> bool:
    """False when the job certainly gets no next attempt after ``task``.

    More history only uses up attempts: if this attempt alone gets no replacement
    (it succeeded, was killed, the policy is never...), neither does the job.
    Service replicas are replaced by the service controller, not here.
    """
    if workload is None or workload.kind != "job":
        return False
    if workload.spec.gang_size > 1 and ends_gang(task):
        return True  # its gang restarts or stops as a whole (follow_up)
    return decide(workload.spec.restart, [_attempt(task)]).replace


def ends_gang(task: Ended) -> bool:
    """A gang member's end that ends its gang's attempt: anything but success, and
    not a stop the gang itself asked for."""
    return task.state != TaskState.SUCCEEDED and task.stop_reason != Reason.GANG_MEMBER_ENDED


def follow_up(session: Session, task: Task) -> Task | None:
    """Create the next attempt of ``task``'s job if its policy asks for one.

    Only the newest attempt of a job is followed up, so a task is replaced at
    most once however many times its end is reported.
    """
    workload = workload_specs(session, [task.workload_id]).get(task.workload_id)
    if workload is None or not may_replace(workload, task):
        return None
    spec = workload.spec
    # An array element or a gang member has attempts of its own (by index).
    element = (
        Task.array_index.is_(None)
        if task.array_index is None
        else Task.array_index == task.array_index
    )
    newest = session.scalar(
        select(func.max(Task.attempt)).where(Task.workload_id == task.workload_id, element)
    )
    if newest != task.attempt:
        return None
    history = [
        _attempt(t)
        for t in session.scalars(
            select(Task).where(Task.workload_id == task.workload_id, element).order_by(Task.attempt)
        )
    ]
    # A preempted attempt is requeued at once and counts for nothing in the policy
    # (core.policy.decide); it was charged for what it ran (its accounting record).
    decision = decide(spec.restart, history)
    if spec.gang_size > 1:
        return _follow_gang(session, task, decision, spec.gang_size, spec.gang_nodes)
    if not decision.replace:
        return None
    return _replace(session, task, decision)


def _follow_gang(
    session: Session, task: Task, decision: Decision, size: int, own_nodes: bool
) -> Task | None:
    """Stop the rest of the gang's attempt; restart every rank, or none."""
    if not ends_gang(task) or task.array_index is None:
        return None
    then = "the gang restarts" if decision.replace else "the gang fails as a whole"
    why = f"gang member {task.array_index} ended ({task.state}: {task.reason}); {then}"
    live = [s.value for s in PLACED_STATES]
    newest: dict[int, Task] = {}
    for other in session.scalars(
        select(Task).where(Task.workload_id == task.workload_id).order_by(Task.attempt)
    ):
        if other.array_index is not None:
            newest[other.array_index] = other
        # Filtered here too: a caller may hold changes not flushed (mark_down).
        if other.id != task.id and other.state in live and other.desired_state == DesiredState.RUN:
            request_stop(session, other, Reason.GANG_MEMBER_ENDED, why)
    if not decision.replace:
        return None
    mine = None
    for rank in range(size):
        previous = newest.get(rank, task)
        again = _replace(session, previous, decision, attempt=task.attempt + 1, rank=rank)
        again.gang_size, again.gang_nodes = size, own_nodes
        mine = again if rank == task.array_index else mine
    session.flush()  # the other ranks' ends see these attempts as their newest
    return mine


def _replace(
    session: Session,
    task: Task,
    decision: Decision,
    *,
    attempt: int | None = None,
    rank: int | None = None,
) -> Task:
    """The next attempt after ``task`` (of ``rank`` for a gang)."""
    now = time.time()
    replacement = Task(
        id=new_id(),
        workload_id=task.workload_id,
        owner_id=task.owner_id,
        name=task.name,
        attempt=task.attempt + 1 if attempt is None else attempt,
        image=task.image,
        cpu_millis=task.cpu_millis,
        memory_bytes=task.memory_bytes,
        state=TaskState.PENDING,
        desired_state=DesiredState.RUN,
        reason="backoff" if decision.delay_s > 0 else "rescheduled",
        message=decision.why,
        created_at=now,
        not_before=now + decision.delay_s if decision.delay_s > 0 else None,
        previous_task_id=task.id,
        max_runtime_s=task.max_runtime_s,
        stop_reason="",
        priority=task.priority,
        constraints=list(task.constraints or []),
        ports=task.ports,
        gpus=task.gpus,
        algorithm=task.algorithm,
        array_index=rank if rank is not None else task.array_index,
        # A gang's new attempt is a gang again (set by _follow_gang): all ranks
        # placed at once or none.
        gang_size=0,
        gang_nodes=False,
    )
    session.add(replacement)  # events have no foreign key to it: one flush serves all
    kind = {"reschedule": "rescheduled", "preempted": "requeued"}.get(
        decision.kind, "restart_scheduled"
    )
    record(
        session, EventKind.TASK, kind, f"replaced by {replacement.id}: {decision.why}", task=task
    )
    record(
        session,
        EventKind.TASK,
        kind,
        f"attempt {replacement.attempt}, replaces {task.id}",
        task=replacement,
    )
    return replacement


def _attempt(task: Ended) -> Attempt:
    return Attempt(
        state=TaskState(task.state),
        reason=task.reason,
        ran_for_s=(task.finished_at or 0.0) - task.started_at if task.started_at else 0.0,
        stop_reason=task.stop_reason,
        ended_at=task.finished_at or 0.0,
    )

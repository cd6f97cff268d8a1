"""Preemption's shell: read candidates, let :mod:`dockyard.scheduler.preempt` decide,
ask the victims to stop (docs/scheduler.md, Preemption).

Off unless the server runs with ``DOCKYARD_PREEMPTION=1``. A victim is stopped
like any task (SIGTERM, its grace, SIGKILL; a checkpointing job's signal instead of
SIGTERM, see docs/scheduler.md, Cooperative checkpoints), ends ``killed`` with
reason ``preempted``, is charged for what it ran (its accounting record) and is
requeued as a new attempt whatever its restart policy (and uses none of it). Both
sides get an event naming the other and why.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.states import PLACED_STATES, DesiredState, Reason
from dockyard.scheduler.fairshare import factors
from dockyard.scheduler.placement import NodeView
from dockyard.scheduler.preempt import Contender, Eviction, Victim, plan_evictions
from dockyard.server.state.events import EventKind, event_row, insert_events
from dockyard.server.state.jobs import request_stop
from dockyard.server.state.workload_specs import workload_specs
from dockyard.store.tables import Task


def enabled() -> bool:
    return os.environ.get("DOCKYARD_PREEMPTION", "").lower() in ("1", "true", "on", "yes")


def victims(session: Session) -> list[Victim]:
    """Placed tasks of jobs (service replicas are never preempted)."""
    rows = list(
        session.execute(
            select(
                Task.id,
                Task.node_id,
                Task.owner_id,
                Task.priority,
                Task.cpu_millis,
                Task.memory_bytes,
                Task.gpus,
                Task.started_at,
                Task.desired_state,
                Task.workload_id,
            ).where(Task.state.in_([s.value for s in PLACED_STATES]), Task.node_id.is_not(None))
        ).all()
    )
    specs = workload_specs(session, {r.workload_id for r in rows})
    out = []
    for r in rows:
        spec = specs.get(r.workload_id)
        if spec is None or spec.kind != "job":
            continue
        out.append(
            Victim(
                r.id,
                str(r.node_id),
                r.owner_id,
                int(r.priority or 0),
                r.cpu_millis,
                r.memory_bytes,
                int(r.gpus or 0),
                r.started_at,
                float(spec.spec.min_runtime_s or 0.0),
                r.desired_state == DesiredState.STOP,
            )
        )
    return out


def contender(row: Any, constraints: Any) -> Contender:
    return Contender(
        row.id,
        row.owner_id,
        int(row.priority or 0),
        row.cpu_millis,
        row.memory_bytes,
        int(row.gpus or 0),
        constraints,
    )


def decide(
    session: Session,
    blocked: Sequence[Contender],
    nodes: Sequence[NodeView],
    usage: dict[str, float],
    shares: dict[str, float],
    now: float,
) -> list[Eviction]:
    if not blocked:
        return []
    return plan_evictions(blocked, nodes, victims(session), factors(usage, shares), now)


def apply(session: Session, evictions: Sequence[Eviction], owners: dict[str, str]) -> None:
    """Ask each victim to stop (reason ``preempted``); events on both sides."""
    if not evictions:
        return
    tasks = {
        t.id: t
        for t in session.scalars(select(Task).where(Task.id.in_([e.victim for e in evictions])))
    }
    events = []
    for e in evictions:
        task = tasks.get(e.victim)
        if task is None or task.desired_state == DesiredState.STOP:
            continue
        request_stop(session, task, Reason.PREEMPTED, f"preempted for {e.gainer}: {e.why}")
        events.append(
            event_row(
                EventKind.TASK,
                "preempting",
                f"preempting {e.victim} on {e.node_id}: {e.why}",
                task_id=e.gainer,
                owner_id=owners.get(e.gainer),
            )
        )
    insert_events(session, events)

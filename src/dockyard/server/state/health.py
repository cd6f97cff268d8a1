"""Applying the health of service replicas as their agents report it. Idempotent."""

from __future__ import annotations

from sqlalchemy.orm import Session

from dockyard.core.services import Health
from dockyard.core.states import TaskState
from dockyard.protocol.messages import HealthReport
from dockyard.server.state.events import EventKind, record
from dockyard.store.tables import Task

#: Event reasons of health transitions.
HEALTH_REASONS = {
    Health.STARTING: "health_starting",
    Health.HEALTHY: "healthy",
    Health.UNHEALTHY: "unhealthy",
}


def apply_health(session: Session, node_id: str, report: HealthReport) -> bool:
    """Apply one ``health`` message from ``node_id``; True if the task's health changed.

    Only a live task placed on that node is touched. ``at`` is the node's clock
    at the transition and is stored as ``health_at``: a report not newer than the
    stored one (a re-sent message whose ack was lost, overtaken by a later
    transition) is ignored, so the last transition wins whatever the arrival order.
    """
    try:
        health = Health(report.health)
    except ValueError:
        return False
    if health == Health.NONE:
        return False
    at = float(report.at)
    task = session.get(Task, report.task_id)
    if task is None or task.node_id != node_id:
        return False
    try:
        if TaskState(task.state).terminal:
            return False
    except ValueError:
        return False
    if task.health_at is not None and at <= task.health_at:
        return False
    previous = task.health
    task.health = health.value
    task.health_at = at
    if previous == health.value:
        return False
    message = report.message[:1000] or f"health {previous or 'none'} -> {health}"
    record(session, EventKind.TASK, HEALTH_REASONS[health], message, task=task)
    return True

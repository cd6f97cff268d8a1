"""The server applying agents' health messages: idempotent, ordered, events on transitions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from dockyard.core.states import TaskState
from dockyard.protocol.messages import HealthReport
from dockyard.server.state.health import apply_health
from dockyard.store.db import Database
from dockyard.store.tables import Event, Node, Task, User, Workload


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'store.db'}")
    database.migrate()
    now = time.time()
    with database.write() as session:
        session.add(User(id="u", name="alice", created_at=now))
        session.add(
            Node(
                id="n1",
                name="n1",
                state="ready",
                cpu_millis=1000,
                memory_bytes=1 << 30,
                registered_at=now,
                last_heartbeat_at=now,
            )
        )
        session.add(
            Workload(id="w", owner_id="u", name="web", kind="service", spec={}, created_at=now)
        )
        session.flush()
        session.add(
            Task(
                id="t",
                workload_id="w",
                owner_id="u",
                name="web",
                image="i",
                cpu_millis=100,
                memory_bytes=1 << 20,
                state=TaskState.RUNNING,
                node_id="n1",
                created_at=now,
                port_map=[[8080, 20001]],
            )
        )
    try:
        yield database
    finally:
        database.dispose()


def _apply(db: Database, node_id: str, health: str, at: float, message: str = "") -> bool:
    with db.write() as session:
        return apply_health(session, node_id, HealthReport(node_id, "t", health, message, at))


def _state(db: Database) -> tuple[str, float | None, list[tuple[str, str]]]:
    with db.read() as session:
        task = session.get(Task, "t")
        assert task is not None
        events = [
            (e.reason, e.message)
            for e in session.scalars(select(Event).where(Event.task_id == "t").order_by(Event.id))
        ]
        return task.health, task.health_at, events


def test_transitions_are_stored_with_an_event_each(db: Database) -> None:
    assert _apply(db, "n1", "starting", 10.0, "http check every 2s")
    assert _apply(db, "n1", "healthy", 11.0, "GET / -> 200")
    assert _apply(db, "n1", "unhealthy", 12.0, "3 checks failed in a row")
    health, at, events = _state(db)
    assert (health, at) == ("unhealthy", 12.0)
    assert events == [
        ("health_starting", "http check every 2s"),
        ("healthy", "GET / -> 200"),
        ("unhealthy", "3 checks failed in a row"),
    ]


def test_resent_and_overtaken_reports_change_nothing(db: Database) -> None:
    assert _apply(db, "n1", "healthy", 11.0)
    assert not _apply(db, "n1", "healthy", 11.0)  # the same message again (ack lost)
    assert _apply(db, "n1", "unhealthy", 12.0)
    assert not _apply(db, "n1", "healthy", 11.0)  # an older one arriving late
    health, at, events = _state(db)
    assert (health, at) == ("unhealthy", 12.0)
    assert [r for r, _ in events] == ["healthy", "unhealthy"]


def test_reports_from_another_node_bad_values_or_for_ended_tasks_are_ignored(
    db: Database,
) -> None:
    assert not _apply(db, "n2", "healthy", 11.0)
    assert not _apply(db, "n1", "great", 11.0)
    assert not _apply(db, "n1", "", 11.0)
    with db.write() as session:
        assert not apply_health(session, "n1", HealthReport("n1", "t2", "healthy", "", 11.0))
        task = session.get(Task, "t")
        assert task is not None
        task.state = TaskState.FAILED
    assert not _apply(db, "n1", "healthy", 11.0)
    assert _state(db) == ("", None, [])

"""state/tasks.advance, the gate's reported moves: times of a task whose RUNNING
report was lost come from the runtime's own duration, judged on the server's clock."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dockyard.core.states import run_seconds
from dockyard.protocol.messages import TaskStatus
from dockyard.server.state.tasks import ENDED, TaskRow, advance


def row(**values: Any) -> TaskRow:
    now = time.time()
    base: dict[str, Any] = {
        "id": "t-1",
        "node_id": "n-1",
        "state": "assigned",
        "stop_reason": "",
        "reason": "placed",
        "message": "",
        "container_id": "",
        "started_at": None,
        "finished_at": None,
        "exit_code": None,
        "log_lines_total": None,
        "cpu_seconds": 0.0,
        "max_memory_bytes": 0,
        "memory_gib_s": 0.0,
        "owner_id": "u-1",
        "workload_id": "w-1",
        "name": "job",
        "image": "busybox",
        "attempt": 1,
        "created_at": now - 200,
        "cpu_millis": 100,
        "memory_bytes": 64 << 20,
        "assigned_at": now - 100,
    }
    return TaskRow(**{**base, **values})


def ended(started: str | None, finished: str | None) -> TaskStatus:
    return TaskStatus(
        "t-1", "succeeded", "exit_zero", exit_code=0, started_at=started, finished_at=finished
    )


def test_a_lost_running_report_still_gives_the_run_its_duration() -> None:
    """The agent's clock is an hour ahead: only its duration (30 s) is used."""
    task = row()
    events: list[dict[str, Any]] = []
    report = ended("2026-12-03T13:00:00.123456789Z", "2026-12-03T13:00:30.123456789Z")
    assert advance(task, report, events) == ENDED
    assert task.started_at is not None and task.finished_at is not None
    assert task.finished_at - task.started_at == pytest.approx(30.0, abs=0.01)
    assert task.finished_at <= time.time()


def test_a_runtime_duration_longer_than_the_placement_is_clamped() -> None:
    task = row()
    assert task.assigned_at is not None
    report = ended("2026-12-03T10:00:00Z", "2026-12-03T12:00:00Z")  # 2 h, placed 100 s ago
    advance(task, report, [])
    assert task.started_at == task.assigned_at


def test_a_received_running_report_keeps_the_servers_start() -> None:
    task = row(state="running", started_at=time.time() - 5)
    start = task.started_at
    advance(task, ended("2026-12-03T10:00:00Z", "2026-12-03T11:00:00Z"), [])
    assert task.started_at == start


@pytest.mark.parametrize(
    ("started", "finished"),
    [
        (None, None),
        ("garbage", "2026-12-03T10:00:00Z"),
        ("2026-12-03T10:00:10Z", "2026-12-03T10:00:00Z"),
    ],
)
def test_unusable_runtime_times_leave_the_start_unknown(
    started: str | None, finished: str | None
) -> None:
    task = row()
    advance(task, ended(started, finished), [])
    assert task.started_at is None
    assert run_seconds(started, finished) is None


def test_run_seconds_reads_docker_times() -> None:
    assert run_seconds("2026-12-03T10:00:00.5Z", "2026-12-03T10:00:02.000000001Z") == 1.5
    assert run_seconds("2026-12-03T10:00:00+01:00", "2026-12-03T09:00:01Z") == 1.0

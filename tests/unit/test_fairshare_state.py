"""The scheduler's fair-share cache reads each accounting record once (issue 19) and
still equals a fresh sum over every record, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Table, insert

from dockyard.scheduler.fairshare import FairShareConfig
from dockyard.server.control import scheduling
from dockyard.server.control.scheduling import FairShareState, fair_share_now
from dockyard.store.db import Database, sqlite_url
from dockyard.store.tables import Accounting, User
from dockyard.testing import postgres

ACCOUNTING = cast(Table, Accounting.__table__)
CONFIG = FairShareConfig(half_life_s=600.0)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with postgres.store_for(str(request.param), "dy_fairshare") as url:
        database = Database(url or sqlite_url(tmp_path))
        database.migrate()
        with database.write() as session:
            for name in ("ann", "bob"):
                session.add(User(id=f"u-{name}", name=name, is_admin=False, created_at=1.0))
        try:
            yield database
        finally:
            database.dispose()


def record(i: int, owner: str, ended_at: float, wall_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "task_id": f"t{i}",
        "workload_id": f"w{i}",
        "job_name": "j",
        "owner_id": f"u-{owner}",
        "owner": owner,
        "node": "n",
        "image": "busybox",
        "attempt": 1,
        "state": "succeeded",
        "reason": "",
        "exit_code": 0,
        "submitted_at": ended_at - wall_s - 1,
        "started_at": ended_at - wall_s,
        "ended_at": ended_at,
        "wall_s": wall_s,
        "cpu_s": 0.0,
        "max_memory_bytes": 0,
        "memory_gib_s": 0.0,
        "gpu_s": 0.0,
        "cpu_limit": 1.0 + i % 3,
        "memory_limit_bytes": (i % 5) << 30,
        "quota": {},
        "array_index": None,
        **extra,
    }


def add(db: Database, rows: list[dict[str, Any]]) -> None:
    with db.write() as session:
        session.connection().execute(insert(ACCOUNTING), rows)


def fresh(db: Database, now: float) -> dict[str, float]:
    with db.read() as session:
        return fair_share_now(session, now, CONFIG).usage


def cached(db: Database, state: FairShareState, now: float) -> dict[str, float]:
    with db.read() as session:
        return state.current(session, now, force=False)


def test_new_records_are_added_once_and_the_sum_matches(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduling, "USAGE_SEQ_MARGIN", 3)
    state = FairShareState(CONFIG)
    now = 10_000.0
    add(
        db,
        [record(i, "ann" if i % 2 else "bob", now - 100 + i, 30.0, seq=i + 1) for i in range(20)],
    )
    assert cached(db, state, now) == pytest.approx(fresh(db, now), rel=1e-9)
    # Later: more records, one of them under a seq below the newest (committed late,
    # as PostgreSQL may), and one far below (read by the periodic rebuild only).
    now += scheduling.USAGE_TTL_S
    seqs = [*range(22, 30), 31, 32]  # 30 left free
    add(
        db,
        [
            record(i, "ann", now - 5, 4.0, seq=seq)
            for i, seq in zip(range(20, 30), seqs, strict=True)
        ],
    )
    cached(db, state, now)
    add(db, [record(30, "bob", now - 2, 1.5, seq=30)])  # within the margin of 32
    now += scheduling.USAGE_TTL_S
    assert cached(db, state, now) == pytest.approx(fresh(db, now), rel=1e-9)
    # Within the TTL nothing is read again; a repeat refresh adds nothing twice.
    before = cached(db, state, now + 1)
    assert before == cached(db, state, now)
    now += scheduling.USAGE_TTL_S
    assert cached(db, state, now) == pytest.approx(fresh(db, now), rel=1e-9)


def test_a_record_below_the_margin_waits_for_the_rebuild(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduling, "USAGE_SEQ_MARGIN", 2)
    state = FairShareState(CONFIG)
    now = 10_000.0
    add(db, [record(i, "ann", now - 50, 10.0, seq=100 + i) for i in range(10)])
    cached(db, state, now)
    add(db, [record(99, "bob", now - 10, 5.0, seq=50)])  # far below the newest seq
    now += scheduling.USAGE_TTL_S
    assert "u-bob" not in cached(db, state, now)
    now += scheduling.USAGE_REBUILD_S
    assert cached(db, state, now) == pytest.approx(fresh(db, now), rel=1e-9)
    assert "u-bob" in cached(db, state, now)

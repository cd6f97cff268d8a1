"""store.bulk.executemany writes what SQLAlchemy's own executemany writes (issue 19)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Table, bindparam, insert, select, update

from dockyard.server.state.events import event_row, insert_events
from dockyard.store.bulk import executemany
from dockyard.store.db import Database, sqlite_url
from dockyard.store.tables import Event, Node, Task, User, Workload
from dockyard.testing import postgres

TASKS = cast(Table, Task.__table__)
STMT = (
    update(TASKS)
    .where(TASKS.c.id == bindparam("tid"), TASKS.c.state == "pending")
    .values(
        state="assigned",
        node_id=bindparam("node"),
        assigned_at=bindparam("now"),
        port_map=bindparam("port_map"),
        pending_detail=None,
        message="",
    )
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with postgres.store_for(str(request.param), "dy_bulk") as url:
        database = Database(url or sqlite_url(tmp_path))
        database.migrate()
        try:
            yield database
        finally:
            database.dispose()


def _seed(db: Database, prefix: str, n: int) -> None:
    with db.write() as session:
        if prefix == "a":
            for i in range(n):
                session.add(
                    Node(
                        id=f"n{i}",
                        name=f"n{i}",
                        state="ready",
                        cpu_millis=1000,
                        memory_bytes=1 << 30,
                        registered_at=1.0,
                        last_heartbeat_at=1.0,
                    )
                )
        session.add(User(id=f"u-{prefix}", name=f"user-{prefix}", is_admin=False, created_at=1.0))
        session.flush()
        session.add(
            Workload(id=f"w-{prefix}", owner_id=f"u-{prefix}", name=prefix, spec={}, created_at=1.0)
        )
        session.flush()
        for i in range(n):
            session.add(
                Task(
                    id=f"{prefix}-{i}",
                    workload_id=f"w-{prefix}",
                    owner_id=f"u-{prefix}",
                    name=f"{prefix}-{i}",
                    image="busybox",
                    cpu_millis=100,
                    memory_bytes=1024,
                    state="running" if i == n - 1 else "pending",
                    message="waiting",
                    pending_detail={"fit": 0},
                    created_at=float(i),
                )
            )


def _rows(db: Database, prefix: str) -> list[Any]:
    cols = (TASKS.c.id, TASKS.c.state, TASKS.c.node_id, TASKS.c.assigned_at)
    extra = (TASKS.c.port_map, TASKS.c.pending_detail, TASKS.c.message)
    with db.read() as session:
        query = select(*cols, *extra).where(TASKS.c.id.like(f"{prefix}-%")).order_by(TASKS.c.id)
        return [tuple(r)[1:] for r in session.execute(query).all()]


def test_same_rows_as_sqlalchemy_executemany(db: Database) -> None:
    for prefix in ("a", "b"):
        _seed(db, prefix, 5)
    # Rows 0-3 pending (updated), row 4 running (the guard leaves it), one unknown id.
    params = [{"node": f"n{i}", "now": 10.0 + i, "port_map": [[80, 20000 + i]]} for i in range(5)]
    with db.write() as session:
        executemany(
            session.connection(),
            STMT,
            [{"tid": f"a-{i}", **p} for i, p in enumerate(params)] + [{"tid": "zz", **params[0]}],
        )
        session.connection().execute(STMT, [{"tid": f"b-{i}", **p} for i, p in enumerate(params)])
    fast, reference = _rows(db, "a"), _rows(db, "b")
    assert fast == reference
    assert fast[0] == ("assigned", "n0", 10.0, [[80, 20000]], None, "")
    assert fast[4][0] == "running" and fast[4][1] is None


def test_inserts_take_every_column_or_are_refused(db: Database) -> None:
    events = cast(Table, Event.__table__)
    rows = [
        event_row("task", "placed", f"placed on n{i}", task_id=f"t{i}", owner_id="u")
        for i in range(3)
    ]
    with db.write() as session:
        insert_events(session, rows)  # all of event_row's columns: store.bulk
        insert_events(session, [{"at": 1.0, "kind": "node", "node_id": "n9"}])  # defaults
        partial = insert(events).values(at=bindparam("at"), kind=bindparam("kind"))
        with pytest.raises(TypeError, match="must name"):  # reason, message: defaults
            executemany(session.connection(), partial, [{"at": 1.0, "kind": "x"}])
        with pytest.raises(TypeError, match="lacks the bind"):
            executemany(session.connection(), insert(TASKS), [{"id": "x"}])
        with pytest.raises(TypeError, match="UPDATE and INSERT"):
            executemany(session.connection(), select(TASKS), [{}])  # type: ignore[arg-type]
    with db.read() as session:
        got = session.execute(
            select(events.c.reason, events.c.message, events.c.task_id, events.c.node_id).order_by(
                events.c.id
            )
        ).all()
    assert [tuple(r) for r in got][-4:] == [
        ("placed", "placed on n0", "t0", None),
        ("placed", "placed on n1", "t1", None),
        ("placed", "placed on n2", "t2", None),
        ("", "", None, "n9"),
    ]

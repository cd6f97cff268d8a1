"""Applying what agents report: task state changes and log lines. Idempotent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dockyard.protocol.messages import LogLine as ShippedLine
from dockyard.protocol.messages import TaskStatus
from dockyard.server.state.accounting import charge_all
from dockyard.server.state.batch import chunks
from dockyard.server.state.events import insert_events
from dockyard.server.state.jobs import bump_generations
from dockyard.server.state.lifecycle import follow_up, may_replace
from dockyard.server.state.tasks import (
    CHANGED,
    ENDED,
    UNCHANGED,
    TaskRow,
    advance,
    read_rows,
    write_rows,
)
from dockyard.server.state.workload_specs import workload_specs
from dockyard.store.tables import LogLine, Task

MAX_LINE = 64 * 1024


def _text(value: str) -> str:
    """A line as a text column takes it: PostgreSQL refuses NUL (one NUL failed the
    whole batch, re-sent forever), so it becomes U+FFFD, like undecodable bytes."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def apply_statuses(
    session: Session, reports: list[tuple[str, TaskStatus]]
) -> tuple[bool, set[str]]:
    """Apply many ``(node id, update)`` status reports, in order, in one transaction.

    The tasks are read in one query and changed in memory; then the changed rows,
    their events and the accounting records of tasks that ended are written with
    one executemany each, and each node whose desired set lost a task gets one
    generation bump. Jobs whose policy asks for another attempt get it
    (:func:`follow_up`). Returns whether any task changed state, and the nodes
    whose tasks ended (they must converge).
    """
    rows = read_rows(session, {u.task_id for _, u in reports})
    was = {tid: row.state for tid, row in rows.items()}
    events: list[dict[str, Any]] = []
    written: dict[str, TaskRow] = {}
    ended: dict[str, TaskRow] = {}
    changed = False
    for node_id, report in reports:
        row = rows.get(report.task_id)
        if row is None or row.node_id != node_id:
            continue  # a stale copy's report, or an unknown task
        outcome = advance(row, report, events)
        if outcome != UNCHANGED:
            written[row.id] = row
        changed = changed or outcome in (CHANGED, ENDED)
        if outcome == ENDED:
            ended[row.id] = row
    write_rows(session, written.values(), was)
    insert_events(session, events)
    charge_all(session, list(ended.values()))
    workloads = workload_specs(session, {r.workload_id for r in ended.values()})
    for row in ended.values():
        if may_replace(workloads.get(row.workload_id), row):
            task = session.get(Task, row.id, populate_existing=True)
            if task is not None:
                follow_up(session, task)
    nodes = {r.node_id for r in ended.values() if r.node_id}
    bump_generations(session, nodes)
    return changed, nodes


def store_logs(
    session: Session, shipped: Sequence[tuple[str, Sequence[ShippedLine]]], dialect: str
) -> int:
    """Insert log lines shipped by nodes, ``(node id, lines)`` per batch, in one
    statement; lines of tasks not placed on the node that sent them are dropped,
    and lines already stored (same task, stream, seq) are ignored."""
    task_ids = {
        line.task_id for _, lines in shipped for line in lines if "\x00" not in line.task_id
    }
    if not task_ids:
        return 0
    placed_on = {
        (str(task_id), str(node_id))
        for chunk in chunks(list(task_ids))
        for task_id, node_id in session.execute(
            select(Task.id, Task.node_id).where(Task.id.in_(chunk))
        )
    }
    rows = [
        {
            "task_id": task_id,
            "stream": "stderr" if stream == "stderr" else "stdout",
            "seq": seq,
            "ts": _text(ts[:40]),
            "line": _text(text[:MAX_LINE]),
        }
        for node_id, lines in shipped
        for task_id, stream, seq, ts, text in lines
        if (task_id, node_id) in placed_on
    ]
    if not rows:
        return 0
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # executemany of one cached statement: a multi-row VALUES clause is compiled
    # anew for every batch size (that compile was a fifth of the apply thread's time).
    table = cast(Table, LogLine.__table__)
    result = session.connection().execute(insert(table).on_conflict_do_nothing(), rows)
    inserted = getattr(result, "rowcount", -1)  # rows really inserted (duplicates skipped)
    return int(inserted) if isinstance(inserted, int) and inserted >= 0 else len(rows)

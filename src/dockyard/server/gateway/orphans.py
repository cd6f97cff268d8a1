"""Answering agents about other node ids on their Docker Engine (``foreign``).

An agent that lost its data dir re-joins under a new node id and its old
containers keep running under the old one. Agents sharing an Engine list the
containers of other node ids and ask; the answer (``orphans``) names only the
node ids no live agent uses: ``down`` and silent for longer than ``grace_s``, and
not heard from by this gateway within ``grace_s``. A node id unknown to the store
is never an orphan: it may belong to another cluster sharing the Engine. The
agent's ``reaped`` report is recorded as an ``orphan_containers_reaped`` node
event on the orphaned node id.
"""

from __future__ import annotations

import time

from dockyard.protocol.messages import Foreign, Orphans, Reaped
from dockyard.server.gateway.gateway import Gateway
from dockyard.server.state import nodes as node_ops
from dockyard.server.state.events import EventKind, record
from dockyard.store.db import Database

#: Default orphan grace, s: a node id down and silent this long has its containers removed.
DEFAULT_GRACE_S = 60.0
#: Task ids named in one event's message.
EVENT_TASKS = 20


class OrphanCheck:
    """Gateway handlers for ``foreign`` and ``reaped`` (apply thread)."""

    def __init__(self, db: Database, gateway: Gateway, grace_s: float = DEFAULT_GRACE_S) -> None:
        self._db = db
        self._gateway = gateway
        self._grace_s = grace_s

    def wire(self) -> None:
        self._gateway.handle(Foreign, self.on_foreign)
        self._gateway.handle(Reaped, self.on_reaped)

    def on_foreign(self, node_id: str, msg: Foreign) -> None:
        now = time.monotonic()
        seen = self._gateway.last_seen()
        asked = [
            n
            for n in dict.fromkeys(msg.node_ids)
            if n != node_id and now - seen.get(n, -float("inf")) >= self._grace_s
        ]
        with self._db.read() as session:
            orphans = node_ops.orphaned(session, asked, time.time() - self._grace_s)
        self._gateway.send(node_id, Orphans(tuple(orphans)))

    def on_reaped(self, node_id: str, msg: Reaped) -> None:
        shown = ", ".join(msg.task_ids[:EVENT_TASKS])
        more = len(msg.task_ids) - EVENT_TASKS
        with self._db.write() as session:
            record(
                session,
                EventKind.NODE,
                "orphan_containers_reaped",
                f"node {node_id} removed {len(msg.task_ids)} container(s) of node id "
                f"{msg.orphan}, which no live agent uses (tasks {shown}"
                + (f" and {more} more)" if more > 0 else ")"),
                node_id=msg.orphan[:64],
            )

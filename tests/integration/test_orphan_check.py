"""The server's answer to ``foreign``: which node ids no live agent uses (row 5).

Real SQLite store; the gateway is a stand-in that records what would be sent and
says when each node was last heard from (that is all OrphanCheck asks of it)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dockyard.protocol.messages import Foreign, Hello, Orphans, Reaped
from dockyard.server.gateway.orphans import OrphanCheck
from dockyard.server.state import nodes as node_ops
from dockyard.store.db import Database
from dockyard.store.tables import Event, Node


class Gateway:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.seen: dict[str, float] = {}

    def last_seen(self) -> dict[str, float]:
        return dict(self.seen)

    def send(self, node_id: str, msg: Any) -> None:
        self.sent.append((node_id, msg))


def _hello(node_id: str) -> Hello:
    return Hello(node_id, node_id, "127.0.0.1", "docker", "test", 1000, 1 << 30)


def test_only_long_down_node_ids_are_orphans(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'store.db'}")
    db.migrate()
    now = time.time()
    with db.write() as session:
        for node_id in ("n-live", "n-down-long", "n-down-new", "n-down-but-heard"):
            node_ops.register(session, _hello(node_id))
        for node_id, silent in (
            ("n-down-long", 120.0),
            ("n-down-new", 5.0),
            ("n-down-but-heard", 120.0),
        ):
            node = session.get(Node, node_id)
            assert node is not None
            node.state = node_ops.NodeState.DOWN
            node.last_heartbeat_at = now - silent
    gateway = Gateway()
    # The gateway heard this one a moment ago (its store row says down: not judged by it).
    gateway.seen["n-down-but-heard"] = time.monotonic()
    gateway.seen["n-live"] = time.monotonic()
    check = OrphanCheck(db, gateway, grace_s=60.0)  # type: ignore[arg-type]
    asked = ("n-live", "n-down-long", "n-down-new", "n-down-but-heard", "n-never", "n-asker")
    check.on_foreign("n-asker", Foreign("n-asker", asked))
    assert gateway.sent == [("n-asker", Orphans(("n-down-long",)))]

    check.on_reaped("n-asker", Reaped("n-asker", "n-down-long", ("t1", "t2")))
    with db.read() as session:
        events = session.query(Event).filter(Event.reason == "orphan_containers_reaped").all()
    assert [(e.kind, e.node_id) for e in events] == [("node", "n-down-long")]
    assert "t1, t2" in events[0].message and "n-asker" in events[0].message

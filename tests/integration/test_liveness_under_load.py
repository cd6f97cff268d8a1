"""Liveness does not wait for the database (issue 4: the server must not fall behind).

A burst of writes (a long batch submit, a slow disk) once held the gateway's only
thread on the store's write lock: heartbeats queued unread, every node looked
silent, and the node monitor declared live nodes down and their tasks lost. The
single SQLite server also deposed itself when its lease renewal waited too long.
Here the store's write lock is held for longer than the grace while a task's
status reports are arriving: no node may go down and the server must keep leading.
"""

from __future__ import annotations

import time

from dockyard.drivers.sim import SimDriver
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for

GRACE = 2.0


def test_a_held_write_lock_longer_than_the_grace_loses_no_node() -> None:
    cluster = LocalCluster(node_grace=GRACE, heartbeat_interval=0.5).start()
    try:
        cluster.add_agent("busy", SimDriver())
        with cluster.client() as api:
            wait_for(lambda: [n for n in api.nodes() if n["state"] == "ready"], timeout=20)
            task = api.run_job("burst", "busybox", ["true"], env={"DOCKYARD_SIM_RUN_FOR": "1s"})
            wait_for(lambda: api.task(task["id"])["state"] == "running", timeout=20)
            db = cluster.server.db
            # The task ends while the lock is held: its reports need the store.
            node_id = cluster.agents[0].node_id
            silences: list[float] = []
            leading: list[bool] = []
            with db._write_lock:  # the burst: the store's write lock is held past the grace
                held_until = time.monotonic() + 2 * GRACE
                while time.monotonic() < held_until:
                    seen = cluster.server._last_seen().get(node_id, 0.0)
                    silences.append(time.monotonic() - seen)
                    leading.append(cluster.server.elector.is_leader)
                    time.sleep(0.1)  # sampling while holding, not waiting for anything
            # Heartbeats were stamped all along (0.5 s apart), and the server led throughout.
            assert len(silences) > 10 and max(silences) < GRACE / 2, silences
            assert all(leading)
            done = wait_for(
                lambda: (t := api.task(task["id"]))["state"] == "succeeded" and t, timeout=20
            )
            assert done["state"] == "succeeded"
            nodes = api.nodes()
            assert [n["state"] for n in nodes] == ["ready"]
            reasons = [e["reason"] for e in api.events()]
            assert "node_down" not in reasons and "node_lost" not in reasons
            assert cluster.server.elector.is_leader
    finally:
        cluster.close()

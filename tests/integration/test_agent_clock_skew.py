"""Row 8 of the test matrix: an agent's wall clock is no input to liveness.

One agent's clock is an hour ahead, one an hour behind, and one jumps about (by
hours and days, both ways, and reads NaN and -inf once in a while). Their
heartbeats carry those clocks in ``sent_at``. For several node graces no node may
leave ``ready`` (the server judges silence on its own monotonic receive time), no
task may be lost or replaced, and the heartbeat-lag histogram must stay finite
and non-negative.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable

import httpx

from dockyard.agent.main import Agent
from dockyard.drivers.sim import SimDriver
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for

GRACE = 2.0
HOUR = 3600.0
#: The jumping clock's offsets, each held for a fraction of a second in turn.
JUMPS = (0.0, HOUR, -HOUR, 86400.0, -86400.0, 5.0, -5.0, math.nan, -math.inf)


def skew(agent: Agent, offset: Callable[[], float]) -> None:
    """Make the agent's heartbeats carry its clock shifted by ``offset()`` seconds."""
    connection = agent.connection
    beat = connection._heartbeat

    def skewed() -> object:
        msg = beat()
        return dataclasses.replace(msg, sent_at=msg.sent_at + offset())

    connection._heartbeat = skewed  # type: ignore[assignment]


def jumping() -> float:
    return JUMPS[int(time.monotonic() / 0.3) % len(JUMPS)]


def lag_metrics(cluster: LocalCluster) -> dict[str, float]:
    auth = {"Authorization": f"Bearer {cluster.admin_token}"}
    text = httpx.get(f"{cluster.url}/metrics", headers=auth, timeout=10).text
    found = {}
    for line in text.splitlines():
        m = re.match(r"(dockyard_heartbeat_lag_seconds_\w+)(\{[^}]*\})? (\S+)$", line)
        if m:
            found[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return found


def test_skewed_and_jumping_agent_clocks_cause_no_node_down() -> None:
    cluster = LocalCluster(node_grace=GRACE, heartbeat_interval=0.5).start()
    try:
        offsets: dict[str, Callable[[], float]] = {
            "ahead": lambda: HOUR,
            "behind": lambda: -HOUR,
            "jumpy": jumping,
        }
        for name, offset in offsets.items():
            skew(cluster.add_agent(name, SimDriver(cpu_millis=1000)), offset)
        with cluster.client() as api:
            wait_for(
                lambda: len([n for n in api.nodes() if n["state"] == "ready"]) == 3,
                timeout=20,
                message="three ready nodes",
            )
            ids = [
                api.run_job(
                    f"long{i}", "busybox", ["true"], cpu=0.5, env={"DOCKYARD_SIM_RUN_FOR": "1h"}
                )["id"]
                for i in range(6)  # two per node: each 1-CPU node is full
            ]
            wait_for(
                lambda: all(api.task(t)["state"] == "running" for t in ids),
                timeout=30,
                message="all jobs running",
            )
            placed = {t: api.task(t)["node"] for t in ids}
            assert set(placed.values()) == set(offsets), placed  # every skewed node has work
            # Several graces of skewed and jumping heartbeats: sample nodes and silences.
            node_ids = {a.node_id for a in cluster.agents}
            until = time.monotonic() + 4 * GRACE
            samples = 0
            while time.monotonic() < until:
                states = {n["name"]: n["state"] for n in api.nodes()}
                assert states == dict.fromkeys(offsets, "ready"), states
                seen = cluster.server._last_seen()
                now = time.monotonic()
                silences = {n: now - seen[n] for n in node_ids}
                assert max(silences.values()) < GRACE / 2, silences
                samples += 1
                time.sleep(0.2)
            assert samples >= 10
            tasks = api.tasks()
            assert len(tasks) == len(ids), "nothing was replaced"
            for t in ids:
                task = api.task(t)
                assert (task["state"], task["node"]) == ("running", placed[t]), task
            reasons = {e["reason"] for e in api.events()}
            assert not reasons & {"node_down", "node_suspect", "node_lost"}, reasons
            metrics = lag_metrics(cluster)
            assert metrics, "the heartbeat-lag histogram is exported"
            bad = {k: v for k, v in metrics.items() if not (math.isfinite(v) and v >= 0)}
            assert not bad, bad
            assert metrics["dockyard_heartbeat_lag_seconds_count"] > 0
            for t in ids:
                api.kill(t)
    finally:
        cluster.close()

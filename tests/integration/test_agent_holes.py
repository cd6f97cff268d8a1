"""Holes between agent and server, in one process with a hollow node: a store
restored with a lower generation for the node, a container removed behind the
agent's back, a NUL byte in a log line (each store backend)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import update

from dockyard.agent.main import Agent
from dockyard.drivers.sim import SimDriver
from dockyard.store.tables import Node
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for


@pytest.fixture
def cluster() -> Iterator[tuple[LocalCluster, Agent, SimDriver]]:
    cluster = LocalCluster().start()
    try:
        driver = SimDriver()
        agent = cluster.add_agent("sim-1", driver)
        with cluster.client() as api:
            wait_for(lambda: [n for n in api.nodes() if n["state"] == "ready"], timeout=20)
        yield cluster, agent, driver
    finally:
        cluster.close()


def _state(api: object, task_id: str) -> str:
    return str(api.task(task_id)["state"])  # type: ignore[attr-defined]


def test_a_restored_store_with_a_lower_generation_still_places(
    cluster: tuple[LocalCluster, Agent, SimDriver],
) -> None:
    local, agent, _ = cluster
    with local.client() as api:
        for i in range(3):  # the node's generation goes up with each placement
            task = api.run_job(f"warm-{i}", "busybox", ["exit", "0"])
            wait_for(lambda t=task: _state(api, t["id"]) == "succeeded", timeout=20)
        wait_for(lambda: agent.reconciler.generation >= 4, timeout=10, message="generation")
        # A restore from a backup: the store's generation for the node goes down.
        with local.server.db.write() as session:
            session.execute(update(Node).where(Node.id == agent.node_id).values(generation=1))
        task = api.run_job("after-restore", "busybox", ["sleep", "300"])
        wait_for(
            lambda: _state(api, task["id"]) == "running",
            timeout=20,
            message="a task placed after the restore runs",
        )
        api.kill(task["id"])


def test_a_vanished_container_gets_a_new_attempt_not_a_second_container(
    cluster: tuple[LocalCluster, Agent, SimDriver],
) -> None:
    local, agent, driver = cluster
    with local.client() as api:
        task = api.run_job("vanish", "busybox", ["sleep", "300"], restart="on-failure")
        wait_for(lambda: _state(api, task["id"]) == "running", timeout=20, message="running")
        (container,) = [c for c in driver.list(agent.node_id) if c.task_id == task["id"]]
        driver.remove(container.container_id)  # docker rm -f, behind the agent's back
        wait_for(lambda: _state(api, task["id"]) == "failed", timeout=20, message="failed")
        shown = api.task(task["id"])
        assert shown["reason"] == "container_vanished"
        wait_for(
            lambda: [t for t in api.tasks() if t["id"] != task["id"] and t["state"] == "running"],
            timeout=30,
            message="the next attempt runs",
        )
    ids = [c.task_id for c in driver.list(agent.node_id)]
    assert task["id"] not in ids  # never a second container under the first task's id


def test_a_nul_byte_in_a_log_line_is_stored_and_blocks_nothing(local: LocalCluster) -> None:
    """PostgreSQL text columns refuse NUL: the batch failed, was re-sent for ever,
    and later batches moved the resume offset past the lost lines."""
    agent = local.agents[0]
    with local.client() as api:
        task = api.run_job("nul", "busybox", ["sleep", "300"])
        wait_for(lambda: _state(api, task["id"]) == "running", timeout=20, message="running")
        wait_for(lambda: api.logs(task["id"])["lines"], timeout=10, message="first line")
        ts = "2024-01-01T00:00:00Z"
        agent.shipper.add(task["id"], "stdout", 2, ts, "before\x00after")
        agent.shipper.flush()
        agent.shipper.add(task["id"], "stdout", 3, ts, "next")
        agent.shipper.flush()
        wait_for(
            lambda: len(api.logs(task["id"])["lines"]) >= 3, timeout=15, message="lines stored"
        )
        wait_for(
            lambda: agent.shipper.held() == 0 and agent.connection.unacked() == 0,
            timeout=15,
            message="shipper and outbox drained",
        )
        texts = [line["line"] for line in api.logs(task["id"])["lines"]]
        assert texts[1:] == ["before\ufffdafter", "next"]
        api.kill(task["id"])


def test_a_batch_that_always_fails_is_dropped_not_resent_for_ever(
    local: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockyard.server.gateway import gateway

    real = gateway.store_logs

    def store_logs(session: object, shipped: list, dialect: str) -> int:  # type: ignore[type-arg]
        if any("poison" in line.text for _, lines in shipped for line in lines):
            raise ValueError("this batch cannot be stored")
        return real(session, shipped, dialect)  # type: ignore[arg-type]

    monkeypatch.setattr(gateway, "store_logs", store_logs)
    agent = local.agents[0]
    with local.client() as api:
        task = api.run_job("poison", "busybox", ["sleep", "300"])
        wait_for(lambda: _state(api, task["id"]) == "running", timeout=20, message="running")
        agent.shipper.add(task["id"], "stdout", 2, "2024-01-01T00:00:00Z", "poison")
        agent.shipper.flush()
        agent.shipper.add(task["id"], "stdout", 3, "2024-01-01T00:00:00Z", "fine")
        agent.shipper.flush()
        wait_for(
            lambda: agent.shipper.held() == 0 and agent.connection.unacked() == 0,
            timeout=30,
            message="shipper and outbox drained",
        )
        # Acked on receipt; stored by the gateway's apply thread a moment later.
        texts = wait_for(
            lambda: (
                t
                if "fine" in (t := [line["line"] for line in api.logs(task["id"])["lines"]])
                else None
            ),
            timeout=20,
            message="the later batch stored",
        )
        assert "poison" not in texts
        api.kill(task["id"])


def test_a_container_removed_while_the_agent_is_down_is_reported_not_recreated(
    cluster: tuple[LocalCluster, Agent, SimDriver],
) -> None:
    """docker rm -f while the agent is stopped, then the agent restarts (same node id,
    same runtime): reported container_vanished, the restart policy's next attempt
    runs, and the task's id never gets a second container."""
    local, agent, driver = cluster
    with local.client() as api:
        task = api.run_job("vanish-away", "busybox", ["sleep", "300"], restart="on-failure")
        wait_for(lambda: _state(api, task["id"]) == "running", timeout=20, message="running")
        (container,) = [c for c in driver.list(agent.node_id) if c.task_id == task["id"]]
        wait_for(
            lambda: api.task(task["id"])["container_id"] == container.container_id,
            timeout=10,
            message="the server knows its container",
        )
        agent.stop()
        local.agents.remove(agent)
        driver.remove(container.container_id)  # docker rm -f while the agent is away
        again = local.add_agent("sim-1", driver)  # same data dir: the same node id
        assert again.node_id == agent.node_id
        wait_for(lambda: _state(api, task["id"]) == "failed", timeout=20, message="failed")
        shown = api.task(task["id"])
        assert shown["reason"] == "container_vanished", shown
        nxt = wait_for(
            lambda: [t for t in api.tasks() if t["id"] != task["id"] and t["state"] == "running"],
            timeout=30,
            message="the next attempt runs",
        )
        assert nxt[0]["attempt"] == shown["attempt"] + 1
        assert task["id"] not in [c.task_id for c in driver.list(agent.node_id)]
        api.kill(nxt[0]["id"])

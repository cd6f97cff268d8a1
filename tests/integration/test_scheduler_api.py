"""The scheduler wired in: constraints, GPUs, priority, queue lock, dequeue, plan, shares."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dockyard.agent.main import Agent, AgentConfig
from dockyard.client import Client, ClientError
from dockyard.drivers.sim import SimDriver
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for

GiB = 1024**3


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    local = LocalCluster().start()
    for name, zone, gpus in (("a1", "a", None), ("b1", "b", None), ("g1", "a", [0, 1])):
        agent = Agent(
            AgentConfig(
                server=local.gateway,
                data_dir=local.root / f"agent-{name}",
                name=name,
                driver="sim",
                labels={"zone": zone},
                gpus=gpus or [],
            ),
            driver=SimDriver(cpu_millis=2000, memory_bytes=2 * GiB),
        )
        agent.start()
        local.agents.append(agent)
    with local.client() as api:
        wait_for(lambda: len([n for n in api.nodes() if n["state"] == "ready"]) == 3, timeout=20)
    yield local
    local.close()


def wait_task(api: Client, ref: str, pred: Any) -> dict[str, Any]:
    return wait_for(lambda: t if pred(t := api.task(ref)) else None, timeout=20)


def node_name(api: Client, task: dict[str, Any]) -> str:
    return str(task["node"])


def test_constraints_place_and_explain(cluster: LocalCluster) -> None:
    with cluster.client() as api:
        task = api.run_job("on-b", "busybox", ["sleep", "60"], constraints=["zone=b"])
        placed = wait_task(api, task["id"], lambda t: t["node"] is not None)
        assert placed["node"] == "b1"
        assert placed["constraints"] == ["zone=b"]
        nowhere = api.run_job("nowhere", "busybox", constraints=["zone in x,y"])
        stuck = wait_task(api, nowhere["id"], lambda t: t["message"])
        assert stuck["state"] == "pending"
        assert stuck["reason"] == "unschedulable"
        assert stuck["message"] == "0/3 nodes fit: 3 constraint zone in x,y"
        assert stuck["pending_detail"] == {
            "total": 3,
            "fit": 0,
            "reasons": {"constraint zone in x,y": 3},
        }
        api.kill(task["id"])
        api.delete_queued(nowhere["id"])


def test_bad_constraint_is_a_422_naming_it(cluster: LocalCluster) -> None:
    with cluster.client() as api, pytest.raises(ClientError) as info:
        api.run_job("bad", "busybox", constraints=["zone ~ a"])
    assert info.value.status == 422
    assert info.value.field == "constraints[0]"


def test_gpus_are_exclusive_and_freed(cluster: LocalCluster) -> None:
    with cluster.client() as api:
        first = api.run_job("gpu-1", "busybox", ["sleep", "60"], gpus=1)
        second = api.run_job("gpu-2", "busybox", ["sleep", "60"], gpus=1)
        third = api.run_job("gpu-3", "busybox", ["sleep", "60"], gpus=1)
        one = wait_task(api, first["id"], lambda t: t["state"] == "running")
        two = wait_task(api, second["id"], lambda t: t["state"] == "running")
        assert one["node"] == two["node"] == "g1"
        assert sorted(one["gpu_indices"] + two["gpu_indices"]) == [0, 1]
        waiting = wait_task(api, third["id"], lambda t: "insufficient gpus" in t["message"])
        assert waiting["state"] == "pending"
        g1 = next(n for n in api.nodes() if n["name"] == "g1")
        assert g1["gpus_allocated"] == [0, 1]  # what the dashboard's GPU bar shows
        api.kill(first["id"])
        got = wait_task(api, third["id"], lambda t: t["state"] == "running")
        assert got["gpu_indices"] == one["gpu_indices"]
        api.kill(second["id"])
        api.kill(third["id"])


def test_lock_priority_order_and_dequeue(cluster: LocalCluster) -> None:
    with cluster.client() as api:
        api.lock_queue()
        try:
            low = api.run_job("low", "busybox", ["sleep", "1"], priority=-5)
            high = api.run_job("high", "busybox", ["sleep", "1"], priority=10)
            gone = api.run_job("gone", "busybox", ["sleep", "1"])
            locked = wait_task(api, low["id"], lambda t: t["reason"] == "queue_locked")
            assert "queue locked by admin" in locked["message"]
            queue = api.queue()
            assert queue["locked"] is True
            order = [e["name"] for e in queue["entries"]]
            assert order.index("high") < order.index("gone") < order.index("low")
            assert all(0 <= e["factor"] <= 1 for e in queue["entries"])
            removed = api.delete_queued(gone["id"])
            assert removed["reason"] == "dequeued"
            with pytest.raises(ClientError) as info:
                api.delete_queued(gone["id"])
            assert info.value.status == 409
        finally:
            api.unlock_queue()
        wait_task(api, high["id"], lambda t: t["state"] == "succeeded")
        wait_task(api, low["id"], lambda t: t["state"] == "succeeded")
        assert api.task(gone["id"])["state"] == "killed"


def test_users_delete_only_their_own_queued_entries(cluster: LocalCluster) -> None:
    with cluster.client() as admin:
        bob = admin.add_user("bob")["token"]
        carol = admin.add_user("carol")["token"]
        admin.update_user("bob", share=3.0)
    with cluster.client(bob) as api_bob, cluster.client(carol) as api_carol:
        task = api_bob.run_job("bobs", "busybox", constraints=["zone=none"])
        with pytest.raises(ClientError) as info:
            api_carol.delete_queued(task["id"])
        assert info.value.status == 404
        with pytest.raises(ClientError) as info:
            api_carol.lock_queue()
        assert info.value.status == 403
        assert [e["id"] for e in api_bob.queue()["entries"]] == [task["id"]]
        assert api_carol.queue()["entries"] == []
        api_bob.delete_queued(task["id"])
    with cluster.client() as admin:
        stats = {s["name"]: s for s in admin.user_stats()}
        assert stats["bob"]["share"] == 3.0
        assert 0 < stats["admin"]["factor"] <= 1


def test_plan_is_a_dry_run(cluster: LocalCluster) -> None:
    with cluster.client() as api:
        before = len(api.tasks())
        fits = api.plan("p", "busybox", constraints=["zone=b"], cpu=1)
        assert fits["fits"] is True
        assert fits["node"] == "b1"
        assert fits["queue_position"] >= 1
        too_big = api.plan("p", "busybox", memory="64g")
        assert too_big["fits"] is False
        assert too_big["reason"] == "0/3 nodes fit: 3 insufficient memory"
        gpu = api.plan("p", "busybox", gpus=2)
        assert gpu["node"] == "g1"
        assert gpu["gpus"] == [0, 1]
        assert len(api.tasks()) == before


def test_sim_run_time_and_exit_code_from_env(cluster: LocalCluster) -> None:
    with cluster.client() as api:
        task = api.run_job(
            "env-exit",
            "busybox",
            ["true"],
            env={"DOCKYARD_SIM_RUN_FOR": "200ms", "DOCKYARD_SIM_EXIT_CODE": "3"},
        )
        done = wait_task(api, task["id"], lambda t: t["state"] == "failed")
        assert done["exit_code"] == 3

"""Hollow nodes: many simulated nodes in one process, each a full agent."""

from __future__ import annotations

from dockyard.agent.hollow import hollow_agents
from dockyard.agent.main import AgentConfig
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for

UUID_A = "GPU-0a1b2c3d-0000-4000-8000-00000000000a"
UUID_B = "GPU-0a1b2c3d-0000-4000-8000-00000000000b"


def test_hollow_nodes_register_and_spread_work() -> None:
    cluster = LocalCluster().start()
    try:
        base = AgentConfig(
            server=cluster.gateway,
            data_dir=cluster.root / "hollow",
            name="hollow",
            driver="sim",
            labels={"zone": "h"},
            gpus=[UUID_A, UUID_B],
        )
        fleet = hollow_agents(base, 6, cpu_millis=1000, memory_bytes=1024**3)
        for agent in fleet:
            agent.start()
        cluster.agents.extend(fleet)
        assert len({a.node_id for a in fleet}) == 6
        with cluster.client() as api:

            def ready() -> list[dict[str, object]] | None:
                found = [x for x in api.nodes() if x["state"] == "ready"]
                return found if len(found) == 6 else None

            nodes = wait_for(ready, timeout=20)
            assert sorted(n["name"] for n in nodes) == [f"hollow-{i:04d}" for i in range(6)]
            assert all(n["labels"] == {"zone": "h"} and n["gpus"] == [0, 1] for n in nodes)
            assert all(n["gpu_uuids"] == {"0": UUID_A, "1": UUID_B} for n in nodes)
            ids = [
                api.run_job(
                    f"w{i}",
                    "busybox",
                    ["true"],
                    cpu=1,
                    constraints=["zone=h"],
                    env={"DOCKYARD_SIM_RUN_FOR": "1s"},
                )["id"]
                for i in range(6)
            ]

            def finished() -> list[dict[str, object]] | None:
                tasks = [api.task(i) for i in ids]
                return tasks if all(t["state"] == "succeeded" for t in tasks) else None

            done = wait_for(finished, timeout=30)
            # one core each: six one-core tasks needed all six nodes
            assert len({t["node"] for t in done}) == 6
    finally:
        cluster.close()

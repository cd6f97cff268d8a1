"""Issue 22 on hollow nodes: checkpoint volumes go once their job is over for good."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from dockyard.agent.main import Agent, AgentConfig
from dockyard.client import Client
from dockyard.drivers.base import ContainerSpec
from dockyard.drivers.sim import SimDriver
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for

GiB = 1024**3


class FirstAttemptFails(SimDriver):
    """A task with FAIL_FIRST exits 3 after 200 ms on its first attempt, 0 on a later one."""

    def create(self, spec: ContainerSpec) -> str:
        if "FAIL_FIRST" in spec.env:
            code = "0" if spec.env.get("DOCKYARD_RESUME") == "1" else "3"
            extra = {"DOCKYARD_SIM_RUN_FOR": "200ms", "DOCKYARD_SIM_EXIT_CODE": code}
            spec = replace(spec, env={**spec.env, **extra})
        return super().create(spec)


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[LocalCluster, Agent]]:
    local = LocalCluster().start()
    agent = Agent(
        AgentConfig(
            server=local.gateway,
            data_dir=local.root / "agent-c1",
            name="c1",
            driver="sim",
            checkpoint_check_interval=0.2,
        ),
        driver=FirstAttemptFails(cpu_millis=4000, memory_bytes=8 * GiB),
    )
    agent.start()
    local.agents.append(agent)
    with local.client() as api:
        wait_for(lambda: any(n["state"] == "ready" for n in api.nodes()), timeout=20)
    yield local, agent
    local.close()


def _volumes(agent: Agent) -> set[str]:
    assert isinstance(agent.driver, SimDriver)
    return {name for _, name in agent.driver.checkpoint_volumes()}


def _attempts(api: Client, workload_id: str) -> list[dict[str, Any]]:
    return sorted(
        (t for t in api.tasks() if t["workload_id"] == workload_id), key=lambda t: t["attempt"]
    )


def test_a_checkpoint_volume_is_kept_between_attempts_and_removed_when_the_job_is_over(
    node: tuple[LocalCluster, Agent],
) -> None:
    """Attempt 1 fails; while attempt 2 waits (queue locked) several cleanup passes
    ran and the volume, used by no container then, is still there; attempt 2
    succeeds and the volume goes. A killed job's and an array's volumes go too."""
    cluster, agent = node
    sweeper = agent.orphans.checkpoints
    assert sweeper is not None
    with cluster.client() as api:
        job = api.run_job(
            "ck-clean",
            "busybox",
            ["sleep", "60"],
            restart={"mode": "on-failure", "max_attempts": 1, "initial_delay_s": 0.1},
            checkpoint_signal="SIGUSR1",
            env={"FAIL_FIRST": "1"},
        )
        volume = f"ckpt-{job['workload_id']}"
        wait_for(lambda: volume in _volumes(agent), timeout=20, message="the volume is made")
        api.lock_queue()
        try:
            wait_for(
                lambda: (
                    [t["state"] for t in _attempts(api, job["workload_id"])]
                    == ["failed", "pending"]
                ),
                timeout=20,
                message="attempt 1 failed, attempt 2 waits",
            )
            wait_for(
                lambda: not agent.driver.list(agent.node_id), timeout=20, message="no container"
            )
            seen = sweeper.answers
            wait_for(
                lambda: sweeper.answers >= seen + 3 or volume not in _volumes(agent),
                timeout=20,
                message="3 more cleanup passes",
            )
            assert volume in _volumes(agent)  # attempt 2 may still need it
            assert [t["state"] for t in _attempts(api, job["workload_id"])] == [
                "failed",
                "pending",
            ]
        finally:
            api.unlock_queue()
        wait_for(
            lambda: (
                [t["state"] for t in _attempts(api, job["workload_id"])] == ["failed", "succeeded"]
            ),
            timeout=20,
            message="attempt 2 succeeded",
        )
        wait_for(lambda: volume not in _volumes(agent), timeout=20, message="volume removed")

        killed = api.run_job("ck-kill", "busybox", ["sleep", "60"], checkpoint_signal="SIGUSR2")
        array = api.run_job(
            "ck-arr", "busybox", ["exit", "0"], array="0-1", checkpoint_signal="SIGUSR1"
        )
        made = {f"ckpt-{killed['workload_id']}"}
        wait_for(lambda: made <= _volumes(agent), timeout=20, message="the volume is made")
        wait_for(lambda: api.task(killed["id"])["state"] == "running", timeout=20)
        api.kill(killed["id"])
        wait_for(
            lambda: (
                len(_attempts(api, array["id"])) == 2
                and all(t["state"] == "succeeded" for t in _attempts(api, array["id"]))
            ),
            timeout=20,
            message="both elements succeeded",
        )
        wait_for(
            lambda: (
                not any(
                    v.startswith((f"ckpt-{killed['workload_id']}", f"ckpt-{array['id']}"))
                    for v in _volumes(agent)
                )
            ),
            timeout=20,
            message="the killed job's and the elements' volumes removed",
        )
        assert sweeper.removed >= 4  # the job's, the killed one's, two elements'

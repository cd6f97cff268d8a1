"""Failure handling on a real Docker Engine: node loss, hangs, crash loops, lifetimes, drain."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from docker_cluster import docker_cluster

from dockyard.client import Client
from dockyard.drivers.base import LABEL_TASK
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

TERMINAL = {"succeeded", "failed", "killed", "lost", "expired"}
GRACE = 3.0


@pytest.fixture()
def pair(image: str) -> Iterator[ProcessCluster]:
    """A server and two agents (node-1, node-2) on this Docker Engine."""
    with docker_cluster(agents=2, node_grace=GRACE) as cl:
        yield cl


def running_containers(task_id: str) -> list[Any]:
    return list(docker.from_env().containers.list(filters={"label": f"{LABEL_TASK}={task_id}"}))


def node_state(api: Client, name: str) -> str:
    return str(next(n["state"] for n in api.nodes() if n["name"] == name))


def submit_on_node_1(api: Client, image: str, count: int) -> list[str]:
    api.drain("node-2", deadline_s=3600)
    ids = [
        api.run_job(
            f"w{i}",
            image,
            ["sh", "-c", f"echo started {i}; sleep 600"],
            cpu=0.05,
            memory="16m",
            kill_grace_s=1,
        )["id"]
        for i in range(count)
    ]
    wait_for(
        lambda: all(api.task(t)["state"] == "running" for t in ids),
        timeout=120,
        message="all tasks running",
    )
    assert {api.task(t)["node"] for t in ids} == {"node-1"}
    wait_for(lambda: all(api.logs(t)["lines"] for t in ids), timeout=30, message="first lines")
    api.undrain("node-2")
    return [str(t) for t in ids]


def replacements(api: Client, originals: list[str]) -> dict[str, list[dict[str, Any]]]:
    """For each original task, the tasks that replace it (same job, later attempts)."""
    by_workload: dict[str, list[dict[str, Any]]] = {}
    for task in api.tasks():
        by_workload.setdefault(task["workload_id"], []).append(task)
    out = {}
    for task_id in originals:
        workload = api.task(task_id)["workload_id"]
        out[task_id] = [t for t in by_workload[workload] if t["id"] != task_id]
    return out


def assert_replaced_once(api: Client, originals: list[str]) -> None:
    def all_running() -> bool:
        reps = replacements(api, originals)
        return all(len(r) == 1 and r[0]["state"] == "running" for r in reps.values())

    wait_for(all_running, timeout=120, message="one running replacement per task")
    for task_id, reps in replacements(api, originals).items():
        original = api.task(task_id)
        assert (original["state"], original["reason"]) == ("lost", "node_lost")
        assert len(reps) == 1
        assert reps[0]["node"] == "node-2" and reps[0]["previous_task_id"] == task_id


def test_sigkill_agent_replaces_each_task_once_and_fences_on_return(
    pair: ProcessCluster, image: str
) -> None:
    with pair.client() as api:
        originals = submit_on_node_1(api, image, 20)
        killed_at = time.monotonic()
        pair.stop_agent("node-1", signal.SIGKILL)
        wait_for(lambda: node_state(api, "node-1") == "down", timeout=GRACE + 5)
        assert time.monotonic() - killed_at <= GRACE + 2.0
        assert_replaced_once(api, originals)
        for task_id in originals:  # logs kept up to the kill
            assert any(line["line"].startswith("started") for line in api.logs(task_id)["lines"])
        # The stale copies still run until node-1's agent returns and fences them.
        assert all(running_containers(t) for t in originals)
        pair.start_agent("node-1")
        wait_for(lambda: node_state(api, "node-1") == "ready", timeout=30)
        wait_for(
            lambda: not any(running_containers(t) for t in originals),
            timeout=60,
            message="stale copies killed",
        )
        for task_id, reps in replacements(api, originals).items():
            assert len(reps) == 1 and len(running_containers(reps[0]["id"])) == 1
            assert api.task(task_id)["state"] == "lost"


def test_hung_agent_is_fenced_after_sigcont(pair: ProcessCluster, image: str) -> None:
    with pair.client() as api:
        originals = submit_on_node_1(api, image, 5)
        pair.signal_agent("node-1", signal.SIGSTOP)
        wait_for(lambda: node_state(api, "node-1") == "down", timeout=GRACE + 5)
        assert_replaced_once(api, originals)
        pair.signal_agent("node-1", signal.SIGCONT)
        wait_for(lambda: node_state(api, "node-1") == "ready", timeout=30)
        wait_for(
            lambda: not any(running_containers(t) for t in originals),
            timeout=60,
            message="stale copies killed after SIGCONT",
        )
        reps = replacements(api, originals)
        assert all(len(r) == 1 and r[0]["state"] == "running" for r in reps.values())
        for task_id in originals:
            assert api.task(task_id)["state"] == "lost"  # stale reports were ignored


def test_short_hang_is_not_a_node_loss(pair: ProcessCluster, image: str) -> None:
    with pair.client() as api:
        originals = submit_on_node_1(api, image, 3)
        pair.signal_agent("node-1", signal.SIGSTOP)
        time_stopped = time.monotonic()
        wait_for(lambda: time.monotonic() - time_stopped > GRACE / 2, timeout=GRACE)
        pair.signal_agent("node-1", signal.SIGCONT)
        wait_for(lambda: node_state(api, "node-1") == "ready", timeout=30)
        assert all(api.task(t)["state"] == "running" for t in originals)
        assert all(not r for r in replacements(api, originals).values())
        assert "node_down" not in [e["reason"] for e in api.events(node=pair.node_id("node-1"))]


def test_crash_loop_backs_off_exponentially(pair: ProcessCluster, image: str) -> None:
    with pair.client() as api:
        first = api.run_job(
            "crasher",
            image,
            ["sh", "-c", "echo boom; exit 2"],
            restart={
                "mode": "on-failure",
                "max_attempts": 4,
                "initial_delay_s": 0.5,
                "max_delay_s": 2.0,
            },
        )

        def attempts() -> list[dict[str, Any]]:
            return sorted(
                (t for t in api.tasks() if t["workload_id"] == first["workload_id"]),
                key=lambda t: t["attempt"],
            )

        wait_for(
            lambda: len(attempts()) == 5 and attempts()[-1]["state"] in TERMINAL,
            timeout=60,
            message="5 attempts",
        )
        tasks = attempts()
        assert all(t["state"] == "failed" and t["exit_code"] == 2 for t in tasks)
        gaps = [b["not_before"] - a["finished_at"] for a, b in itertools.pairwise(tasks)]
        assert [round(g, 1) for g in gaps] == [0.5, 1.0, 2.0, 2.0]
        assert all(t["started_at"] >= t["not_before"] for t in tasks[1:])
        # The fifth failure used up max_attempts: no further attempt was scheduled.
        last_reasons = [e["reason"] for e in api.task(tasks[-1]["id"])["events"]]
        assert "restart_scheduled" in last_reasons[:2] and last_reasons[-1] == "exit_nonzero"
        assert len(attempts()) == 5


def test_max_runtime_expires_the_task(pair: ProcessCluster, image: str) -> None:
    with pair.client() as api:
        task = api.run_job("bounded", image, ["sleep", "300"], max_runtime_s=1.5, kill_grace_s=1)
        running = wait_for(
            lambda: t if (t := api.task(task["id"]))["state"] == "running" else None, timeout=60
        )
        done = wait_for(
            lambda: t if (t := api.task(task["id"]))["state"] in TERMINAL else None, timeout=30
        )
        assert (done["state"], done["reason"]) == ("expired", "max_runtime_exceeded")
        assert 1.5 <= done["finished_at"] - running["started_at"] <= 3.5


def test_drain_moves_jobs_after_deadline(pair: ProcessCluster, image: str) -> None:
    with pair.client() as api:
        [original] = submit_on_node_1(api, image, 1)
        api.drain("node-1", deadline_s=1)
        assert node_state(api, "node-1") == "draining"
        reps = wait_for(
            lambda: (
                r
                if len(r := replacements(api, [original])[original]) == 1
                and r[0]["state"] == "running"
                else None
            ),
            timeout=60,
        )
        assert reps[0]["node"] == "node-2"
        moved = api.task(original)
        assert (moved["state"], moved["reason"]) == ("killed", "node_drained")
        late = api.run_job("late", image, ["sleep", "60"], cpu=0.05, memory="16m")
        assert wait_for(lambda: api.task(late["id"])["node"], timeout=30) == "node-2"
        api.undrain("node-1")
        assert node_state(api, "node-1") == "ready"

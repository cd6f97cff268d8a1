"""Batch jobs end to end on a real Docker Engine, through server and agent processes."""

from __future__ import annotations

import signal
import time
from functools import partial
from typing import Any

import docker
import pytest

from dockyard.client import Client, ClientError
from dockyard.drivers.base import LABEL_TASK
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

TERMINAL = {"succeeded", "failed", "killed", "lost", "expired"}


def wait_state(api: Client, ref: str, states: set[str], timeout: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: t if (t := api.task(ref))["state"] in states else None,
        timeout=timeout,
        message=f"task {ref} in {states}",
    )


def all_logs(api: Client, ref: str) -> list[dict[str, Any]]:
    return list(api.logs(ref)["lines"])


def test_job_prints_and_succeeds(cluster: ProcessCluster, image: str) -> None:
    with cluster.client() as api:
        task = api.run_job(
            "hello", image, ["sh", "-c", "echo hi; echo oops >&2"], cpu=0.5, memory="64m"
        )
        done = wait_state(api, task["id"], TERMINAL)
        assert done["state"] == "succeeded"
        assert done["exit_code"] == 0
        assert done["reason"] == "exit_zero"
        lines = {(line["stream"], line["line"]) for line in all_logs(api, task["id"])}
        assert ("stdout", "hi") in lines
        assert ("stderr", "oops") in lines
        reasons = [e["reason"] for e in api.task(task["id"])["events"]]
        assert reasons[0] == "submitted" and "placed" in reasons and reasons[-1] == "exit_zero"


def test_task_without_gpus_cannot_ask_nvidia_for_all(cluster: ProcessCluster, image: str) -> None:
    """NVIDIA's runtime reads NVIDIA_VISIBLE_DEVICES from the container's environment:
    a task given no GPUs gets ``void`` whatever its spec (or image) says."""
    with cluster.client() as api:
        task = api.run_job(
            "nogpu",
            image,
            ["sh", "-c", 'echo "devices=$NVIDIA_VISIBLE_DEVICES"'],
            env={"NVIDIA_VISIBLE_DEVICES": "all"},
        )
        done = wait_state(api, task["id"], TERMINAL)
        assert done["state"] == "succeeded"
        lines = [line["line"] for line in all_logs(api, task["id"])]
        assert lines == ["devices=void"]


def test_exit_code_is_recorded(cluster: ProcessCluster, image: str) -> None:
    with cluster.client() as api:
        task = api.run_job("exit3", image, ["sh", "-c", "echo hi; exit 3"])
        done = wait_state(api, task["id"], TERMINAL)
        assert (done["state"], done["exit_code"], done["reason"]) == ("failed", 3, "exit_nonzero")


def test_memory_limit_kills_with_oom_reason(cluster: ProcessCluster, image: str) -> None:
    with cluster.client() as api:
        task = api.run_job(
            "hog",
            image,
            ["sh", "-c", 'x=$(head -c 200000000 /dev/zero | tr "\\0" a)'],
            memory="16m",
        )
        done = wait_state(api, task["id"], TERMINAL)
        assert (done["state"], done["reason"]) == ("failed", "oom_killed")


def test_exit_137_without_oom_is_not_oom(cluster: ProcessCluster, image: str) -> None:
    with cluster.client() as api:
        task = api.run_job("fake137", image, ["sh", "-c", "exit 137"])
        done = wait_state(api, task["id"], TERMINAL)
        assert (done["state"], done["exit_code"], done["reason"]) == ("failed", 137, "exit_nonzero")


def test_kill_stops_within_grace(cluster: ProcessCluster, image: str) -> None:
    with cluster.client() as api:
        task = api.run_job("polite", image, ["sleep", "300"], kill_grace_s=5)
        wait_state(api, task["id"], {"running"})
        started = time.monotonic()
        api.kill(task["id"])
        done = wait_state(api, task["id"], TERMINAL, timeout=30)
        assert time.monotonic() - started < 5
        assert (done["state"], done["reason"], done["exit_code"]) == ("killed", "killed", 143)
        assert "forced_kill" not in [e["reason"] for e in api.task(task["id"])["events"]]


def test_kill_escalates_to_sigkill_after_grace(cluster: ProcessCluster, image: str) -> None:
    with cluster.client() as api:
        task = api.run_job(
            "stubborn",
            image,
            ["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.1; done"],
            kill_grace_s=1.5,
        )
        wait_state(api, task["id"], {"running"})
        wait_for(lambda: all_logs(api, task["id"]), timeout=20, message="ready line")
        started = time.monotonic()
        api.kill(task["id"])
        done = wait_state(api, task["id"], TERMINAL, timeout=30)
        elapsed = time.monotonic() - started
        assert 1.5 <= elapsed < 10
        assert (done["state"], done["exit_code"]) == ("killed", 137)
        events = api.task(task["id"])["events"]
        assert any(e["kind"] == "incident" and e["reason"] == "forced_kill" for e in events)


def test_stop_time_overrides_the_jobs_grace_and_a_second_one_hurries_it(
    cluster: ProcessCluster, image: str
) -> None:
    """A job with a 600 s kill grace that ignores SIGTERM: ``stop --time 1`` (the
    API's grace_s) kills it after about a second; another, stopped with the job's own
    grace, is hurried by a second request with grace 0 while its stop is under way."""
    stubborn = ["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.1; done"]
    with cluster.client() as api:
        first = api.run_job("stop-t", image, stubborn, kill_grace_s=600)
        second = api.run_job("stop-t0", image, stubborn, kill_grace_s=600)
        for task_id in (first["id"], second["id"]):
            wait_state(api, task_id, {"running"})
            wait_for(partial(all_logs, api, task_id), timeout=20, message="ready line")
        started = time.monotonic()
        api.kill(first["id"], grace_s=1)
        done = wait_state(api, first["id"], TERMINAL, timeout=60)
        assert (done["state"], done["exit_code"]) == ("killed", 137)
        assert time.monotonic() - started >= 1  # SIGTERM first, SIGKILL after the grace
        api.kill(second["id"])  # the job's 600 s
        wait_for(
            lambda: any(e["reason"] == "kill_requested" for e in api.task(second["id"])["events"]),
            timeout=20,
        )
        assert api.task(second["id"])["state"] == "running"  # still in its grace
        api.kill(second["id"], grace_s=0)
        hurried = wait_state(api, second["id"], TERMINAL, timeout=60)  # not 600 s
        assert (hurried["state"], hurried["exit_code"]) == ("killed", 137)
        with pytest.raises(ClientError) as err:
            api.kill(first["id"], grace_s=-1)
        assert (err.value.status, err.value.field) == (422, "grace_s")


def test_kill_of_finished_task_is_a_conflict(cluster: ProcessCluster, image: str) -> None:
    with cluster.client() as api:
        task = api.run_job("quick", image, ["true"])
        wait_state(api, task["id"], TERMINAL)
        with pytest.raises(ClientError) as err:
            api.kill(task["id"])
        assert err.value.status == 409


def test_unpullable_image_retries_with_progress_then_fails(cluster: ProcessCluster) -> None:
    """A registry on loopback that refuses connections (no traffic leaves the host):
    the pull is retried with back-off, each retry shows in the task's message, and
    after the last attempt the task fails with ``image_pull_failed``."""
    with cluster.client() as api:
        task = api.run_job("ghost", "127.0.0.1:9/dockyard/does-not-exist:1", ["true"])
        retrying = wait_for(
            lambda: t if "retrying" in (t := api.task(task["id"]))["message"] else None,
            timeout=60,
            message="a retry notice while pulling",
        )
        assert retrying["state"] == "pulling" and "attempt 1/" in retrying["message"]
        done = wait_state(api, task["id"], TERMINAL, timeout=120)
        assert done["state"] == "failed"
        assert done["reason"] == "image_pull_failed"
        assert "attempts" in done["message"]


def _counter_job(api: Client, image: str, name: str, count: int, every: float) -> str:
    script = f"i=1; while [ $i -le {count} ]; do echo line $i; i=$((i+1)); sleep {every}; done"
    return str(api.run_job(name, image, ["sh", "-c", script])["id"])


def _assert_complete_counter(api: Client, task_id: str, count: int) -> None:
    lines = [line["line"] for line in all_logs(api, task_id) if line["stream"] == "stdout"]
    assert lines == [f"line {i}" for i in range(1, count + 1)]


def _containers_of(task_id: str) -> list[Any]:
    return list(
        # sparse: no inspect per container (the reconciler may remove one meanwhile)
        docker.from_env().containers.list(
            all=True, sparse=True, filters={"label": f"{LABEL_TASK}={task_id}"}
        )
    )


def test_agent_restart_adopts_running_container(cluster: ProcessCluster, image: str) -> None:
    with cluster.client() as api:
        task_id = _counter_job(api, image, "survivor", 40, 0.1)
        running = wait_state(api, task_id, {"running"})
        wait_for(lambda: len(all_logs(api, task_id)) >= 5, timeout=20, message="some lines")
        cluster.stop_agent("node-1", signal.SIGKILL)
        cluster.start_agent("node-1")
        done = wait_state(api, task_id, TERMINAL, timeout=60)
        assert done["state"] == "succeeded"
        assert done["container_id"] == running["container_id"]
        assert len(_containers_of(task_id)) <= 1
        _assert_complete_counter(api, task_id, 40)
        reasons = [e["reason"] for e in api.task(task_id)["events"]]
        assert reasons.count("started") == 1


def test_server_restart_loses_nothing(cluster: ProcessCluster, image: str) -> None:
    with cluster.client() as api:
        task_id = _counter_job(api, image, "through-restart", 30, 0.1)
        wait_state(api, task_id, {"running"})
    cluster.stop_server(signal.SIGKILL)
    cluster.start_server()
    with cluster.client() as api:
        done = wait_state(api, task_id, TERMINAL, timeout=60)
        assert done["state"] == "succeeded"
        _assert_complete_counter(api, task_id, 30)
        wait_for(lambda: [n["state"] for n in api.nodes()] == ["ready"], timeout=10)
        assert "node_down" not in [e["reason"] for e in api.events()]


def test_follow_logs_until_end(cluster: ProcessCluster, image: str) -> None:
    with cluster.client() as api:
        task_id = _counter_job(api, image, "follow", 15, 0.05)
        items = list(api.follow_logs(task_id))
        assert items[-1]["end"] is True
        assert items[-1]["state"] == "succeeded"
        assert [i["line"] for i in items[:-1]] == [f"line {i}" for i in range(1, 16)]


def test_other_user_cannot_touch_admins_task(cluster: ProcessCluster, image: str) -> None:
    with cluster.client() as admin:
        task = admin.run_job("secret", image, ["sleep", "60"], kill_grace_s=1)
        wait_state(admin, task["id"], {"running"})
        mallory_token = admin.add_user("mallory")["token"]
        with cluster.client(mallory_token) as mallory:
            assert all(t["id"] != task["id"] for t in mallory.tasks())
            for attempt in (mallory.task, mallory.logs, mallory.kill):
                with pytest.raises(ClientError) as err:
                    attempt(task["id"])
                assert err.value.status == 404
            with pytest.raises(ClientError) as err:
                mallory.task("secret")
            assert err.value.status == 404
            assert all(e["task_id"] != task["id"] for e in mallory.events())
            with pytest.raises(ClientError) as err:
                mallory.add_user("eve")
            assert err.value.status == 403
            own = mallory.run_job("mine", image, ["true"])
            assert [t["id"] for t in mallory.tasks()] == [own["id"]]
        assert admin.task(task["id"])["state"] == "running"
        admin.kill(task["id"])
        wait_state(admin, task["id"], TERMINAL)

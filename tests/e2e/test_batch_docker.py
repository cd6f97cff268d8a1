"""Issue 22 on real Docker: an array, a dependency, a gang, a preemption and a checkpoint."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker_cluster import docker_cluster

from dockyard.client import Client
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def batch_cluster(image: str) -> Iterator[ProcessCluster]:
    with _env(DOCKYARD_PREEMPTION="1", **FAST_CLEANUP), docker_cluster() as cl:
        yield cl


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables (the server and agent processes inherit them)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: The agents' checkpoint cleanup pass runs every second here (10 s by default).
FAST_CLEANUP = {"DOCKYARD_AGENT_CHECKPOINT_CHECK_INTERVAL": "1"}


def _state(api: Client, ref: str, *states: str) -> dict[str, Any]:
    return wait_for(
        lambda: t if (t := api.task(ref))["state"] in states else None,
        timeout=60,
        message=f"{ref} in {states}",
    )


def _tasks(api: Client, workload_id: str) -> list[dict[str, Any]]:
    return [t for t in api.tasks() if t["workload_id"] == workload_id]


def test_array_dependency_gang_and_preemption(batch_cluster: ProcessCluster, image: str) -> None:
    with batch_cluster.client() as api:
        first = api.run_job("first", image, ["sh", "-c", "sleep 1"])
        array = api.run_job(
            "arr",
            image,
            ["sh", "-c", 'echo "index=$DOCKYARD_ARRAY_INDEX"'],
            array="0-2%1",
            after=[f"ok:{first['id']}"],
        )
        ended = wait_for(
            lambda: (
                ts
                if len(ts := _tasks(api, array["id"])) == 3
                and all(t["state"] == "succeeded" for t in ts)
                else None
            ),
            timeout=90,
        )
        done = _state(api, first["id"], "succeeded")
        assert min(t["started_at"] for t in ended) >= done["finished_at"]
        lines = sorted(line["line"] for t in ended for line in api.logs(t["id"])["lines"])
        assert lines == ["index=0", "index=1", "index=2"]
        records = [r for r in api.accounting() if r["workload_id"] == array["id"]]
        assert sorted(r["array_index"] for r in records) == [0, 1, 2]

        gang = api.run_job("gang", image, ["sh", "-c", "true"], gang_size=2)
        members = wait_for(
            lambda: (
                ts
                if len(ts := _tasks(api, gang["workload_id"])) == 2
                and all(t["state"] == "succeeded" for t in ts)
                else None
            ),
            timeout=60,
        )
        assert len({t["assigned_at"] for t in members}) == 1  # placed in one pass

        cores = max(n["cpu"] for n in api.nodes())
        low = api.run_job("low", image, ["sh", "-c", "sleep 60"], cpu=cores)
        _state(api, low["id"], "running")
        high = api.run_job("high", image, ["sh", "-c", "true"], cpu=cores, priority=10)
        _state(api, high["id"], "succeeded")
        gone = api.task(low["id"])
        assert (gone["state"], gone["reason"]) == ("killed", "preempted")
        again = wait_for(
            lambda: [t for t in _tasks(api, low["workload_id"]) if t["attempt"] == 2], timeout=30
        )[0]
        _state(api, again["id"], "running")
        api.kill(again["id"])


#: Saves its progress to the checkpoint volume on SIGUSR1 and exits; an attempt
#: started with DOCKYARD_RESUME=1 prints what it finds there.
CHECKPOINTING = (
    'd="$DOCKYARD_CHECKPOINT_DIR"; '
    'if [ "$DOCKYARD_RESUME" = 1 ]; then echo "resumed $(cat "$d/progress")"; exit 0; fi; '
    "trap 'echo step=7 > \"$d/progress\"; exit 0' USR1; "
    "echo started; while true; do sleep 0.1; done"
)


def test_checkpoint_signal_volume_and_resume_after_preemption(
    batch_cluster: ProcessCluster, image: str
) -> None:
    """Same node: the preempted attempt gets SIGUSR1 (not SIGTERM), writes to
    $DOCKYARD_CHECKPOINT_DIR and exits by itself within its grace; the requeued
    attempt starts with DOCKYARD_RESUME=1 and finds the file in the same volume."""
    with batch_cluster.client() as api:
        cores = max(n["cpu"] for n in api.nodes())
        job = api.run_job(
            "ckpt", image, ["sh", "-c", CHECKPOINTING], cpu=cores, checkpoint_signal="SIGUSR1"
        )
        _state(api, job["id"], "running")
        wait_for(
            lambda: any(line["line"] == "started" for line in api.logs(job["id"])["lines"]),
            timeout=30,
            message="the trap is set",
        )
        high = api.run_job("ckpt-high", image, ["sh", "-c", "true"], cpu=cores, priority=10)
        _state(api, high["id"], "succeeded")
        gone = _state(api, job["id"], "killed")
        assert gone["reason"] == "preempted"
        assert gone["exit_code"] == 0  # its trap ran: SIGUSR1, not SIGTERM or SIGKILL
        again = wait_for(
            lambda: [t for t in _tasks(api, job["workload_id"]) if t["attempt"] == 2], timeout=30
        )[0]
        _state(api, again["id"], "succeeded")
        assert [line["line"] for line in api.logs(again["id"])["lines"]] == ["resumed step=7"]
    engine = docker.from_env()
    name = f"ckpt-{job['workload_id']}"
    # One per job, kept across its attempts; the agent's cleanup removes it once the
    # job is over for good (and its containers are gone): every 10 s by default.
    wait_for(
        lambda: not engine.volumes.list(filters={"name": name}),
        timeout=90,
        message="the agent removed the job's checkpoint volume",
    )


def test_a_shared_checkpoint_root_follows_a_drained_job_to_another_node(
    image: str, tmp_path: Path
) -> None:
    """Two nodes share ``checkpoint_root``: the job on the drained node gets SIGUSR1,
    writes its progress, and the attempt moved to the other node resumes from it."""
    root = tmp_path / "shared-checkpoints"
    with (
        _env(DOCKYARD_AGENT_CHECKPOINT_ROOT=str(root), **FAST_CLEANUP),
        docker_cluster(agents=2) as cl,
        cl.client() as api,
    ):
        wait_for(lambda: len([n for n in api.nodes() if n["state"] == "ready"]) == 2)
        job = api.run_job(
            "ckpt-move", image, ["sh", "-c", CHECKPOINTING], checkpoint_signal="SIGUSR1"
        )
        first = _state(api, job["id"], "running")
        wait_for(
            lambda: any(line["line"] == "started" for line in api.logs(job["id"])["lines"]),
            timeout=30,
            message="the trap is set",
        )
        api.drain(first["node_id"], deadline_s=0)
        gone = _state(api, job["id"], "killed")
        assert (gone["reason"], gone["exit_code"]) == ("node_drained", 0)
        again = wait_for(
            lambda: [t for t in _tasks(api, job["workload_id"]) if t["attempt"] == 2],
            timeout=30,
        )[0]
        done = _state(api, again["id"], "succeeded")
        assert done["node_id"] != first["node_id"]
        assert [line["line"] for line in api.logs(again["id"])["lines"]] == ["resumed step=7"]
        owned = list(root.glob(f"*/ckpt-{job['workload_id']}/progress"))
        assert [p.read_text() for p in owned] in (["step=7\n"], [])  # [] once cleaned
        wait_for(
            lambda: not list(root.glob(f"*/ckpt-{job['workload_id']}")),
            timeout=60,
            message="the shared checkpoint directory is removed once the job is over",
        )

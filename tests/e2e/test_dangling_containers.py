"""Row 5 of the test matrix: labelled containers the store does not know are reaped.

A Docker fault mid-create (the agent dies after ``create``/``start`` and before the
server hears of it, or a create that Docker reported failed but did) leaves a
*running* container labelled for this node. Here such containers are made by hand,
with dockyard's labels for the node: one for a task id the store never saw, one for
a task that has ended. The agent's reconciler (``_remove_stale``: every container
of this node that is not in the desired set) stops them (SIGTERM, then SIGKILL after
``STALE_GRACE_S``) and removes them; a container of a task still wanted is kept.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import docker
import docker.errors
import pytest
from docker_cluster import docker_cluster

from dockyard.agent.reconciler import STALE_GRACE_S
from dockyard.drivers.base import LABEL_MANAGED, LABEL_NODE, LABEL_OWNER, LABEL_TASK, LABEL_WORKLOAD
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker


@pytest.fixture()
def cluster(image: str) -> Iterator[ProcessCluster]:
    with docker_cluster() as cl:
        yield cl


def gone(engine: docker.DockerClient, container_id: str) -> bool:
    try:
        engine.containers.get(container_id)
    except docker.errors.NotFound:
        return True
    return False


def test_unknown_and_ended_tasks_containers_are_reaped(cluster: ProcessCluster, image: str) -> None:
    engine = docker.from_env()
    node_id = cluster.node_id("node-1")
    made = []
    try:
        with cluster.client() as api:
            ended = api.run_job("ended", image, ["true"])
            wait_for(lambda: api.task(ended["id"])["state"] == "succeeded", timeout=60)
            wanted = api.run_job("wanted", image, ["sleep", "600"], kill_grace_s=1)
            wait_for(lambda: api.task(wanted["id"])["state"] == "running", timeout=60)
            for task_id in ("t-never-seen", ended["id"]):
                labels = {
                    LABEL_MANAGED: "1",
                    LABEL_NODE: node_id,
                    LABEL_TASK: task_id,
                    LABEL_WORKLOAD: "w-dangling",
                    LABEL_OWNER: "admin",
                }
                # It ignores SIGTERM: only the reaper's SIGKILL after the grace ends it.
                script = "trap '' TERM; while :; do sleep 1; done"
                made.append(
                    engine.containers.run(image, ["sh", "-c", script], labels=labels, detach=True)
                )
            made_at = time.monotonic()
            wait_for(
                lambda: all(gone(engine, c.id) for c in made),
                timeout=STALE_GRACE_S + 30,
                message="dangling containers reaped",
            )
            assert time.monotonic() - made_at >= STALE_GRACE_S - 1  # after the grace
            # The wanted task's container was left alone, and nothing reported the reaped ones.
            assert api.task(wanted["id"])["state"] == "running"
            assert api.task(ended["id"])["state"] == "succeeded"
            running = engine.containers.list(filters={"label": f"{LABEL_TASK}={wanted['id']}"})
            assert len(running) == 1
            assert not [t for t in api.tasks() if t["id"] == "t-never-seen"]
            api.kill(wanted["id"])
    finally:
        for container in made:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass

"""Row 5 of the test matrix: labelled containers the store does not know are reaped.

A Docker fault mid-create (the agent dies after ``create``/``start`` and before the
server hears of it, or a create that Docker reported failed but did) leaves a
*running* container labelled for this node. Here such containers are made by hand,
with dockyard's labels for the node: one for a task id the store never saw, one for
a task that has ended. The agent's reconciler (``_remove_stale``: every container
of this node that is not in the desired set) stops them (SIGTERM, then SIGKILL after
``STALE_GRACE_S``) and removes them; a container of a task still wanted is kept.

The second half: containers labelled with a node id no agent uses any more (an
agent that lost its data dir re-joined under a new id). A node id this cluster
never registered is left alone: it may be another cluster's on the same Engine.
Two agents share this Docker Engine, so neither may judge another node id alone:
each asks the server (``foreign``), which names the long-down ones
(``orphans``); only those are stopped and removed, reported as an
``orphan_containers_reaped`` event, while the live agents' containers run on.
"""

from __future__ import annotations

import shutil
import signal
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


def _labels(node_id: str, task_id: str) -> dict[str, str]:
    return {
        LABEL_MANAGED: "1",
        LABEL_NODE: node_id,
        LABEL_TASK: task_id,
        LABEL_WORKLOAD: "w-orphan",
        LABEL_OWNER: "admin",
    }


def _running(engine: docker.DockerClient, container_id: str) -> bool:
    try:
        return engine.containers.get(container_id).status == "running"
    except docker.errors.NotFound:
        return False


def test_containers_of_a_node_id_no_agent_uses_are_reaped_and_live_ones_kept(
    image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = docker.from_env()
    monkeypatch.setenv("DOCKYARD_AGENT_ORPHAN_CHECK_INTERVAL", "0.5")
    made = []
    with docker_cluster(agents=0, server_args=["--orphan-grace", "2"]) as cl:
        cl.start_agent("node-1", extra_args=["--label", "side=a"])
        cl.start_agent("node-2", extra_args=["--label", "side=b"])
        cl.wait_ready_nodes(2)
        live_1, old_2 = cl.node_id("node-1"), cl.node_id("node-2")
        try:
            with cl.client() as api:
                kept = api.run_job("kept", image, ["sleep", "600"], constraints=["side=a"])
                lost = api.run_job("lost", image, ["sleep", "600"], constraints=["side=b"])
                for job in (kept, lost):
                    wait_for(lambda j=job: api.task(j["id"])["state"] == "running", timeout=60)
                kept_cid = api.task(kept["id"])["container_id"]
                old_cid = api.task(lost["id"])["container_id"]
                # A node id the server never saw (another cluster's on this Engine):
                # its container is not this cluster's to judge, and keeps running.
                never = engine.containers.run(
                    image,
                    ["sleep", "600"],
                    labels=_labels("n-never-joined", "t-never-joined"),
                    detach=True,
                    init=True,
                )
                made.append(never)
                # node-2 loses its data dir and comes back as a new node id; its old
                # container keeps running under the old id.
                cl.stop_agent("node-2", signal.SIGKILL)
                shutil.rmtree(cl.root / "agent-node-2")
                cl.start_agent("node-2", extra_args=["--label", "side=b"])
                new_2 = wait_for(
                    lambda: (
                        (cl.root / "agent-node-2" / "node_id").exists() and cl.node_id("node-2")
                    ),
                    timeout=30,
                )
                assert new_2 != old_2
                assert _running(engine, old_cid)

                # Until both orphans are gone, sampled all along: the live agents'
                # containers (node-1's, and whatever runs on the new node-2) keep running.
                def settled() -> bool:
                    assert _running(engine, kept_cid), "a live agent's container was stopped"
                    assert _running(engine, never.id), "another cluster's container was stopped"
                    return gone(engine, old_cid)

                wait_for(settled, timeout=60, interval=0.2, message="orphans reaped")
                # The old node id was down (and its task lost and replaced) first.
                nodes = {n["id"]: n for n in api.nodes()}
                assert nodes[old_2]["state"] == "down"
                assert nodes[new_2]["state"] == nodes[live_1]["state"] == "ready"
                assert api.task(lost["id"])["state"] == "lost"
                events = api.events()
                reaped = [e for e in events if e["reason"] == "orphan_containers_reaped"]
                assert {e["node_id"] for e in reaped} >= {old_2}
                assert "n-never-joined" not in {e["node_id"] for e in reaped}
                assert _running(engine, never.id)
                assert any(lost["id"] in e["message"] for e in reaped if e["node_id"] == old_2)
                # Nothing of a live node id was reaped; every running task has its container.
                assert not [e for e in reaped if e["node_id"] in (live_1, new_2)]
                assert api.task(kept["id"])["state"] == "running"
                for task in api.tasks(active=True):
                    if task["state"] == "running":
                        assert _running(engine, task["container_id"]), task
                api.kill(kept["id"])
        finally:
            for container in made:
                try:
                    container.remove(force=True)
                except docker.errors.NotFound:
                    pass
            for container in engine.containers.list(
                all=True, filters={"label": f"{LABEL_NODE}={old_2}"}
            ):
                container.remove(force=True)

"""Network partitions between an agent and the server, with real network namespaces.

Topology, all made by this test (traffic only to addresses inside these namespaces):

    root ns (test, node-2 agent) --veth 10.231.1.1/.2-- ns SRV (server: API + gateway)
    ns NODE (node-1 agent)       --veth 10.231.2.2/.1-- ns SRV

Cutting ``NODE``'s link partitions node-1 from the server; Docker is reached over
its unix socket, which no network namespace affects.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from dockyard.client import Client
from dockyard.drivers.base import LABEL_TASK
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.dockerclean import remove_node_resources
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

GRACE = 3.0


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


class Topology:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.srv = f"dysrv{tag}"
        self.node = f"dynode{tag}"
        self.root_if, self.srv_if_a = f"dyra{tag}", f"dysa{tag}"
        self.node_if, self.srv_if_b = f"dynb{tag}", f"dysb{tag}"

    def up(self) -> None:
        for ns in (self.srv, self.node):
            sh("ip", "netns", "add", ns)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", self.root_if, "type", "veth", "peer", "name", self.srv_if_a)
        sh("ip", "link", "set", self.srv_if_a, "netns", self.srv)
        sh("ip", "addr", "add", "10.231.1.1/24", "dev", self.root_if)
        sh("ip", "link", "set", self.root_if, "up")
        self.in_ns(self.srv, "ip", "addr", "add", "10.231.1.2/24", "dev", self.srv_if_a)
        self.in_ns(self.srv, "ip", "link", "set", self.srv_if_a, "up")
        sh("ip", "link", "add", self.node_if, "type", "veth", "peer", "name", self.srv_if_b)
        sh("ip", "link", "set", self.node_if, "netns", self.node)
        sh("ip", "link", "set", self.srv_if_b, "netns", self.srv)
        self.in_ns(self.node, "ip", "addr", "add", "10.231.2.2/24", "dev", self.node_if)
        self.in_ns(self.node, "ip", "link", "set", self.node_if, "up")
        self.in_ns(self.srv, "ip", "addr", "add", "10.231.2.1/24", "dev", self.srv_if_b)
        self.in_ns(self.srv, "ip", "link", "set", self.srv_if_b, "up")

    def in_ns(self, ns: str, *args: str) -> None:
        sh("ip", "netns", "exec", ns, *args)

    def cut(self) -> None:
        self.in_ns(self.node, "ip", "link", "set", self.node_if, "down")

    def heal(self) -> None:
        self.in_ns(self.node, "ip", "link", "set", self.node_if, "up")

    def down(self) -> None:
        subprocess.run(["ip", "link", "del", self.root_if], capture_output=True, timeout=30)
        for ns in (self.srv, self.node):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@pytest.fixture()
def partitioned(image: str) -> Iterator[tuple[ProcessCluster, Topology]]:
    topo = Topology()
    topo.up()
    cl = ProcessCluster(
        heartbeat=0.5,
        node_grace=GRACE,
        api_host="10.231.1.2",
        gateway_host="10.231.1.2",
        server_prefix=["ip", "netns", "exec", topo.srv],
    )
    try:
        cl.start_server()
        cl.start_agent(
            "node-1",
            prefix=["ip", "netns", "exec", topo.node],
            server=f"tcp://10.231.2.1:{cl.gateway_port}",
        )
        cl.start_agent("node-2")
        cl.wait_ready_nodes(2)
        yield cl, topo
    except BaseException:
        print(cl.logs())
        raise
    finally:
        node_ids = [cl.node_id(f"node-{i}") for i in (1, 2)]
        topo.heal()
        cl.close()
        topo.down()
        remove_node_resources(node_ids)  # containers and networks; fails on a leaked network


def running(task_id: str) -> int:
    return len(docker.from_env().containers.list(filters={"label": f"{LABEL_TASK}={task_id}"}))


def node_state(api: Client, name: str) -> str:
    return str(next(n["state"] for n in api.nodes() if n["name"] == name))


def jobs_on_node_1(api: Client, image: str, count: int) -> list[str]:
    api.drain("node-2", deadline_s=3600)
    ids = [
        str(
            api.run_job(f"p{i}", image, ["sleep", "600"], cpu=0.05, memory="16m", kill_grace_s=1)[
                "id"
            ]
        )
        for i in range(count)
    ]
    wait_for(lambda: all(api.task(t)["state"] == "running" for t in ids), timeout=120)
    api.undrain("node-2")
    return ids


def copies(api: Client, task_id: str) -> list[dict[str, Any]]:
    workload = api.task(task_id)["workload_id"]
    return [t for t in api.tasks() if t["workload_id"] == workload]


def test_long_partition_replaces_then_fences(
    partitioned: tuple[ProcessCluster, Topology], image: str
) -> None:
    cluster, topo = partitioned
    with cluster.client() as api:
        ids = jobs_on_node_1(api, image, 5)
        topo.cut()
        wait_for(lambda: node_state(api, "node-1") == "down", timeout=GRACE + 5)
        wait_for(
            lambda: all(len(c := copies(api, t)) == 2 and c[0]["state"] == "running" for t in ids),
            timeout=60,
            message="replacements running",
        )
        assert all(running(t) == 1 for t in ids)  # originals still run behind the cut
        topo.heal()
        # From the heal until every original has stopped, sampled continuously: the
        # store never shows two running tasks of one job (the returning node's late
        # reports must not bring a lost original back), and the replacement never
        # stops.
        deadline = time.monotonic() + 60
        while True:
            for task_id in ids:
                live = [c for c in copies(api, task_id) if c["state"] == "running"]
                assert len(live) == 1 and live[0]["node"] == "node-2", live
            if not any(running(t) for t in ids):
                break
            assert time.monotonic() < deadline, "originals still run 60 s after the heal"
        wait_for(lambda: node_state(api, "node-1") == "ready", timeout=60)
        for task_id in ids:
            tasks = copies(api, task_id)
            live = [t for t in tasks if t["state"] == "running"]
            assert len(tasks) == 2 and len(live) == 1 and live[0]["node"] == "node-2"
            assert running(live[0]["id"]) == 1
            assert api.task(task_id)["state"] == "lost"


def test_short_partition_changes_nothing(
    partitioned: tuple[ProcessCluster, Topology], image: str
) -> None:
    cluster, topo = partitioned
    with cluster.client() as api:
        ids = jobs_on_node_1(api, image, 3)
        containers = {t: api.task(t)["container_id"] for t in ids}
        topo.cut()
        cut_at = time.monotonic()
        wait_for(lambda: time.monotonic() - cut_at >= GRACE / 2, timeout=GRACE)
        topo.heal()
        wait_for(lambda: node_state(api, "node-1") == "ready", timeout=30)
        # Judge only once a full grace (and a margin) has passed since the cut: a
        # node-down or a reschedule decided late must show up before the asserts.
        wait_for(lambda: time.monotonic() - cut_at >= 2 * GRACE, timeout=3 * GRACE)
        for task_id in ids:
            assert len(copies(api, task_id)) == 1
            task = api.task(task_id)
            assert task["state"] == "running" and task["container_id"] == containers[task_id]
        assert "node_down" not in [e["reason"] for e in api.events()]

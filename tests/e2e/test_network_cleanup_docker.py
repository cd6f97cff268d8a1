"""No test leaks Docker networks: an in-process cluster (``LocalCluster``) with a
Docker agent removes, when it closes, the containers and the service networks its node
made (and the firewall rules of internal ones), which the agent, stopped first, leaves
behind (dockyard.testing.dockerclean). Every Docker fixture ends the same way and fails
on a network left over."""

from __future__ import annotations

import subprocess

import docker
import pytest

from dockyard.drivers.base import LABEL_NODE
from dockyard.drivers.docker import DockerDriver
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.images import ensure_busybox_image
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker


def test_local_cluster_with_docker_leaves_no_network_behind() -> None:
    image = ensure_busybox_image()
    engine = docker.from_env()
    cluster = LocalCluster().start()
    closed = False
    try:
        node_id = cluster.add_agent("docker-1", DockerDriver()).node_id
        with cluster.client() as api:
            wait_for(lambda: [n for n in api.nodes() if n["state"] == "ready"], timeout=30)
            # A template instance: its network is internal (firewall rules on its bridge).
            api.create_template(
                {"name": "tidy", "service": {"image": image, "command": ["sleep", "600"]}}
            )
            api.launch("tidy")

            def networks() -> list[object]:
                return engine.networks.list(filters={"label": f"{LABEL_NODE}={node_id}"})

            made = wait_for(networks, timeout=60)
            bridge = made[0].attrs["Options"]["com.docker.network.bridge.name"]
            wait_for(lambda: f"-i {bridge} " in _rules(), timeout=30)
        cluster.close()  # raises LeakedNetworks if one is left
        closed = True
        assert networks() == []
        assert f"-i {bridge} " not in _rules()
        assert engine.containers.list(all=True, filters={"label": f"{LABEL_NODE}={node_id}"}) == []
    finally:
        if not closed:
            cluster.close()


def _rules() -> str:
    return "\n".join(
        subprocess.run(["iptables", "-S", chain], capture_output=True, text=True).stdout
        for chain in ("INPUT", "DOCKER-USER")
    )

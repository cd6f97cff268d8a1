"""A real-Docker cluster for e2e tests (one server, one agent), shared by fixtures."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import docker

from dockyard.drivers.base import LABEL_NODE
from dockyard.testing.cluster import ProcessCluster


@contextlib.contextmanager
def docker_cluster(agents: int = 1, **options: Any) -> Iterator[ProcessCluster]:
    """A server and ``agents`` agents (node-1, ...) on real Docker; prints their logs if
    setup or a test fails; at the end resumes any agent a test stopped, and removes
    the agents' containers."""
    cl = ProcessCluster(**{"heartbeat": 0.5, "node_grace": 3.0, **options})
    try:
        cl.start(agents=agents)
        yield cl
    except BaseException:
        print(cl.logs())
        raise
    finally:
        node_ids = [cl.node_id(name) for name in list(cl.agents)]
        for name in list(cl.agents):
            cl.signal_agent(name, signal.SIGCONT)
        cl.close()
        client = docker.from_env()
        for node_id in node_ids:
            for container in client.containers.list(
                all=True, filters={"label": f"{LABEL_NODE}={node_id}"}
            ):
                container.remove(force=True)
            remove_networks(client, node_id)


def remove_networks(client: Any, node_id: str) -> None:
    """The service networks the node's agent made (docs/networking.md), and the
    firewall rules of internal ones."""
    for network in client.networks.list(filters={"label": f"{LABEL_NODE}={node_id}"}):
        bridge = (network.attrs.get("Options") or {}).get("com.docker.network.bridge.name")
        network.remove()
        for chain in ("INPUT", "DOCKER-USER"):
            rules = subprocess.run(["iptables", "-S", chain], capture_output=True, text=True)
            for rule in rules.stdout.splitlines():
                if bridge and f"-i {bridge} " in rule:
                    subprocess.run(["iptables", "-D", *rule.split()[1:]], check=False)

"""What a test cluster's nodes leave on the Docker Engine, removed after its agents stop.

Agents stop before their containers are gone (a stopped agent leaves its containers
running, to adopt them when it comes back), so a node's service networks
(docs/networking.md) are still in use when it stops and it never removes them. A test
fixture calls :func:`remove_node_resources` after stopping its cluster: the nodes'
containers, then their networks and the firewall rules of internal ones; it fails if
one of the nodes' networks is still there, so no test leaks them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from typing import Any

import docker

from dockyard.drivers.base import LABEL_NODE

#: The chains the agent adds an internal network's rules to (agent/networks.py).
FIREWALL_CHAINS = ("INPUT", "DOCKER-USER")


class LeakedNetworks(AssertionError):
    """A node's Docker networks are still there after its resources were removed."""


def remove_node_resources(node_ids: Iterable[str], client: Any = None) -> None:
    """Force-remove the containers and the service networks of ``node_ids`` (and the
    firewall rules of their bridges); :class:`LeakedNetworks` if any network stays."""
    client = client or docker.from_env()
    ids = [n for n in node_ids if n]
    for node_id in ids:
        for container in client.containers.list(
            all=True, filters={"label": f"{LABEL_NODE}={node_id}"}
        ):
            container.remove(force=True)
        remove_networks(client, node_id)
    left = [
        str(net.name)
        for node_id in ids
        for net in client.networks.list(filters={"label": f"{LABEL_NODE}={node_id}"})
    ]
    if left:
        raise LeakedNetworks(f"Docker networks left behind: {', '.join(left)}")


def remove_networks(client: Any, node_id: str) -> None:
    """The service networks the node's agent made, and the firewall rules of internal
    ones (a rule names the network's bridge interface)."""
    for network in client.networks.list(filters={"label": f"{LABEL_NODE}={node_id}"}):
        bridge = (network.attrs.get("Options") or {}).get("com.docker.network.bridge.name")
        try:
            network.remove()
        except docker.errors.NotFound:
            pass
        if not bridge:
            continue
        for chain in FIREWALL_CHAINS:
            rules = subprocess.run(
                ["iptables", "-S", chain], capture_output=True, text=True, check=False
            )
            for rule in rules.stdout.splitlines():
                if f"-i {bridge} " in rule:
                    delete = ["iptables", "-D", *rule.split()[1:]]
                    subprocess.run(delete, capture_output=True, check=False)

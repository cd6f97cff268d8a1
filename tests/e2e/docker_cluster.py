"""A real-Docker cluster for e2e tests (one server, one agent), shared by fixtures."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.dockerclean import remove_node_resources


@contextlib.contextmanager
def docker_cluster(agents: int = 1, **options: Any) -> Iterator[ProcessCluster]:
    """A server and ``agents`` agents (node-1, ...) on real Docker; prints their logs if
    setup or a test fails; at the end resumes any agent a test stopped, and removes
    the agents' containers and networks."""
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
        try:
            cl.close()
        finally:  # even when an agent would not stop: no container or network is left
            remove_node_resources(node_ids)  # fails if a network of theirs is left

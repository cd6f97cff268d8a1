from __future__ import annotations

from collections.abc import Iterator

import pytest

from dockyard.drivers.sim import SimDriver
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for


@pytest.fixture(scope="module")
def local() -> Iterator[LocalCluster]:
    cluster = LocalCluster().start()
    cluster.add_agent("sim-1", SimDriver(cpu_millis=2000, memory_bytes=2 * 1024**3))
    with cluster.client() as api:
        wait_for(lambda: [n for n in api.nodes() if n["state"] == "ready"], timeout=20)
    yield cluster
    cluster.close()

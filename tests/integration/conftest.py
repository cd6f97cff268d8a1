from __future__ import annotations

from collections.abc import Iterator

import pytest

from dockyard.drivers.sim import SimDriver
from dockyard.testing import postgres
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def local(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A server and a hollow node in this process, on each store backend in turn."""
    with postgres.store_for(str(request.param), "dy_it") as db_url:
        cluster = LocalCluster(db_url=db_url).start()
        try:
            cluster.add_agent("sim-1", SimDriver(cpu_millis=2000, memory_bytes=2 * 1024**3))
            with cluster.client() as api:
                wait_for(lambda: [n for n in api.nodes() if n["state"] == "ready"], timeout=20)
            yield cluster
        finally:
            cluster.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def two(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A server and two hollow nodes."""
    with postgres.store_for(str(request.param), "dy_it") as db_url:
        cluster = LocalCluster(db_url=db_url).start()
        try:
            for i in range(2):
                cluster.add_agent(f"sim-{i}", SimDriver(cpu_millis=4000, memory_bytes=4 * 1024**3))
            with cluster.client() as api:
                wait_for(
                    lambda: len([n for n in api.nodes() if n["state"] == "ready"]) == 2,
                    timeout=20,
                )
            yield cluster
        finally:
            cluster.close()

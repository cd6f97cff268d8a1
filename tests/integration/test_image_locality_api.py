"""Image locality end to end: agents report their images; placement prefers them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dockyard.drivers.sim import SimDriver
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for

GIB = 1 << 30


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("locality")).start()
    try:
        warm = SimDriver(cpu_millis=2000, memory_bytes=8 * GIB)
        warm.extra_images = {"acme/app:1"}
        cluster.add_agent("warm", warm)
        cluster.add_agent("cold", SimDriver(cpu_millis=4000, memory_bytes=8 * GIB))
        with cluster.client() as api:
            wait_for(lambda: len([n for n in api.nodes() if n["state"] == "ready"]) == 2)
        yield cluster
    finally:
        cluster.close()


def _placed(api: Any, task_id: str) -> dict[str, Any]:
    return wait_for(lambda: t if (t := api.task(task_id))["node"] else None)


def _reported(api: Any) -> list[Any] | None:
    nodes = api.nodes()
    return nodes if any("acme/app:1" in n["images"] for n in nodes) else None


def test_placement_prefers_the_node_that_has_the_image(two: LocalCluster) -> None:
    with two.client() as api:
        # 3 cores fit only "cold" (4 cores; "warm" has 2): cold becomes the fuller node.
        fuller = _placed(api, api.run_job("load", "other/img:1", ["sleep", "600"], cpu="3")["id"])
        assert fuller["node"] == "cold"
        nodes = wait_for(lambda: _reported(api), timeout=20, message="warm reports its image")
        assert "acme/app:1" in next(n for n in nodes if n["name"] == "warm")["images"]
        got = _placed(api, api.run_job("app", "acme/app:1", ["sleep", "600"], cpu="0.5")["id"])
        assert got["node"] == "warm"  # emptier, but it has the image
        plain = _placed(api, api.run_job("plain", "third/img:1", ["sleep", "600"], cpu="0.5")["id"])
        assert plain["node"] == "cold"  # without the image: binpack as usual

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from dockyard.drivers.base import LABEL_NODE
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.images import ensure_busybox_image

pytestmark = pytest.mark.docker


@pytest.fixture(scope="session")
def image() -> str:
    return ensure_busybox_image()


@pytest.fixture(scope="module")
def cluster(image: str) -> Iterator[ProcessCluster]:
    cl = ProcessCluster(heartbeat=0.5, node_grace=3.0)
    try:
        cl.start(agents=1)
        yield cl
    except BaseException:
        print(cl.logs())
        raise
    finally:
        node_ids = [cl.node_id(name) for name in list(cl.agents)]
        cl.close()
        client = docker.from_env()
        for node_id in node_ids:
            for container in client.containers.list(
                all=True, filters={"label": f"{LABEL_NODE}={node_id}"}
            ):
                container.remove(force=True)

from __future__ import annotations

from collections.abc import Iterator

import pytest
from docker_cluster import docker_cluster

from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.images import ensure_busybox_image

pytestmark = pytest.mark.docker


@pytest.fixture(scope="session")
def image() -> str:
    return ensure_busybox_image()


@pytest.fixture(scope="module")
def cluster(image: str) -> Iterator[ProcessCluster]:
    with docker_cluster() as cl:
        yield cl

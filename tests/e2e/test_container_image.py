"""The Dockerfile builds an image that runs the server and the agent.

No registry here: the Dockerfile's BASE is a local image ``docker import``-ed from this
machine's Python and the installed dependencies (dockyard.testing.pybase), and pip
installs the checkout's wheel offline. Production builds FROM python:3.11-slim.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest

from dockyard.testing import pybase
from dockyard.testing.cluster import free_port
from dockyard.testing.installs import build_wheel
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
BASE = "dockyard/python-base"
IMAGE = "dockyard/dockyard:ci"


def base_image(client: Any, wheel: Path, tmp: Path) -> str:
    """The local base, imported again only when the dependencies changed."""
    key = hashlib.sha256("\n".join(sorted(pybase.wheel_requires(wheel))).encode())
    key.update(Path(pybase.__file__).read_bytes())  # how it is made
    tag = f"{BASE}:{key.hexdigest()[:12]}"
    for old in client.images.list(name=BASE):  # bases made for other dependencies
        if tag not in old.tags:
            client.images.remove(old.id, force=True)
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        pybase.import_base(client, wheel, tmp / "rootfs.tar", tag)
        (tmp / "rootfs.tar").unlink()
    return tag


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("image")
    client = docker.from_env()
    context = tmp / "context"
    (context / "dist").mkdir(parents=True)
    wheel = build_wheel(ROOT, tmp / "wheel")
    shutil.copy2(wheel, context / "dist" / wheel.name)
    shutil.copy2(ROOT / "Dockerfile", context / "Dockerfile")
    base = base_image(client, wheel, tmp)
    client.images.build(
        path=str(context),
        tag=IMAGE,
        rm=True,
        forcerm=True,
        buildargs={"BASE": base, "PIP_NO_INDEX": "1", "PIP_NO_DEPS": "1"},
    )
    yield IMAGE
    client.images.remove(IMAGE, force=True)


def test_image_runs_server_and_agent(image: str, tmp_path: Path) -> None:
    client = docker.from_env()
    port, gateway = free_port(), f"tcp://127.0.0.1:{free_port()}"
    data = tmp_path / "data"
    data.mkdir()
    common: dict[str, Any] = {
        "detach": True,
        "network_mode": "host",  # listens on the host's 127.0.0.1 only
        "volumes": {str(data): {"bind": "/data", "mode": "rw"}},
    }
    containers = []
    try:
        serve = ["server", "--host", "127.0.0.1", "--port", str(port), "--gateway", gateway]
        server = client.containers.run(image, [*serve, "--insecure-open-join"], **common)
        containers.append(server)
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            server.reload()
            assert server.status != "exited", server.logs().decode()
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=60, message="the server in the image answers")
        assert httpx.get(f"{url}/", timeout=5).status_code == 200  # dashboard files
        join = ["agent", "--driver", "sim", "--server", gateway, "--name", "image-node"]
        agent = client.containers.run(image, [*join, "--data-dir", "/data/agent"], **common)
        containers.append(agent)
        token = (data / "admin.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}

        def node_ready() -> bool:
            nodes = httpx.get(f"{url}/api/v1/nodes", headers=headers, timeout=5).json()
            return any(n["name"] == "image-node" and n["state"] == "ready" for n in nodes)

        wait_for(node_ready, timeout=60, message="the agent in the image joins")
        for container in (agent, server):
            container.stop(timeout=20)  # SIGTERM: a clean stop
            assert container.wait(timeout=30)["StatusCode"] == 0, container.logs().decode()
    finally:
        for container in containers:
            container.remove(force=True)

"""Container policy on a real Docker Engine: allowed mounts work, swapped paths are caught."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from dockyard.client import Client
from dockyard.drivers.docker import DEFAULT_PIN_DIR
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

TERMINAL = {"succeeded", "failed", "killed", "lost", "expired"}


@pytest.fixture(scope="module")
def alice(cluster: ProcessCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    home = tmp_path_factory.mktemp("home-alice")
    with cluster.client() as admin:
        token = admin.add_user("alice-docker", home=str(home))["token"]
    with cluster.client(token) as api:
        yield api


def home_of(api: Client, cluster: ProcessCluster) -> Path:
    with cluster.client() as admin:
        user = next(u for u in admin.users() if u["name"] == api.whoami()["name"])
    return Path(user["home"])


def finish(api: Client, task_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: t if (t := api.task(task_id))["state"] in TERMINAL else None, timeout=60
    )


def test_bind_mount_inside_home_is_visible(
    cluster: ProcessCluster, alice: Client, image: str
) -> None:
    home = home_of(alice, cluster)
    (home / "data").mkdir(exist_ok=True)
    (home / "data" / "hello.txt").write_text("from the host\n")
    task = alice.run_job(
        "reader",
        image,
        ["sh", "-c", "cat /data/hello.txt; sleep 60"],
        mounts=[f"{home}/data:/data:ro"],
        kill_grace_s=1,
    )
    wait_for(lambda: alice.logs(task["id"])["lines"], timeout=60, message="the file's line")
    assert [line["line"] for line in alice.logs(task["id"])["lines"]] == ["from the host"]
    running = alice.task(task["id"])
    host_config = docker.from_env().api.inspect_container(running["container_id"])["HostConfig"]
    assert host_config["Privileged"] is False
    assert "no-new-privileges" in host_config["SecurityOpt"]
    assert host_config["PidsLimit"] > 0
    # Docker is given the pinned copy of the checked folder (drivers/pins.py), read-only.
    [bind] = host_config["Binds"]
    source, target, mode = bind.rsplit(":", 2)
    assert (target, mode) == ("/data", "ro")
    assert source.startswith(str(DEFAULT_PIN_DIR)), bind
    assert os.path.samefile(source, home / "data")
    alice.kill(task["id"])
    assert finish(alice, task["id"])["state"] == "killed"


def test_read_only_mount_cannot_be_written(
    cluster: ProcessCluster, alice: Client, image: str
) -> None:
    home = home_of(alice, cluster)
    (home / "ro").mkdir(exist_ok=True)
    task = alice.run_job(
        "writer", image, ["sh", "-c", "echo x > /data/f"], mounts=[f"{home}/ro:/data:ro"]
    )
    assert finish(alice, task["id"])["state"] == "failed"
    assert not (home / "ro" / "f").exists()


def test_path_swapped_for_a_symlink_after_submit_is_refused_on_the_node(
    cluster: ProcessCluster, alice: Client, image: str
) -> None:
    home = home_of(alice, cluster)
    target = home / "swap"
    target.mkdir(exist_ok=True)
    with cluster.client() as admin:
        admin.drain("node-1", deadline_s=3600)
        try:
            task = alice.run_job("swapper", image, ["ls", "/data"], mounts=[f"{target}:/data"])
            shutil.rmtree(target)
            target.symlink_to("/etc")
        finally:
            admin.undrain("node-1")
    done = finish(alice, task["id"])
    assert (done["state"], done["reason"]) == ("failed", "policy_violation")
    assert "mount_outside_allowed_roots" in done["message"]
    assert not done["container_id"]

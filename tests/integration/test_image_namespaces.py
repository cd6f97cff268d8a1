"""Images built under a user's namespace are that user's: others cannot run them,
build FROM them, or see their names in the node listing. Admins may."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.client import Client, ClientError
from dockyard.drivers.sim import SimDriver
from dockyard.store.tables import Node
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for

PRIVATE = "alice/private:1"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster().start()
    try:
        cluster.add_agent("sim-1", SimDriver(cpu_millis=8000, memory_bytes=8 * 1024**3))
        with cluster.client() as api:
            wait_for(lambda: [n for n in api.nodes() if n["state"] == "ready"], timeout=20)
            api.add_user("alice")
            api.add_user("bob")
        yield cluster
    finally:
        cluster.close()


def as_user(cluster: LocalCluster, name: str) -> Client:
    with cluster.client() as admin:
        token = admin.create_token(name)["token"]
    return cluster.client(token)


def refused(call: object, field: str) -> ClientError:
    assert callable(call)
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.status == 403, caught.value
    assert caught.value.code == "policy" and caught.value.field == field, caught.value
    return caught.value


def test_another_users_image_cannot_be_run(cluster: LocalCluster) -> None:
    with as_user(cluster, "bob") as bob:
        before = len(bob.tasks())
        refused(lambda: bob.run_job("steal", PRIVATE, ["cat", "/secret"]), "image")
        refused(lambda: bob.run_job("steal", "alice/private@sha256:" + "a" * 64), "image")
        batch = [
            {"name": "ok", "image": "dockyard/busybox", "command": ["true"]},
            {"name": "steal", "image": PRIVATE, "command": ["true"]},
        ]
        refused(lambda: bob.run_jobs(batch), "jobs[1].image")
        service = {"name": "steal-svc", "image": PRIVATE, "replicas": 1, "command": ["x"]}
        refused(lambda: bob.create_service(service), "image")
        assert len(bob.tasks()) == before  # nothing stored
        # Images under no user's namespace stay usable, and so are bob's own.
        assert bob.run_job("public", "dockyard/busybox", ["exit", "0"])["id"]
        assert bob.run_job("own", "bob/tools:v1", ["exit", "0"])["id"]
    with as_user(cluster, "alice") as alice:
        assert alice.run_job("mine", PRIVATE, ["exit", "0"])["id"]
    with cluster.client() as admin:
        assert admin.run_job("admin", PRIVATE, ["exit", "0"])["id"]


@pytest.mark.parametrize(
    "dockerfile",
    [
        f"FROM {PRIVATE}\n",
        f"ARG BASE={PRIVATE}\nFROM $BASE\n",
        "FROM ${SOMETHING}\n",
        f"FROM scratch AS base\nCOPY --from={PRIVATE} /secret /\n",
        f"FROM scratch\nRUN --mount=type=bind,from={PRIVATE},target=/m \\\n  cat /m/secret\n",
        f"# syntax\nFROM --platform=linux/amd64 {PRIVATE} AS x\n",
        "FROM 127.0.0.1:5000/probe\n",  # a registry the policy does not allow (SSRF)
        "FROM scratch\nCOPY --from=10.0.0.5:6379/x / /\n",
    ],
)
def test_another_users_image_cannot_be_built_from(
    cluster: LocalCluster, tmp_path: Path, dockerfile: str
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    with as_user(cluster, "bob") as bob:
        refused(lambda: bob.build(ctx), "dockerfile")


def test_own_and_public_bases_build(cluster: LocalCluster, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM scratch AS one\nFROM dockyard/busybox\nCOPY --from=one / /\n"
    )
    with as_user(cluster, "bob") as bob:
        assert bob.build(ctx)["image"] == "bob/ctx:latest"


def test_node_listing_hides_other_users_images(cluster: LocalCluster) -> None:
    with cluster.server.db.write() as session:
        for node in session.query(Node).all():
            node.images = [PRIVATE, "bob/tools:v1", "dockyard/busybox:latest", "busybox:latest"]

    def images(api: Client) -> set[str]:
        return {i for n in api.nodes() for i in n["images"]}

    with as_user(cluster, "bob") as bob:
        assert images(bob) == {"bob/tools:v1", "dockyard/busybox:latest", "busybox:latest"}
    with as_user(cluster, "alice") as alice:
        assert PRIVATE in images(alice) and "bob/tools:v1" not in images(alice)
    with cluster.client() as admin:
        assert {PRIVATE, "bob/tools:v1"} <= images(admin)

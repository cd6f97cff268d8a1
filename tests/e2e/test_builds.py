"""Builds on a real Docker Engine: directory, zip and tar.gz contexts; run the result."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from dockyard.client import Client
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.images import BUSYBOX_BINARY
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

TERMINAL = {"succeeded", "failed", "killed", "lost", "expired"}

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "echo", "build-step-says-{marker}"]
COPY message.txt /message.txt
CMD ["/bin/busybox", "cat", "/message.txt"]
"""


def make_context(root: Path, marker: str, dockerfile: str = DOCKERFILE) -> Path:
    ctx = root / f"ctx-{marker}"
    ctx.mkdir()
    shutil.copy(BUSYBOX_BINARY, ctx / "busybox")
    (ctx / "Dockerfile").write_text(dockerfile.format(marker=marker))
    (ctx / "message.txt").write_text(f"hello from {marker}\n")
    return ctx


def wait_build(api: Client, build_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (
            b if (b := api.build_status(build_id))["state"] in ("succeeded", "failed") else None
        ),
        timeout=120,
        message=f"build {build_id}",
    )


def run_image(api: Client, image: str, name: str) -> list[str]:
    task = api.run_job(name, image, [])
    done = wait_for(
        lambda: t if (t := api.task(task["id"]))["state"] in TERMINAL else None,
        timeout=60,
        message=f"task {name}",
    )
    assert done["state"] == "succeeded", done
    return [line["line"] for line in api.logs(task["id"])["lines"]]


@pytest.fixture
def built_images() -> Iterator[list[str]]:
    images: list[str] = []
    yield images
    client = docker.from_env()
    for image in images:
        try:
            client.images.remove(image, force=True)
        except docker.errors.ImageNotFound:
            pass


def test_build_dir_zip_tar_gz_and_run(
    cluster: ProcessCluster, tmp_path: Path, built_images: list[str]
) -> None:
    dir_ctx = make_context(tmp_path, "dir")
    zip_ctx = tmp_path / "zipped.zip"
    with zipfile.ZipFile(zip_ctx, "w", zipfile.ZIP_DEFLATED) as z:
        for path in make_context(tmp_path, "zip").iterdir():
            z.write(path, path.name)
    tgz_ctx = tmp_path / "tarred.tar.gz"
    with tarfile.open(tgz_ctx, "w:gz") as tar:
        for path in make_context(tmp_path, "tgz").iterdir():
            tar.add(path, path.name)
    with cluster.client() as api:
        for context, marker, tag in (
            (dir_ctx, "dir", "e2e-dir:v1"),
            (zip_ctx, "zip", "e2e-zip"),
            (tgz_ctx, "tgz", None),
        ):
            started = api.build(context, tag=tag)
            built_images.append(started["image"])
            done = wait_build(api, started["id"])
            assert done["state"] == "succeeded", done
            assert any(f"build-step-says-{marker}" in line for line in done["lines"]), done
            assert started["image"].startswith("admin/")
            assert run_image(api, started["image"], f"run-{marker}") == [f"hello from {marker}"]
        assert built_images[:2] == ["admin/e2e-dir:v1", "admin/e2e-zip:latest"]
        assert built_images[2] == "admin/tarred:latest"
    labels = docker.from_env().images.get("admin/e2e-dir:v1").labels
    assert labels.get("io.dockyard.owner") == "admin"


def test_broken_dockerfile_reports_build_error(cluster: ProcessCluster, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, "broken", DOCKERFILE + 'RUN ["/bin/busybox", "false"]\n')
    with cluster.client() as api:
        done = wait_build(api, api.build(ctx, tag="e2e-broken")["id"])
    assert done["state"] == "failed"
    assert "returned a non-zero code" in done["error"], done


def test_cli_run_build(cluster: ProcessCluster, tmp_path: Path, built_images: list[str]) -> None:
    ctx = make_context(tmp_path, "cli")
    env = {**os.environ, "DOCKYARD_URL": cluster.url, "DOCKYARD_TOKEN": cluster.admin_token}
    built_images.append("admin/e2e-cli:latest")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dockyard"), "run", "--build", str(ctx), "e2e-cli"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "build-step-says-cli" in proc.stdout
    task_id = proc.stdout.strip().splitlines()[-1]
    with cluster.client() as api:
        done = wait_for(
            lambda: t if (t := api.task(task_id))["state"] in TERMINAL else None, timeout=60
        )
        assert done["state"] == "succeeded" and done["image"] == "admin/e2e-cli:latest"

"""Drop folder on a real Docker Engine: archive in -> built -> queued -> succeeded -> done/."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.images import BUSYBOX_BINARY
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

TERMINAL = {"succeeded", "failed", "killed", "lost", "expired"}
DOCKERFILE = 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "echo", "built-it"]\n'


@pytest.fixture(scope="module")
def dropped(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    root = tmp_path_factory.mktemp("dropcluster")
    watch = root / "drop"
    watch.mkdir()
    (root / "cluster").mkdir()
    cluster = ProcessCluster(root=root / "cluster", server_args=["--watch-dir", str(watch)])
    try:
        cluster.start(agents=1)
        with cluster.client() as api:
            api.add_user("erin")
        yield cluster, watch
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.close()
        for tag in ("erin/job:latest", "erin/broken:latest"):
            try:
                docker.from_env().images.remove(tag, force=True)
            except docker.errors.ImageNotFound:
                pass


def _drop(watch: Path, name: str, files: dict[str, str], tmp: Path) -> None:
    staged = tmp / name
    with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(BUSYBOX_BINARY, "busybox")
        for arcname, text in files.items():
            z.writestr(arcname, text)
    shutil.move(staged, watch / name)


def _result(watch: Path, name: str) -> tuple[str, dict[str, Any]]:
    def find() -> tuple[str, dict[str, Any]] | None:
        for outcome in ("done", "failed"):
            path = watch / outcome / f"{name}.result.json"
            if path.exists():
                return outcome, json.loads(path.read_text())
        return None

    found: tuple[str, dict[str, Any]] = wait_for(find, timeout=120, message=name)
    return found


def test_drop_round_trip(dropped: tuple[ProcessCluster, Path], tmp_path: Path) -> None:
    cluster, watch = dropped
    manifest = (
        "owner: erin\nname: job\nmemory: 64m\n"
        "command: [/bin/busybox, echo, ran-from-the-drop-folder]\n"
    )
    _drop(watch, "job.zip", {"Dockerfile": DOCKERFILE, "dockyard.yml": manifest}, tmp_path)
    outcome, result = _result(watch, "job.zip")
    assert outcome == "done", result
    assert (watch / "done" / "job.zip").exists()
    with cluster.client() as api:
        task = wait_for(
            lambda: t if (t := api.task(result["task_id"]))["state"] in TERMINAL else None,
            timeout=60,
        )
        assert task["state"] == "succeeded", task
        assert task["owner"] == "erin" and task["image"] == "erin/job:latest"
        lines = [line["line"] for line in api.logs(task["id"])["lines"]]
        assert lines == ["ran-from-the-drop-folder"]
        build = api.build_status(result["build_id"])
        assert any("built-it" in line for line in build["lines"])


def test_broken_dockerfile_to_failed(dropped: tuple[ProcessCluster, Path], tmp_path: Path) -> None:
    _, watch = dropped
    broken = DOCKERFILE + 'RUN ["/bin/busybox", "sh", "-c", "echo boom; exit 7"]\n'
    files = {"Dockerfile": broken, "dockyard.yml": "owner: erin\nname: broken\n"}
    _drop(watch, "broken.zip", files, tmp_path)
    outcome, _ = _result(watch, "broken.zip")
    assert outcome == "failed"
    reason = (watch / "failed" / "broken.zip.reason.txt").read_text()
    assert "returned a non-zero code: 7" in reason and "boom" in reason

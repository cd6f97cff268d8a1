"""The drop folder with a simulated node: archive in -> built -> queued -> done/ or failed/."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockyard.drivers.sim import SimDriver
from dockyard.server.control.dropfolder import DropFolder
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for


@pytest.fixture(scope="module")
def drop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, Path]]:
    watch = tmp_path_factory.mktemp("drop")
    cluster = LocalCluster(watch_dir=watch, watch_settle_s=0.2).start()
    cluster.add_agent("sim-drop", SimDriver())
    with cluster.client() as api:
        wait_for(lambda: [n for n in api.nodes() if n["state"] == "ready"], timeout=20)
        api.add_user("carol")
    yield cluster, watch
    cluster.close()


def _tar_gz(path: Path, files: dict[str, str]) -> Path:
    tmp = path.with_name("." + path.name)  # written under a hidden name, then renamed in
    with tarfile.open(tmp, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tmp.rename(path)
    return path


def _outcome(watch: Path, name: str) -> tuple[str, dict[str, Any]]:
    def find() -> tuple[str, dict[str, Any]] | None:
        for outcome in ("done", "failed"):
            result = watch / outcome / f"{name}.result.json"
            if result.exists():
                return outcome, json.loads(result.read_text())
        return None

    found: tuple[str, dict[str, Any]] = wait_for(find, timeout=30, message=f"{name} processed")
    return found


def test_round_trip_to_done(drop: tuple[LocalCluster, Path]) -> None:
    cluster, watch = drop
    manifest = 'owner: carol\nname: train\ntag: v2\ncommand: [exit, "0"]\ncpu: 0.5\npriority: 5\n'
    _tar_gz(watch / "train.tar.gz", {"Dockerfile": "FROM scratch\n", "dockyard.yml": manifest})
    outcome, result = _outcome(watch, "train.tar.gz")
    assert outcome == "done", result
    assert result["image"] == "carol/train:v2"
    assert (watch / "done" / "train.tar.gz").exists()
    assert not (watch / "train.tar.gz").exists()
    with cluster.client() as api:
        task = wait_for(
            lambda: t if (t := api.task(result["task_id"]))["state"] == "succeeded" else None,
            timeout=20,
        )
        assert task["image"] == "carol/train:v2" and task["owner"] == "carol"


def test_broken_dockerfile_lands_in_failed(drop: tuple[LocalCluster, Path]) -> None:
    _, watch = drop
    files = {"Dockerfile": "FROM scratch\nRUN false\n", "dockyard.yml": "owner: carol\n"}
    _tar_gz(watch / "broken.tar.gz", files)
    outcome, result = _outcome(watch, "broken.tar.gz")
    assert outcome == "failed"
    reason = (watch / "failed" / "broken.tar.gz.reason.txt").read_text()
    assert "returned a non-zero code" in reason and "Step 2/2 : RUN false" in reason
    assert "task_id" not in result


@pytest.mark.parametrize(
    ("name", "files", "why"),
    [
        ("nomanifest.tar.gz", {"Dockerfile": "FROM scratch\n"}, "no dockyard.yml"),
        ("ghost.tar.gz", {"Dockerfile": "FROM x\n", "dockyard.yml": "owner: ghost\n"}, "ghost"),
        ("badkey.tar.gz", {"Dockerfile": "FROM x\n", "dockyard.yml": "owner: carol\nx: 1\n"}, "x"),
        (
            "badcpu.tar.gz",
            {"Dockerfile": "FROM x\n", "dockyard.yml": "owner: carol\ncpu: lots\n"},
            "cpu",
        ),
    ],
)
def test_bad_drops_fail_with_reason(
    drop: tuple[LocalCluster, Path], name: str, files: dict[str, str], why: str
) -> None:
    _, watch = drop
    _tar_gz(watch / name, files)
    assert _outcome(watch, name)[0] == "failed"
    assert why in (watch / "failed" / f"{name}.reason.txt").read_text()


def test_zip_slip_drop_refused(drop: tuple[LocalCluster, Path], tmp_path: Path) -> None:
    _, watch = drop
    staged = tmp_path / "slip.zip"
    with zipfile.ZipFile(staged, "w") as z:
        z.writestr("dockyard.yml", "owner: carol\n")
        z.writestr("../../../escaped.txt", "x")
    staged.rename(watch / "slip.zip")
    assert _outcome(watch, "slip.zip")[0] == "failed"
    assert "'..'" in (watch / "failed" / "slip.zip.reason.txt").read_text()
    assert not (watch.parent / "escaped.txt").exists()


def test_partial_file_not_taken_early(tmp_path: Path) -> None:
    folder = DropFolder(tmp_path, db=None, builds=None, wake_scheduler=lambda: None, settle_s=0.5)  # type: ignore[arg-type]
    growing = tmp_path / "big.zip"
    growing.write_bytes(b"PK\x03\x04partial")
    assert folder.scan() == []  # first sight
    with growing.open("ab") as f:
        f.write(b"more")
    assert folder.scan() == []  # size changed
    old = time.time() - 10
    os.utime(growing, (old, old))
    assert folder.scan() == []  # mtime changed since the last scan
    assert folder.scan() == [growing]  # unchanged over two scans and settled
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden.zip").write_bytes(b"x")
    assert folder.scan() == [growing]

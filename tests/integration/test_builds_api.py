"""Image builds through the API with a simulated node: naming, output, refusals."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from dockyard.client import Client, ClientError
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for


def _wait_done(api: Client, build_id: str) -> dict[str, object]:
    result: dict[str, object] = wait_for(
        lambda: (
            status
            if (status := api.build_status(build_id))["state"] in ("succeeded", "failed")
            else None
        ),
        timeout=20,
        message="build finished",
    )
    return result


def _context(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "my-ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "hello.txt").write_text("hi\n")
    return ctx


def test_build_directory_tagged_under_owner(local: LocalCluster, tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM scratch\nCOPY hello.txt /\n")
    with local.client() as api:
        started = api.build(ctx)
        assert started["image"] == "admin/my-ctx:latest"
        assert started["files"] == 2
        done = _wait_done(api, str(started["id"]))
        assert done["state"] == "succeeded", done
        assert "Step 1/2 : FROM scratch" in done["lines"]  # type: ignore[operator]
        tagged = api.build(ctx, tag="tools:v1")
        assert tagged["image"] == "admin/tools:v1"
        assert _wait_done(api, str(tagged["id"]))["state"] == "succeeded"
        reasons = [e["reason"] for e in api.events()]
        assert "build_started" in reasons and "build_succeeded" in reasons


def test_failing_build_reports_error(local: LocalCluster, tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM scratch\nRUN false\n")
    with local.client() as api:
        done = _wait_done(api, str(api.build(ctx)["id"]))
    assert done["state"] == "failed"
    assert "non-zero code" in str(done["error"])


def test_refusals(local: LocalCluster, tmp_path: Path) -> None:
    with local.client() as admin:
        bob_token = admin.add_user("bob-builds")["token"]
    ctx = _context(tmp_path, "FROM scratch\n")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("Dockerfile", "FROM scratch\n")
        z.writestr("../../etc/evil", "x")
    nodockerfile = tmp_path / "empty.tar"
    with tarfile.open(nodockerfile, "w") as tar:
        info = tarfile.TarInfo("readme")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with local.client(bob_token) as bob, local.client() as admin:
        with pytest.raises(ClientError) as exc:
            bob.build(ctx, tag="admin/x:latest")  # someone else's namespace
        assert exc.value.status == 422 and exc.value.field == "tag"
        with pytest.raises(ClientError) as exc:
            bob.build(evil)
        assert exc.value.status == 422 and "'..'" in str(exc.value)
        with pytest.raises(ClientError) as exc:
            bob.build(nodockerfile)
        assert exc.value.status == 422 and exc.value.field == "dockerfile"
        mine = bob.build(ctx)
        assert mine["image"] == "bob-builds/my-ctx:latest"
        with pytest.raises(ClientError) as exc:
            Client(url=local.url, token="dy_bad").build(ctx)
        assert exc.value.status == 401
        admin_build = admin.build(ctx)
        with pytest.raises(ClientError) as exc:
            bob.build_status(str(admin_build["id"]))
        assert exc.value.status == 404
        assert [b["id"] for b in bob.builds()] == [mine["id"]]

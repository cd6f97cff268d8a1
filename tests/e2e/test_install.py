"""Installed as a user would: a wheel built from the checkout, ``pip install``-ed into a
fresh venv, then ``dockyard up`` from a directory outside the repository (no scripts,
no checkout on sys.path), the dashboard and API reached with the token file it names,
a job run on real Docker, and a clean stop.

The wheel is installed with ``--no-deps`` (no downloads: a few seconds); its
dependencies come from the test venv's site-packages, added as a plain path after the
fresh venv's own, so ``dockyard`` itself is the wheel's copy (checked).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest

from dockyard.drivers.demo import BusyboxMissing, ensure_busybox_image
from dockyard.testing.dockerclean import remove_node_resources
from dockyard.testing.installs import build_wheel
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PORTS = (8700, 8701)


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", *args]
    subprocess.run(cmd, check=True, timeout=180, capture_output=True)


@dataclass
class Installed:
    venv: Path
    env: dict[str, str]
    home: Path
    cwd: Path

    def dockyard(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "dockyard"), *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("install")
    wheel = build_wheel(ROOT, tmp)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip("--python", str(python), "install", "--no-deps", "--no-index", str(wheel))
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "zz_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    home, cwd = tmp / "home", tmp / "elsewhere"
    home.mkdir()
    cwd.mkdir()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }
    if "DOCKER_HOST" in os.environ:
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    where = subprocess.run(
        [str(python), "-c", "import dockyard; print(dockyard.__file__)"],
        env=env,
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(str(site)), f"dockyard imported from {where}, not the wheel"
    return Installed(venv, env, home, cwd)


@pytest.fixture
def default_ports_taken() -> Iterator[None]:
    """Listen on 8700 and 8701 where they are free (someone else may hold them)."""
    held = []
    for port in DEFAULT_PORTS:
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            held.append(sock)
        except OSError:
            sock.close()
    yield
    for sock in held:
        sock.close()


def read_banner(log: Path, proc: subprocess.Popen[bytes]) -> dict[str, str]:
    def banner() -> dict[str, str] | None:
        assert proc.poll() is None, f"dockyard up exited {proc.returncode}: {log.read_text()}"
        text = log.read_text()
        found = dict(re.findall(r"^\s+(dashboard|API|admin token|data):\s+(\S+)", text, re.M))
        return found if len(found) == 4 else None

    return wait_for(banner, timeout=60, message="dockyard up's banner")


def test_pip_install_then_up_runs_a_job(installed: Installed, default_ports_taken: None) -> None:
    log = installed.cwd / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(installed.venv / "bin" / "dockyard"), "up"],
            env=installed.env,
            cwd=installed.cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    node_ids: list[str] = []
    try:
        banner = read_banner(log, proc)
        text = log.read_text()
        assert re.search(r"port 8700 is in use: the API listens on \d+", text), text
        assert re.search(r"port 8701 is in use: the agent gateway is on \d+", text), text
        url = banner["dashboard"].rstrip("/")
        assert not url.endswith(":8700")
        data = installed.home / ".local" / "share" / "dockyard"
        assert Path(banner["data"]) == data
        token_file = Path(banner["admin token"])
        assert token_file == data / "admin.token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert json.loads((data / "up.json").read_text())["url"] == url
        assert "Traceback" not in text

        page = httpx.get(url + "/", timeout=10)  # the dashboard: package data was installed
        assert page.status_code == 200 and "<html" in page.text.lower()
        headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        nodes = httpx.get(f"{url}/api/v1/nodes", headers=headers, timeout=10).json()
        assert [n["state"] for n in nodes] == ["ready"]
        node_ids = [n["id"] for n in nodes]

        # No DOCKYARD_URL: the CLI finds the moved port (up.json) and the token by itself.
        ran = installed.dockyard(
            "run", "--name", "installed", "dockyard/busybox", "--", "sh", "-c", "echo from-wheel"
        )
        assert ran.returncode == 0, ran.stderr

        def finished() -> dict[str, object] | None:
            shown = installed.dockyard("inspect", "installed", "--json")
            task = json.loads(shown.stdout) if shown.returncode == 0 else {}
            return task if task.get("state") in ("succeeded", "failed") else None

        task = wait_for(finished, timeout=60, message="the job ends")
        assert task["state"] == "succeeded", task
        assert "from-wheel" in installed.dockyard("logs", "installed").stdout
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        remove_node_resources(node_ids)  # containers and networks; fails on a leaked network
    assert code == 0, log.read_text()
    assert not (installed.home / ".local/share/dockyard/up.json").exists()


def test_up_errors_are_messages(installed: Installed, default_ports_taken: None) -> None:
    installed.env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    try:
        no_docker = installed.dockyard("up", "--data-dir", str(installed.cwd / "d1"))
    finally:
        if "DOCKER_HOST" in os.environ:
            installed.env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
        else:
            del installed.env["DOCKER_HOST"]
    assert no_docker.returncode == 1
    said = " ".join(no_docker.stderr.split())
    assert "cannot reach Docker Engine" in said and "--driver sim" in said
    taken = installed.dockyard("up", "--port", "8700", "--data-dir", str(installed.cwd / "d2"))
    assert taken.returncode == 2 and "8700 is in use" in " ".join(taken.stderr.split())
    for result in (no_docker, taken):
        assert "Traceback" not in result.stderr + result.stdout


def test_demo_image_is_built_or_explained(tmp_path: Path) -> None:
    client = docker.from_env()
    tag = f"dockyard/busybox-buildtest:{int(time.time() * 1000)}"
    try:
        assert ensure_busybox_image(client, tag=tag) == tag
        out = client.containers.run(tag, ["sh", "-c", "echo built"], remove=True)
        assert out.strip() == b"built"
    finally:
        client.images.remove(tag, force=True)
    dynamic = Path(shutil.which("ls") or "/bin/ls")
    with pytest.raises(BusyboxMissing, match="not a static binary"):
        ensure_busybox_image(client, tag=tag, binary=dynamic)
    with pytest.raises(BusyboxMissing, match="busybox-static"):
        ensure_busybox_image(client, tag=tag, binary=tmp_path / "none")

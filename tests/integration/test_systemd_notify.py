"""Type=notify readiness: ``dockyard server`` sends READY=1 to $NOTIFY_SOCKET once its
API answers, ``dockyard agent`` once the server has welcomed it. The agent runs as an
agent-only install would (no FastAPI, SQLAlchemy, ... importable)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dockyard.testing.cluster import free_port
from dockyard.testing.installs import agent_only_cli
from dockyard.testing.wait import wait_for


class Notifications:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> list[str]:
        """The first message holding READY=1, failing if ``proc`` exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"exited {proc.returncode} before READY=1"
            self.sock.settimeout(0.5)
            try:
                lines = self.sock.recv(4096).decode().splitlines()
            except TimeoutError:
                continue
            if "READY=1" in lines:
                return lines
        raise AssertionError("no READY=1 in time")


def spawn(cmd: list[str], notify: Notifications, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFY_SOCKET": notify.path, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in reversed(started):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_server_and_agent_notify_readiness(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    port, gateway = free_port(), f"tcp://127.0.0.1:{free_port()}"
    url = f"http://127.0.0.1:{port}"
    server_notify = Notifications(tmp_path / "server.sock")
    server_cmd = [sys.executable, "-m", "dockyard", "server", "--data-dir", str(tmp_path / "s")]
    server_cmd += ["--port", str(port), "--gateway", gateway, "--insecure-open-join"]
    server = spawn(server_cmd, server_notify, tmp_path / "server.log")
    procs.append(server)
    lines = server_notify.wait_ready(server)
    assert f"STATUS=API on 127.0.0.1:{port}" in lines
    # Ready means serving: the API answers at once, no retry.
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200

    agent_notify = Notifications(tmp_path / "agent.sock")
    agent_cmd = agent_only_cli(
        "agent", "--driver", "sim", "--server", gateway, "--name", "notify-node",
        "--data-dir", str(tmp_path / "a"),
    )  # fmt: skip
    agent = spawn(agent_cmd, agent_notify, tmp_path / "agent.log")
    procs.append(agent)
    assert any(
        line.startswith("STATUS=1 node(s) joined") for line in agent_notify.wait_ready(agent)
    )
    token = (tmp_path / "s" / "admin.token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}

    def node_ready() -> bool:
        nodes = httpx.get(f"{url}/api/v1/nodes", headers=headers, timeout=5).json()
        return any(n["name"] == "notify-node" and n["state"] == "ready" for n in nodes)

    wait_for(node_ready, timeout=30, message="the agent-only node is ready")
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(20) == 0
    server.send_signal(signal.SIGTERM)
    assert server.wait(20) == 0  # after a clean stop (before: killed by the re-raised signal)
    assert "steps down" in (tmp_path / "server.log").read_text()

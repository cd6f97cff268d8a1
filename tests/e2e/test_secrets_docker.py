"""Compose secrets and configs on the real Docker engine (issue 18): a stack's service
reads ``/run/secrets/NAME`` (file and environment sources, short and long syntax, the
mode asked) and a config at its target; the value is in no ``docker inspect`` field
(env, labels, command) and in no server or agent log; removing the secret in use is
refused naming the service; ``stack rm`` removes the container and the agent's files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import docker
import pytest

from dockyard.drivers.base import LABEL_NODE, LABEL_TASK
from dockyard.testing.cli import CliUser
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

PW = "pw-7f3a9c-never-shown"
KEY = "key-2b81e4-never-shown"

COMPOSE = """
name: sec
services:
  app:
    image: {image}
    command: ["sleep", "600"]
    cpus: "0.1"
    mem_limit: 32m
    secrets:
      - db_pw
      - source: api_key
        target: key.txt
        mode: 0400
    configs:
      - source: app_conf
        target: /etc/app.conf
secrets:
  db_pw:
    file: ./pw.txt
  api_key:
    environment: API_KEY
configs:
  app_conf:
    content: "level=debug"
"""


def test_stack_service_reads_run_secrets(
    cluster: ProcessCluster, image: str, tmp_path: Path
) -> None:
    (tmp_path / "compose.yaml").write_text(COMPOSE.format(image=image))
    (tmp_path / "pw.txt").write_text(PW)
    user = CliUser(
        {
            **os.environ,
            "DOCKYARD_URL": cluster.url,
            "DOCKYARD_TOKEN": cluster.admin_token,
            "API_KEY": KEY,
        }
    )
    compose = str(tmp_path / "compose.yaml")
    dry = user.json("deploy", "-f", compose, "--dry-run")
    assert dry["server_checked"] and dry["secrets"] == ["sec_db_pw", "sec_api_key"]
    assert PW not in json.dumps(dry) and KEY not in json.dumps(dry)
    user.json("deploy", "-f", compose)

    engine = docker.from_env()
    node = cluster.node_id()

    def running() -> docker.models.containers.Container | None:
        found = engine.containers.list(filters={"label": f"{LABEL_NODE}={node}"})
        return next((c for c in found if c.status == "running"), None)

    container = wait_for(running, timeout=60)
    task_id = container.labels[LABEL_TASK]

    def read(*cmd: str) -> str:
        result = container.exec_run(list(cmd))
        assert result.exit_code == 0, result.output
        return str(result.output.decode())

    assert read("cat", "/run/secrets/db_pw") == PW
    assert read("cat", "/run/secrets/key.txt") == KEY
    assert read("cat", "/etc/app.conf") == "level=debug"
    assert read("stat", "-c", "%a", "/run/secrets/key.txt").strip() == "400"
    assert read("stat", "-c", "%a", "/run/secrets/db_pw").strip() == "444"
    container.reload()
    inspected = json.dumps(container.attrs)
    assert PW not in inspected and KEY not in inspected  # env, labels, command...
    files = cluster.root / "agent-node-1" / "secrets" / task_id
    assert files.is_dir() and (files.stat().st_mode & 0o777) == 0o700

    refused = user.cli("secret", "rm", "sec_db_pw", check=False)
    assert refused.returncode != 0 and "sec_app" in refused.stderr, refused.stderr
    assert [s["name"] for s in user.json("secret", "ls")] == ["sec_api_key", "sec_db_pw"]

    removed = user.json("stack", "rm", "sec")["removed_values"]
    assert sorted(removed) == ["config sec_app_conf", "secret sec_api_key", "secret sec_db_pw"]
    wait_for(
        lambda: not engine.containers.list(all=True, filters={"label": f"{LABEL_TASK}={task_id}"}),
        timeout=60,
    )
    wait_for(lambda: not files.exists(), timeout=30)
    assert user.json("secret", "ls") == [] and user.json("configs", "ls") == []
    logs = cluster.logs() + "".join(
        p.read_text(errors="replace") for p in cluster.root.glob("*.log")
    )
    assert PW not in logs and KEY not in logs

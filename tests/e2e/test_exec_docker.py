"""exec on a real Docker Engine: CLI exit codes, an interactive tty, refusal, audit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dockyard.client import Client
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

DOCKYARD = str(Path(sys.executable).parent / "dockyard")


def _cli(cluster: ProcessCluster, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKYARD_URL": cluster.url, "DOCKYARD_TOKEN": token}
    return subprocess.run(
        [DOCKYARD, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _running(api: Client, image: str, name: str) -> dict[str, Any]:
    task = api.run_job(name, image, ["sleep", "300"])
    return wait_for(
        lambda: t if (t := api.task(task["id"]))["state"] == "running" else None,
        timeout=60,
        message=f"{name} running",
    )


def test_exec_exit_code_output_and_refusal(cluster: ProcessCluster, image: str) -> None:
    with cluster.client() as api:
        task = _running(api, image, "exec-e2e")
        token = api.add_user("oscar-exec")["token"]
    proc = _cli(
        cluster,
        cluster.admin_token,
        "exec",
        task["id"],
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 4",
    )
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == "out\n" and "err" in proc.stderr
    ok = _cli(cluster, cluster.admin_token, "exec", "exec-e2e", "--", "cat", "/proc/1/cmdline")
    assert ok.returncode == 0 and "sleep" in ok.stdout
    refused = _cli(cluster, token, "exec", task["id"], "--", "echo", "pwned")
    assert refused.returncode != 0 and "pwned" not in refused.stdout
    assert "not found" in refused.stderr
    with cluster.client() as api:
        events = [e for e in api.task(task["id"])["events"] if e["reason"].startswith("exec")]
        assert [e["reason"] for e in events] == ["exec", "exec_ended", "exec", "exec_ended"]
        assert "admin" in events[0]["message"] and "exit 4" in events[1]["message"]
        api.kill(task["id"])


def test_interactive_tty(cluster: ProcessCluster, image: str) -> None:
    with cluster.client() as api:
        task = _running(api, image, "exec-tty")
        output = b""
        with api.exec_socket(task["id"], ["sh"], tty=True, cols=100, rows=30) as ws:
            ws.send(b"stty size; echo sum-$((40+2))\n")
            deadline = time.monotonic() + 20
            while b"sum-42" not in output and time.monotonic() < deadline:
                message = ws.recv(timeout=20)
                assert isinstance(message, bytes), message
                output += message
            assert b"sum-42" in output and b"30 100" in output
            ws.send(json.dumps({"resize": [132, 50]}))
            ws.send(b"stty size; exit 5\n")
            end: dict[str, Any] = {}
            while not end:
                message = ws.recv(timeout=20)
                if isinstance(message, str):
                    end = json.loads(message)
                else:
                    output += message
        assert end["exit"] == 5
        assert b"50 132" in output
        api.kill(task["id"])


# Issue 20: the CLI with real containers (`python -m dockyard` processes).
def _user_cli(
    cluster: ProcessCluster, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKYARD_URL": cluster.url, "DOCKYARD_TOKEN": cluster.admin_token}
    return subprocess.run(
        [sys.executable, "-m", "dockyard", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def test_attach_and_logs_streams(cluster: ProcessCluster, image: str) -> None:
    script = "echo one; echo oops >&2; echo two; exit 7"
    attached = _user_cli(cluster, "run", "--attach", image, "--", "sh", "-c", script)
    assert attached.returncode == 7, attached.stderr
    assert attached.stdout == "one\ntwo\n"
    assert "oops" in attached.stderr and "exit code 7" in attached.stderr
    with cluster.client() as api:
        task_id = api.tasks(limit=1)[0]["id"]
    assert _user_cli(cluster, "logs", "--stdout", task_id).stdout == "one\ntwo\n"
    only_err = _user_cli(cluster, "logs", "--stderr", task_id)
    assert only_err.stdout == "" and only_err.stderr == "oops\n"
    stamped = _user_cli(cluster, "logs", "-t", "--tail", "1", "--stdout", task_id).stdout
    assert stamped.endswith(" two\n") and stamped[:4].isdigit()
    followed = _user_cli(cluster, "logs", "-f", task_id)
    assert followed.returncode == 7 and followed.stdout == "one\ntwo\n"


def test_exec_interactive_without_tty_reads_a_pipe(cluster: ProcessCluster, image: str) -> None:
    with cluster.client() as api:
        task = _running(api, image, "exec-pipe")
    piped = _user_cli(cluster, "exec", "-i", task["id"], "--", "cat", stdin="hello\nworld\n")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == "hello\nworld\n"
    counted = _user_cli(
        cluster, "exec", "-i", task["id"], "--", "sh", "-c", "wc -l; exit 3", stdin="a\nb\n"
    )
    assert counted.returncode == 3 and counted.stdout.strip() == "2"
    # the agent's exec threads survived: a plain exec still works
    again = _user_cli(cluster, "exec", task["id"], "--", "echo", "alive")
    assert again.returncode == 0 and again.stdout == "alive\n"
    with cluster.client() as api:
        api.kill(task["id"])


def test_build_tag_runs_from_your_namespace_and_a_missing_image_is_not_found(
    cluster: ProcessCluster, image: str, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {image}\nRUN echo built > /built.txt\n")
    built = _cli(cluster, cluster.admin_token, "build", "-q", "-t", "tools-e2e:v1", str(tmp_path))
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip() == "admin/tools-e2e:v1"
    ran = _cli(cluster, cluster.admin_token, "run", "--wait", "--json", "tools-e2e:v1", "--",
               "cat", "/built.txt")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["image"] == "admin/tools-e2e:v1"
    # Not on the node and no registry to pull from: image_not_found, not a registry 500.
    missing = _cli(cluster, cluster.admin_token, "run", "--wait", "no-such-image-e2e:v1")
    assert missing.returncode == 125, missing.stderr
    assert "image_not_found" in missing.stderr and "Traceback" not in missing.stderr

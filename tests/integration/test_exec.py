"""exec through the API with a simulated node: exit codes, refusals, audit, WebSocket relay."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dockyard.client import Client, ClientError
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for


def _running(api: Client, name: str) -> dict[str, Any]:
    task = api.run_job(name, "busybox", ["sleep", "120"])
    return wait_for(
        lambda: t if (t := api.task(task["id"]))["state"] == "running" else None,
        timeout=20,
        message=f"{name} running",
    )


def test_exec_returns_exit_code_and_output(local: LocalCluster) -> None:
    with local.client() as api:
        task = _running(api, "exec-target")
        hello = api.exec(task["id"], ["echo", "hello", "there"])
        assert (hello["exit_code"], hello["stdout"]) == (0, "hello there\n")
        assert api.exec(task["name"], ["exit", "3"])["exit_code"] == 3
        reasons = [e["reason"] for e in api.task(task["id"])["events"]]
        assert reasons.count("exec") == 2 and reasons.count("exec_ended") == 2
        api.kill(task["id"])


def test_exec_refusals(local: LocalCluster) -> None:
    with local.client() as admin:
        task = _running(admin, "exec-private")
        token = admin.add_user("mallory-exec")["token"]
        done = admin.run_job("exec-done", "busybox", ["exit", "0"])
        wait_for(lambda: admin.task(done["id"])["state"] == "succeeded", timeout=20)
        with pytest.raises(ClientError) as exc:
            admin.exec(done["id"], ["echo", "x"])
        assert exc.value.status == 409
    with local.client(token) as mallory:
        with pytest.raises(ClientError) as exc:
            mallory.exec(task["id"], ["echo", "pwned"])
        assert exc.value.status == 404
        with pytest.raises(ClientError), mallory.exec_socket(task["id"], ["cat"]):
            pass
    with local.client() as admin:
        assert "exec" not in [e["reason"] for e in admin.task(task["id"])["events"]]
        admin.kill(task["id"])


def test_interactive_relay(local: LocalCluster) -> None:
    with local.client() as api:
        task = _running(api, "exec-cat")
        with api.exec_socket(task["id"], ["cat"], tty=True) as ws:
            ws.send(json.dumps({"resize": [120, 40]}))
            ws.send(b"ping\n")
            assert ws.recv(timeout=10) == b"ping\n"
            ws.send(json.dumps({"eof": True}))
            assert json.loads(ws.recv(timeout=10)) == {"exit": 0, "error": ""}
        api.kill(task["id"])

"""The REST API against an in-process server and a simulated node."""

from __future__ import annotations

import os
import stat
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from dockyard.client import Client, ClientError
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for

TERMINAL = {"succeeded", "failed", "killed", "lost", "expired"}


def wait_state(api: Client, ref: str, states: set[str]) -> dict[str, Any]:
    return wait_for(lambda: t if (t := api.task(ref))["state"] in states else None, timeout=20)


def counts(local: LocalCluster) -> tuple[int, int, int]:
    with local.server.db.read() as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(text(f"SELECT count(*) FROM {table}"))
            for table in ("workloads", "tasks", "events")
        )


ROUTES = [
    ("GET", "/api/v1/whoami"),
    ("POST", "/api/v1/jobs"),
    ("GET", "/api/v1/tasks"),
    ("GET", "/api/v1/tasks/x"),
    ("GET", "/api/v1/tasks/x/logs"),
    ("POST", "/api/v1/tasks/x/kill"),
    ("GET", "/api/v1/nodes"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/users"),
    ("POST", "/api/v1/users"),
    ("POST", "/api/v1/tokens"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("header", [None, "Bearer nope", "Bearer dy_forged", "Basic YTpi"])
def test_every_route_needs_a_valid_token(
    local: LocalCluster, method: str, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.request(method, local.url + path, headers=headers, json={})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_unknown_route_is_json_404(local: LocalCluster) -> None:
    response = httpx.get(local.url + "/api/v1/nope", headers={"Authorization": "Bearer x"})
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_admin_token_file_is_private_and_hashed_in_store(local: LocalCluster) -> None:
    path = local.root / "server" / "admin.token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    token = path.read_text().strip()
    if local.server.db.is_sqlite:
        assert token.encode() not in (local.root / "server" / "dockyard.db").read_bytes()
    with local.server.db.read() as session:
        hashes = list(session.scalars(text("SELECT token_hash FROM tokens")))
    assert token not in hashes and all(len(h) == 64 for h in hashes)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "image": "-v"}, "image"),
        ({"name": "x", "image": "--privileged"}, "image"),
        ({"name": "x", "image": "busybox@sha256:abc"}, "image"),
        ({"name": "x", "image": "Upper/Case"}, "image"),
        ({"name": "x", "image": "busybox", "cpu": -1}, "cpu"),
        ({"name": "x", "image": "busybox", "cpu": "lots"}, "cpu"),
        ({"name": "x", "image": "busybox", "cpu": 0}, "cpu"),
        ({"name": "x", "image": "busybox", "memory": "-64m"}, "memory"),
        ({"name": "x", "image": "busybox", "memory": "64 parsecs"}, "memory"),
        ({"name": "x", "image": "busybox", "memory": 1}, "memory"),
        ({"name": "bad name!", "image": "busybox"}, "name"),
        ({"name": "x", "image": "busybox", "env": {"1BAD": "v"}}, "env"),
        ({"name": "x", "image": "busybox", "kill_grace_s": -1}, "kill_grace_s"),
        ({"name": "x"}, "image"),
        ({"name": "x", "image": "busybox", "bogus": True}, "bogus"),
        ({"name": "x", "image": "busybox", "command": "not a list"}, "command"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_writes_nothing(
    local: LocalCluster, body: dict[str, Any], field: str
) -> None:
    before = counts(local)
    response = httpx.post(
        local.url + "/api/v1/jobs",
        json=body,
        headers={"Authorization": f"Bearer {local.admin_token}"},
    )
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["error"] == "invalid"
    assert payload["field"] == field
    assert payload["message"]
    assert counts(local) == before


def test_unknown_task_is_404(local: LocalCluster) -> None:
    with local.client() as api:
        for call in (api.task, api.kill, api.logs):
            with pytest.raises(ClientError) as err:
                call("no-such-task")
            assert err.value.status == 404
            assert err.value.code == "not_found"


def test_job_lifecycle_on_sim_node(local: LocalCluster) -> None:
    with local.client() as api:
        ok = api.run_job("sim-ok", "busybox", ["sleep", "0.2"])
        bad = api.run_job("sim-bad", "busybox", ["exit", "4"])
        oom = api.run_job("sim-oom", "busybox", ["oom"])
        missing = api.run_job("sim-missing", "missing/image", ["true"])
        assert wait_state(api, ok["id"], TERMINAL)["state"] == "succeeded"
        assert wait_state(api, bad["id"], TERMINAL)["exit_code"] == 4
        assert wait_state(api, oom["id"], TERMINAL)["reason"] == "oom_killed"
        assert wait_state(api, missing["id"], TERMINAL)["reason"] == "image_not_found"


def test_pending_task_says_why(local: LocalCluster) -> None:
    with local.client() as api:
        task = api.run_job("too-big", "busybox", ["sleep", "1"], memory="64g", hold=True)
        pending = wait_for(
            lambda: t if (t := api.task(task["id"]))["message"] else None, timeout=20
        )
        assert pending["state"] == "pending"
        assert pending["reason"] == "unschedulable"
        assert pending["message"] == "0/1 nodes fit: 1 insufficient memory"
        killed = api.kill(task["id"])
        assert killed["state"] == "killed"


def test_resources_are_respected_by_placement(local: LocalCluster) -> None:
    with local.client() as api:
        first = api.run_job("hold-1", "busybox", ["forever"], cpu=1.5)
        second = api.run_job("hold-2", "busybox", ["forever"], cpu=1.5)
        wait_state(api, first["id"], {"running"})
        waiting = wait_for(
            lambda: t if (t := api.task(second["id"]))["message"] else None, timeout=20
        )
        assert waiting["state"] == "pending"
        assert "insufficient cpu" in waiting["message"]
        api.kill(first["id"])
        assert wait_state(api, second["id"], {"running"})["node"] == "sim-1"
        api.kill(second["id"])
        wait_state(api, second["id"], TERMINAL)


def test_users_and_tokens(local: LocalCluster) -> None:
    with local.client() as admin:
        created = admin.add_user("carol")
        assert created["user"]["name"] == "carol" and not created["user"]["admin"]
        with pytest.raises(ClientError) as err:
            admin.add_user("carol")
        assert err.value.status == 409
        with Client(url=local.url, token=created["token"]) as carol:
            assert carol.whoami()["name"] == "carol"
            second = carol.create_token(description="laptop")["token"]
            with pytest.raises(ClientError) as err:
                carol.create_token(user="admin")
            assert err.value.status == 403
            with pytest.raises(ClientError) as err:
                carol.users()
            assert err.value.status == 403
        with Client(url=local.url, token=second) as carol2:
            assert carol2.whoami()["name"] == "carol"


def test_openapi_is_served(local: LocalCluster) -> None:
    schema = httpx.get(local.url + "/openapi.json").json()
    assert "/api/v1/jobs" in schema["paths"]

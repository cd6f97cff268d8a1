"""Escaping of user-supplied text, and what a non-admin's session may see and do."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from browser_helpers import PageWatch, login, shot
from playwright.sync_api import expect

from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

BUSYBOX = "dockyard/busybox"
IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(2)</script>"
EVIL_NODE = "<img src=x onerror=alert(3)>"


@pytest.fixture(scope="module")
def cluster(cluster_factory: Callable[..., ProcessCluster]) -> ProcessCluster:
    cl = cluster_factory()
    # A second, simulated node whose name is markup; drained at once so nothing runs there.
    cl.driver = "sim"
    try:
        cl.start_agent(EVIL_NODE)
    finally:
        cl.driver = "docker"
    with cl.client() as api:
        # (a sim agent may suffix its name with a hollow-node index)
        evil = wait_for(
            lambda: [n for n in api.nodes() if n["name"].startswith(EVIL_NODE)], 30, message="evil"
        )
        api.drain(evil[0]["id"], deadline_s=0)
    return cl


@pytest.fixture(scope="module")
def xss_task(cluster: ProcessCluster) -> dict[str, Any]:
    """A finished task whose name, command, env and log lines all carry markup."""
    with cluster.client() as api:
        refused = httpx.post(
            cluster.url + "/api/v1/jobs",
            headers={"Authorization": f"Bearer {cluster.admin_token}"},
            json={"name": IMG, "image": BUSYBOX},
        )
        assert refused.status_code == 422 and refused.json()["field"] == "name"
        task = api.run_job(
            name="xss",
            image=BUSYBOX,
            command=["sh", "-c", f"echo '{SCRIPT}'; echo '{IMG}' >&2"],
            env={"PAYLOAD": IMG},
            memory="16m",
        )
        wait_for(lambda: api.task(task["id"])["state"] == "succeeded", 60, message="xss task")
    # The API refuses such names; write one straight into the store (as an older
    # version or a bug might have) to prove the page escapes whatever it gets.
    with sqlite3.connect(cluster.data_dir / "dockyard.db", timeout=30) as db:
        db.execute("UPDATE tasks SET name = ? WHERE id = ?", (IMG, task["id"]))
    return task


def no_injected_elements(page: Any) -> None:
    assert page.locator("img").count() == 0, "an <img> element was created from data"
    # the app module and the vendored chart library (uPlot), both from /ui/
    assert page.evaluate("document.querySelectorAll('script').length") == 2
    assert page.locator("script:not([src^='/ui/'])").count() == 0


def test_markup_in_names_commands_env_and_logs_renders_as_text(
    page: Any, cluster: ProcessCluster, xss_task: dict[str, Any], watch: PageWatch
) -> None:
    login(page, cluster.url, cluster.admin_token)
    evil = page.locator("tr[data-node-id]").filter(has_text=EVIL_NODE)
    expect(evil.locator(".node-name")).to_contain_text(EVIL_NODE)
    expect(page.locator("#recent-events")).to_contain_text(IMG)

    page.goto(cluster.url + "/#/jobs?tab=history")
    row = page.locator(f"tr[data-task-id='{xss_task['id']}']")
    expect(row.locator("a.task-link")).to_have_text(IMG)
    no_injected_elements(page)

    row.locator("a.task-link").click()
    expect(page.locator("#task-name")).to_have_text(IMG)
    logs = page.locator("#task-logs")
    expect(logs.locator(".line.stdout")).to_contain_text(SCRIPT)
    expect(logs.locator(".line.stderr")).to_contain_text(IMG)
    expect(logs.locator(".end")).to_be_visible()
    expect(page.locator("#task-env")).to_have_text(f"PAYLOAD={IMG}")
    expect(page.locator("#task-command")).to_contain_text(SCRIPT)
    no_injected_elements(page)
    shot(page, "10-xss-task")

    page.goto(cluster.url + "/#/events")
    expect(page.locator("#events a.task-link").filter(has_text=IMG).first).to_be_visible()
    expect(page.locator("#events")).to_contain_text(EVIL_NODE)
    no_injected_elements(page)
    assert watch.dialogs == []
    assert page.evaluate("document.title").endswith("dockyard")


@pytest.fixture(scope="module")
def users(cluster: ProcessCluster) -> dict[str, str]:
    with cluster.client() as api:
        return {name: api.add_user(name)["token"] for name in ("alice", "bob")}


def test_a_user_sees_only_their_own_tasks_and_no_admin_actions(
    page: Any, cluster: ProcessCluster, users: dict[str, str]
) -> None:
    with cluster.client(users["alice"]) as alice:
        secret = alice.run_job(
            name="alice-secret", image=BUSYBOX, command=["true"], memory="900g", hold=True
        )
    try:
        login(page, cluster.url, users["bob"])
        expect(page.locator("#whoami")).to_contain_text("bob")
        expect(page.locator("#whoami .role")).to_have_text("user")
        expect(page.locator("tr[data-node='node-1']")).to_be_visible()  # nodes are public
        expect(page.locator("button[data-action='drain']")).to_have_count(0)
        expect(page.locator("button[data-action='undrain']")).to_have_count(0)
        expect(page.locator("#stat-queued .value")).to_have_text("0")

        page.goto(cluster.url + "/#/jobs?tab=queued")
        expect(page.locator("#jobs-range")).to_have_text("0 tasks")
        expect(page.locator("tr[data-task='alice-secret']")).to_have_count(0)

        page.goto(cluster.url + f"/#/task/{secret['id']}")
        expect(page.locator("#main h1")).to_have_text("Task not found")

        # The live stream: bob's own job shows up; alice's events never do.
        page.goto(cluster.url + "/#/events")
        with cluster.client(users["alice"]) as alice:
            alice.run_job(
                name="alice-later", image=BUSYBOX, command=["true"], memory="900g", hold=True
            )
        with cluster.client(users["bob"]) as bob:
            bob.run_job(name="bob-job", image=BUSYBOX, command=["true"], memory="900g", hold=True)
        expect(page.locator("#events a.task-link").filter(has_text="bob-job").first).to_be_visible()
        expect(page.locator("#events")).not_to_contain_text("alice")
        shot(page, "11-user-bob-events")

        page.goto(cluster.url + "/#/users")
        expect(page.locator("#users tr[data-user]")).to_have_count(1)
        expect(page.locator("#users tr[data-user='bob']")).to_be_visible()

        # The API refuses what the UI hides.
        bob_headers = {"Authorization": f"Bearer {users['bob']}"}
        drain = httpx.post(f"{cluster.url}/api/v1/nodes/node-1/drain", headers=bob_headers, json={})
        assert drain.status_code == 403
        kill = httpx.post(f"{cluster.url}/api/v1/tasks/{secret['id']}/kill", headers=bob_headers)
        assert kill.status_code == 404
        metrics = httpx.get(f"{cluster.url}/metrics")
        assert metrics.status_code == 401
    finally:
        with cluster.client() as api:
            for task in api.tasks(active=True):
                api.kill(task["id"])


def test_admin_sees_every_users_tasks(
    page: Any, cluster: ProcessCluster, users: dict[str, str]
) -> None:
    with cluster.client(users["alice"]) as alice:
        mine = alice.run_job(
            name="alice-visible", image=BUSYBOX, command=["true"], memory="900g", hold=True
        )
    try:
        login(page, cluster.url, cluster.admin_token)
        page.goto(cluster.url + "/#/jobs?tab=queued")
        row = page.locator(f"tr[data-task-id='{mine['id']}']")
        expect(row).to_contain_text("alice")
        expect(row.locator("button[data-action='kill']")).to_be_visible()
    finally:
        with cluster.client() as api:
            api.kill(mine["id"])


def test_an_invalid_stored_token_returns_to_the_login(page: Any, cluster: ProcessCluster) -> None:
    page.goto(cluster.url + "/")
    page.evaluate("sessionStorage.setItem('dockyard.token', 'dy_bogus')")
    page.reload()
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('dockyard.token')") is None

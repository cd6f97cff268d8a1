"""The dashboard in headless Chromium against a real server and a real Docker agent."""

from __future__ import annotations

import re
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


@pytest.fixture(scope="module")
def cluster(cluster_factory: Callable[..., ProcessCluster]) -> ProcessCluster:
    return cluster_factory()


def mark_document(page: Any) -> None:
    """Tag this document; if the page reloads, the tag is gone."""
    page.evaluate("window.__noReload = 'still-here'")


def assert_not_reloaded(page: Any) -> None:
    assert page.evaluate("window.__noReload") == "still-here", "the page reloaded"


def test_login_rejects_bad_token_then_shows_the_local_node(
    page: Any, cluster: ProcessCluster
) -> None:
    page.goto(cluster.url + "/")
    page.fill("#login-token", "dy_not-a-real-token")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_contain_text("not valid")
    expect(page.locator("#shell")).to_be_hidden()

    login(page, cluster.url, cluster.admin_token)
    expect(page.locator("#whoami")).to_contain_text("admin")
    row = page.locator("tr[data-node='node-1']")
    expect(row.locator(".badge")).to_have_text("ready")
    expect(row.locator("td.usage.cpu .bar")).to_be_visible()
    expect(row.locator("td.usage.memory .bar")).to_be_visible()
    expect(row.locator("td.hb")).to_have_text(re.compile(r"\d"))
    expect(page.locator("#stat-nodes .value")).to_have_text("1 / 1")
    shot(page, "01-overview")


def test_submit_from_ui_goes_running_then_succeeded_live_and_shows_logs(
    page: Any, cluster: ProcessCluster, watch: PageWatch
) -> None:
    login(page, cluster.url, cluster.admin_token)
    page.click("#submit-open")
    form = page.locator("#submit-form")
    form.locator("input[name=name]").fill("ui-hello")
    form.locator("input[name=image]").fill(BUSYBOX)
    form.locator("input[name=command]").fill(
        "sh -c 'echo hello-from-ui; sleep 3; echo stderr-line >&2; echo bye'"
    )
    form.locator("input[name=memory]").fill("32m")
    form.locator("textarea[name=env]").fill("GREETING=hi there")
    shot(page, "02-submit-dialog")
    page.click("#submit-go")

    # The UI takes us to the new task's page; from here on nothing reloads it.
    page.wait_for_url("**/#/task/*")
    mark_document(page)
    navigations = watch.navigations
    state = page.locator("#task-state .badge")
    expect(state).to_have_text("running", timeout=30_000)
    shot(page, "03-task-running")
    expect(page.locator("#task-logs")).to_contain_text("hello-from-ui")
    expect(state).to_have_text("succeeded", timeout=30_000)
    expect(page.locator("#task-logs")).to_contain_text("bye")
    expect(page.locator("#task-logs .line.stderr")).to_contain_text("stderr-line")
    expect(page.locator("#task-logs .end")).to_contain_text("succeeded")
    expect(page.locator("dd[data-field='Exit code']")).to_have_text("0")
    expect(page.locator("#task-env")).to_have_text("GREETING=hi there")
    expect(page.locator("#task-events tr[data-reason='started']")).to_have_count(1)
    assert_not_reloaded(page)
    assert watch.navigations == navigations
    shot(page, "04-task-succeeded-logs")

    with cluster.client() as api:
        task = api.task("ui-hello")
    assert task["state"] == "succeeded"
    script = "echo hello-from-ui; sleep 3; echo stderr-line >&2; echo bye"
    assert task["command"] == ["sh", "-c", script]

    page.click("a.crumb")
    row = page.locator("tr[data-task='ui-hello']")
    expect(row.locator(".badge")).to_have_text("succeeded")
    expect(row.locator("td.exit")).to_have_text("0")
    shot(page, "05-jobs-history")


def test_jobs_list_updates_live_and_kill_records_an_event(
    page: Any, cluster: ProcessCluster
) -> None:
    login(page, cluster.url, cluster.admin_token)
    page.goto(cluster.url + "/#/jobs?tab=running")
    mark_document(page)
    expect(page.locator("#jobs-table")).to_be_visible()

    with cluster.client() as api:  # submitted elsewhere: the open page must pick it up
        api.run_job(name="nap", image=BUSYBOX, command=["sleep", "600"], memory="16m")
    row = page.locator("tr[data-task='nap']")
    expect(row.locator(".badge")).to_have_text("running", timeout=30_000)
    shot(page, "06-jobs-running")

    row.locator("button[data-action='kill']").click()
    expect(page.locator("#confirm-dialog")).to_be_visible()
    page.click("#confirm-yes")
    expect(row).to_have_count(0, timeout=30_000)  # left the running tab, live
    assert_not_reloaded(page)

    page.click("button[data-tab='history']")
    expect(page.locator("tr[data-task='nap'] .badge")).to_have_text("killed")

    page.click("a[data-nav='events']")
    killed = page.locator("#events tr[data-reason='killed']").filter(has_text="nap")
    expect(killed.first).to_be_visible()
    shot(page, "07-events-killed")
    with cluster.client() as api:
        assert api.task("nap")["state"] == "killed"


def test_kill_from_the_task_page(page: Any, cluster: ProcessCluster) -> None:
    with cluster.client() as api:
        task = api.run_job(name="nap2", image=BUSYBOX, command=["sleep", "600"], memory="16m")
    login(page, cluster.url, cluster.admin_token)
    page.goto(f"{cluster.url}/#/task/{task['id']}")
    expect(page.locator("#task-state .badge")).to_have_text("running", timeout=30_000)
    page.click("#task-kill")
    expect(page.locator("#confirm-dialog")).to_be_visible()
    page.click("#confirm-yes")
    expect(page.locator("#task-state .badge")).to_have_text("killed", timeout=30_000)
    with cluster.client() as api:
        assert api.task(task["id"])["stop_reason"] == "killed"


def test_events_feed_appends_live(page: Any, cluster: ProcessCluster) -> None:
    login(page, cluster.url, cluster.admin_token)
    page.click("a[data-nav='events']")
    expect(page.locator("#events tbody tr").first).to_be_visible()
    mark_document(page)
    with cluster.client() as api:
        api.run_job(name="blip", image=BUSYBOX, command=["true"], memory="16m")
        submitted = page.locator("#events tr[data-reason='submitted']").filter(has_text="blip")
        expect(submitted).to_have_count(1, timeout=30_000)
        wait_for(lambda: api.task("blip")["state"] == "succeeded", timeout=30)
        last = api.task("blip")["events"][-1]
    # The last event of the task (its end) arrives without a reload, exactly once.
    final = page.locator(f"#events tr[data-event-id='{last['id']}']")
    expect(final).to_have_count(1, timeout=30_000)
    expect(final).to_contain_text("blip")
    assert_not_reloaded(page)


def test_queue_paginates_with_total_and_says_why_pending(
    page: Any, cluster: ProcessCluster
) -> None:
    with cluster.client() as api:
        ids = [
            api.run_job(
                name=f"big-{i:02d}", image=BUSYBOX, command=["true"], memory="900g", hold=True
            )["id"]
            for i in range(55)
        ]
    try:
        login(page, cluster.url, cluster.admin_token)
        page.goto(cluster.url + "/#/jobs?tab=queued")
        expect(page.locator("#jobs-range")).to_have_text("1\u201350 of 55")
        expect(page.locator("#jobs-table tbody tr")).to_have_count(50)
        first = page.locator("#jobs-table tbody tr").first
        expect(first).to_have_attribute("data-task", "big-00")  # oldest first: queue order
        expect(first.locator("td.why")).to_contain_text("insufficient memory")
        shot(page, "08-jobs-queued")
        page.click("button[data-page='next']")
        expect(page.locator("#jobs-range")).to_have_text("51\u201355 of 55")
        expect(page.locator("#jobs-table tbody tr")).to_have_count(5)
        expect(page.locator("#jobs-table tbody tr").last).to_have_attribute("data-task", "big-54")
        expect(page.locator("button[data-tab='queued'] .count")).to_have_text("55")
        expect(page.locator("#jobs-table tbody tr").last.locator("td.position")).to_have_text("55")

        page.click("button[data-action='lock']")
        page.click("#confirm-yes")
        expect(page.locator("#queue-locked")).to_be_visible()
        shot(page, "08b-queue-locked")
        page.click("button[data-action='unlock']")
        page.click("#confirm-yes")
        expect(page.locator("#queue-locked")).to_have_count(0)
    finally:
        httpx.post(
            cluster.url + "/api/v1/queue/unlock",
            headers={"Authorization": f"Bearer {cluster.admin_token}"},
        )
        with cluster.client() as api:
            for task_id in ids:
                api.kill(task_id)


def test_queue_shows_the_estimated_start(page: Any, cluster: ProcessCluster) -> None:
    """The Starts column shows GET /api/v1/queue's estimated_start: "in 9m ..." behind
    a job with a declared 600 s runtime that holds the node's CPUs, a dash for one that
    fits no node (issue 22, queue ETAs)."""
    ids: list[str] = []
    try:
        with cluster.client() as api:
            cores = max(n["cpu"] for n in api.nodes())
            wait_for(lambda: not api.tasks(active=True), timeout=30, message="an idle node")
            hog = api.run_job(
                name="eta-hog",
                image=BUSYBOX,
                command=["sleep", "600"],
                cpu=cores,
                memory="16m",
                max_runtime_s=600,
            )
            ids.append(hog["id"])
            wait_for(lambda: api.task(hog["id"])["state"] == "running", timeout=30)
            for name, size in (("eta-next", {"cpu": cores}), ("eta-never", {"memory": "900g"})):
                job = api.run_job(name=name, image=BUSYBOX, command=["true"], hold=True, **size)
                ids.append(job["id"])

            def estimated() -> dict[str, Any] | None:
                entries = {e["name"]: e for e in api.queue()["entries"]}
                return entries if entries.get("eta-next", {}).get("estimated_start") else None

            queued = wait_for(estimated, timeout=30, message="the API's estimate")
            assert queued["eta-never"]["estimated_start"] is None
        login(page, cluster.url, cluster.admin_token)
        page.goto(cluster.url + "/#/jobs?tab=queued")
        expect(page.locator("#jobs-table thead")).to_contain_text("Starts")
        soon = page.locator("#jobs-table tr[data-task='eta-next'] td.eta")
        expect(soon).to_have_text(re.compile(r"^in (9m|10m) \d+s$"))
        start = float(soon.get_attribute("data-start") or "nan")
        assert start == pytest.approx(queued["eta-next"]["estimated_start"], abs=1)
        never = page.locator("#jobs-table tr[data-task='eta-never'] td.eta")
        expect(never).to_have_text("\u2013")
        shot(page, "08c-jobs-queued-eta")
    finally:
        with cluster.client() as api:
            for task_id in ids:
                api.kill(task_id)


def test_admin_drains_and_undrains_the_node(page: Any, cluster: ProcessCluster) -> None:
    login(page, cluster.url, cluster.admin_token)
    row = page.locator("tr[data-node='node-1']")
    try:
        row.locator("button[data-action='drain']").click()
        page.click("#confirm-yes")
        expect(row.locator(".badge")).to_have_text("draining")
        shot(page, "09-node-draining")
        row.locator("button[data-action='undrain']").click()
        page.click("#confirm-yes")
        expect(row.locator(".badge")).to_have_text("ready")
    finally:
        with cluster.client() as api:
            api.undrain("node-1")


def test_static_assets_are_offline_and_csp_clean(cluster: ProcessCluster) -> None:
    """No external URLs, no inline script/style, no HTML-string sinks in the app code."""
    from dockyard.server.http.dashboard import STATIC

    index = httpx.get(cluster.url + "/")
    assert index.status_code == 200
    csp = index.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert index.headers["x-frame-options"] == "DENY"
    for path in STATIC.rglob("*"):
        if path.suffix not in (".html", ".js", ".css", ".svg"):
            continue
        text = path.read_text()
        rel = path.relative_to(STATIC)
        if rel.parts[0] == "vendor":  # a vendored library's banner names its home page
            text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        for bad in ("http://", "https://", "//cdn", "@import", "fonts.googleapis"):
            if path.suffix != ".svg":
                assert bad not in text, f"{rel} refers to {bad}"
        if path.suffix == ".js":
            code = re.sub(r"//[^\n]*|/\*.*?\*/", "", text, flags=re.S)  # comments may say it
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
                assert sink not in code, f"{rel} uses {sink}"
        if path.suffix == ".html":
            assert "<script>" not in text and " style=" not in text and " onclick=" not in text
        asset = httpx.get(f"{cluster.url}/ui/{rel.as_posix()}")
        assert asset.status_code == 200, rel
    fav = httpx.get(cluster.url + "/favicon.ico")
    assert fav.status_code == 200

"""Every dashboard page at 375, 800 and 1366 px in Chromium, against a real server
and a real Docker agent: no horizontal overflow (``scrollWidth <= innerWidth``),
the page's key element visible, a full-page screenshot each. Then the pages'
tools at desktop width: charts with data, the log viewer (search, stream toggle,
ANSI colours, download), the node page with Drain in view, a service update
that rolls out with its history, and users' fair share, quota and tokens."""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import login, shot
from playwright.sync_api import expect

from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

BUSYBOX = "dockyard/busybox"
WIDTHS = (375, 800, 1366)
#: A job whose output has colours, both streams and a line to search for.
SCRIPT = (
    "printf '\\033[31mred-line\\033[0m plain\\n'; printf '\\033[1;32mgreen-bold\\033[0m\\n'; "
    "echo needle-here; echo stderr-line >&2; "
    "i=0; while [ $i -lt 40 ]; do echo filler-$i; i=$((i+1)); done; "
    # busy for a moment every second (the charts get CPU), idle otherwise
    "while true; do j=0; while [ $j -lt 3000 ]; do j=$((j+1)); done; sleep 1; done"
)


@pytest.fixture(scope="module")
def cluster(cluster_factory: Callable[..., ProcessCluster]) -> ProcessCluster:
    return cluster_factory()


@pytest.fixture(scope="module")
def seeded(cluster: ProcessCluster) -> dict[str, Any]:
    """A busy running job with coloured output, a finished one, a queued one, a service,
    and a second user."""
    with cluster.client() as api:
        busy = api.run_job(
            name="busy-colours",
            image=BUSYBOX,
            command=["sh", "-c", SCRIPT],
            cpu="0.5",
            memory="32m",
        )
        api.run_job(name="done-quick", image=BUSYBOX, command=["echo", "hi"], memory="16m")
        api.run_job(name="too-big", image=BUSYBOX, command=["true"], memory="200g", hold=True)
        api.create_service(
            {
                "name": "web-r",
                "image": BUSYBOX,
                "command": ["sleep", "3600"],
                "replicas": 1,
                "memory": "16m",
            }
        )
        carol = api.add_user("carol")["token"]
        node = api.nodes()[0]
        wait_for(
            lambda: api.task(busy["id"])["state"] == "running", timeout=60, message="busy runs"
        )
        # The replica runs, so its node made the service's network: a bridge that appears
        # while a page loads makes Chromium abort the load (net::ERR_NETWORK_CHANGED).
        wait_for(lambda: len(api.tasks(states=["running"])) >= 2, timeout=60, message="web-r runs")
    return {"task": busy["id"], "node": node["id"], "service": "web-r", "carol": carol}


def pages(seeded: dict[str, Any]) -> list[tuple[str, str]]:
    """(hash route, a selector that must be visible on it)."""
    return [
        ("#/", "#stats .stat"),
        ("#/jobs?tab=running", "#jobs-table"),
        ("#/jobs?tab=queued", "#jobs-table"),
        ("#/jobs?tab=history", "#jobs-table"),
        (f"#/task/{seeded['task']}", "#task-logs .line"),
        ("#/nodes", "tr[data-node] .node-name"),
        (f"#/nodes/{seeded['node']}", "#node-capacity .bar"),
        ("#/services", "#services tr[data-service], #services table"),
        (f"#/services/{seeded['service']}", "#service-name"),
        ("#/builds", "#build-form"),
        ("#/users", "#users tr[data-user='carol']"),
        ("#/events", "table"),
    ]


def overflow(page: Any) -> tuple[int, int]:
    return page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_fits_the_width(
    page: Any, cluster: ProcessCluster, seeded: dict[str, Any], width: int
) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    login(page, cluster.url, cluster.admin_token)
    for route, key in pages(seeded):
        page.goto(f"{cluster.url}/{route}")
        expect(page.locator(key).first).to_be_visible()
        expect(page.locator("#main")).not_to_contain_text("null")  # a null rendered as text
        expect(page.locator("nav.nav")).to_be_visible()
        expect(page.locator("#submit-open")).to_be_visible()
        slug = route.strip("#/").split("?")[0].replace("/", "-") or "overview"
        path = shot(page, f"w{width}-{slug}{'-' + route.split('=')[1] if '=' in route else ''}")
        # checked after the screenshot too: by then the page's data has rendered
        scroll, inner = overflow(page)
        assert scroll <= inner, f"{route} at {width}px overflows: {scroll} > {inner} ({path})"
        # nor does a table hide columns behind a scroll of its own
        hidden = page.evaluate(
            "Array.from(document.querySelectorAll('#main .table-wrap'))"
            ".filter((w) => w.offsetParent !== null && w.scrollWidth > w.clientWidth + 1)"
            ".map((w) => `${w.parentElement.id || '?'}: ${w.scrollWidth} > ${w.clientWidth}`)"
        )
        assert hidden == [], f"{route} at {width}px: tables scroll sideways {hidden} ({path})"
    # The admin's Drain button is in the viewport (it was clipped at 1366 px).
    page.goto(f"{cluster.url}/#/")
    drain = page.locator("tr[data-node] button[data-action='drain']").first
    expect(drain).to_be_visible()
    drain.scroll_into_view_if_needed()
    box = drain.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width


def test_a_user_sees_the_pages_without_admin_tools(
    page: Any, cluster: ProcessCluster, seeded: dict[str, Any]
) -> None:
    """carol (no tasks of her own) at 800 px: the pages she may open fit and show no
    admin buttons; the admin's task is not found for her."""
    page.set_viewport_size({"width": 800, "height": 900})
    login(page, cluster.url, seeded["carol"])
    for route, key in [
        ("#/", "#stats .stat"),
        ("#/nodes", "tr[data-node] .node-name"),
        (f"#/nodes/{seeded['node']}", "#node-capacity .bar"),
        ("#/users", "#users tr[data-user='carol']"),
        ("#/builds", "#build-form"),
    ]:
        page.goto(f"{cluster.url}/{route}")
        expect(page.locator(key).first).to_be_visible()
        expect(page.locator("#main")).not_to_contain_text("null")
        expect(page.locator("button[data-action='drain'], #user-add-form")).to_have_count(0)
        assert overflow(page)[0] <= 800, route
        if route == "#/users":  # herself only
            expect(page.locator("#users tr[data-user]")).to_have_count(1)
    page.goto(f"{cluster.url}/#/task/{seeded['task']}")
    expect(page.locator("#main h1")).to_have_text("Task not found")
    shot(page, "user-task-not-found")


def test_task_page_charts_and_log_tools(
    page: Any, cluster: ProcessCluster, seeded: dict[str, Any], tmp_path: Path
) -> None:
    with cluster.client() as api:  # (a node lost under load would end it: say so)
        assert api.task(seeded["task"])["state"] == "running", api.task(seeded["task"])
    login(page, cluster.url, cluster.admin_token)
    page.goto(f"{cluster.url}/#/task/{seeded['task']}")
    logs = page.locator("#task-logs")
    expect(logs).to_contain_text("needle-here")
    # ANSI colours become classes, the escape bytes are gone
    expect(logs.locator(".ansi-fg1")).to_have_text("red-line")
    expect(logs.locator(".ansi-fg2.ansi-bold")).to_have_text("green-bold")
    assert "\x1b" not in logs.inner_text() and "[31m" not in logs.inner_text()
    # search filters and highlights
    page.fill("#log-search", "NEEDLE")
    expect(page.locator("#log-matches")).to_have_text("1 matching line")
    expect(logs.locator(".line:visible")).to_have_count(1)
    expect(logs.locator("mark")).to_have_text("needle")
    page.fill("#log-search", "")
    # stream toggle
    page.click(".log-toolbar button[data-stream='stderr']")
    expect(logs.locator(".line[data-stream]:visible")).to_have_count(1)
    expect(logs.locator(".line[data-stream]:visible")).to_contain_text("stderr-line")
    page.click(".log-toolbar button[data-stream='all']")
    # download: the whole log as text, escapes stripped
    with page.expect_download() as info:
        page.click("#log-download")
    saved = tmp_path / "task.log"
    info.value.save_as(saved)
    text = saved.read_text()
    assert "red-line plain" in text and "stderr stderr-line" in text and "\x1b" not in text
    assert info.value.suggested_filename.startswith("busy-colours-")
    # the CPU and memory charts get points (the job is busy for a moment every second)
    panel = page.locator("#task-usage")
    expect(panel.locator("canvas").first).to_be_visible()
    expect(panel).to_have_attribute("data-points", re.compile(r"^[1-9]"), timeout=40_000)
    with cluster.client() as api:
        pts = wait_for(
            lambda: api._request("GET", f"/api/v1/tasks/{seeded['task']}/usage")["points"],
            timeout=30,
        )
    assert 0.0 < max(p["cpu"] for p in pts) <= 0.3, pts  # some CPU, within its 0.25 limit
    assert 0 < pts[-1]["memory_bytes"] <= 32 * 1024**2
    shot(page, "tools-task-page")


def test_node_page_overview_chart_and_cpu_bar(
    page: Any, cluster: ProcessCluster, seeded: dict[str, Any]
) -> None:
    login(page, cluster.url, cluster.admin_token)
    row = page.locator("tr[data-node]").first
    cpu = row.locator("td.usage.cpu")
    expect(cpu).to_contain_text("cores allocated")
    expect(cpu).to_contain_text("host CPU")
    expect(cpu.locator(".bar.hot")).to_have_count(0)  # a busy host is never red
    expect(page.locator("#overview-usage")).to_have_attribute(
        "data-points", re.compile(r"^[1-9]"), timeout=40_000
    )
    row.locator("a.node-name").click()
    page.wait_for_url("**/#/nodes/*")
    expect(page.locator("#node-state .badge")).to_have_text("ready")
    expect(page.locator("#node-tasks tr[data-task='busy-colours']")).to_be_visible()
    expect(page.locator("dd[data-field='Driver']")).to_have_text("docker")
    expect(page.locator("#node-usage")).to_have_attribute(
        "data-points", re.compile(r"^[1-9]"), timeout=40_000
    )
    page.click("#node-name ~ button[data-action='drain']")
    page.click("#confirm-yes")
    expect(page.locator("#node-state .badge")).to_have_text("draining")
    page.click("button[data-action='undrain']")
    page.click("#confirm-yes")
    expect(page.locator("#node-state .badge")).to_have_text("ready")
    shot(page, "tools-node-page")


def test_service_update_rolls_out_with_history(
    page: Any, cluster: ProcessCluster, seeded: dict[str, Any]
) -> None:
    login(page, cluster.url, cluster.admin_token)
    page.goto(f"{cluster.url}/#/services/{seeded['service']}")
    expect(page.locator("#rollout-history tr[data-reason='service_created']")).to_be_visible()
    expect(page.locator("#update-image")).to_have_value(BUSYBOX)
    page.fill("#update-env", "COLOUR=blue")
    page.click("#update-go")
    expect(page.locator("#rollout-history tr[data-reason='rollout_started']")).to_be_visible()
    expect(page.locator("dd[data-field='Version']")).to_have_text("2")
    with cluster.client() as api:
        assert api._request("GET", "/api/v1/services/web-r")["spec"]["env"] == {"COLOUR": "blue"}
    shot(page, "tools-service-update")


def test_users_fair_share_quota_and_tokens(page: Any, cluster: ProcessCluster) -> None:
    login(page, cluster.url, cluster.admin_token)
    page.goto(f"{cluster.url}/#/users")
    carol = page.locator("#users tr[data-user='carol']")
    expect(carol.locator("td.factor")).to_have_text("1.000")
    expect(carol.locator("td.share")).to_have_text("1")
    expect(page.locator("#users")).not_to_contain_text("appears here once")
    carol.locator("button[data-action='edit']").click()
    form = page.locator("form[data-edit-user='carol']")
    form.locator("input[type=number]").fill("3")
    form.locator("input[aria-label='Quota of carol']").fill("max_tasks=5")
    form.locator("button[type=submit]").click()
    expect(carol.locator("td.share")).to_have_text("3")
    expect(carol).to_contain_text("max_tasks=5")
    carol.locator("button[data-action='edit']").click()
    page.locator("form[data-edit-user='carol'] button[data-action='token']").click()
    token = page.locator("#new-token-value")
    expect(token).to_have_value(re.compile(r"^dy_"))
    with cluster.client(token.input_value()) as as_carol:
        assert as_carol.whoami()["name"] == "carol"
    page.fill("#user-new-name", "dave")
    page.click("#user-add-go")
    expect(page.locator("#users tr[data-user='dave']")).to_be_visible()
    expect(page.locator("#new-token h3")).to_have_text("Token for dave")
    shot(page, "tools-users")


def test_build_uploaded_from_the_page_shows_live_output(
    page: Any, cluster: ProcessCluster, tmp_path: Path
) -> None:
    context = tmp_path / "ui-ctx.tar"
    with tarfile.open(context, "w") as tar:
        for name, body in (
            ("Dockerfile", b"FROM scratch\nCOPY hello.txt /\n"),
            ("hello.txt", b"hi\n"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    login(page, cluster.url, cluster.admin_token)
    page.goto(f"{cluster.url}/#/builds")
    page.set_input_files("#build-file", str(context))
    page.fill("#build-tag", "ui-built:1")
    page.click("#build-go")
    page.wait_for_url("**/#/builds/*")
    expect(page.locator("#build-state .badge")).to_have_text("succeeded", timeout=60_000)
    output = page.locator("#build-output")
    expect(output).to_contain_text(re.compile(r"Step 1/\d : FROM scratch"))
    expect(output).to_contain_text("Successfully tagged admin/ui-built:1")
    expect(page.locator("#build-detail tr[data-node] .badge")).to_have_text("succeeded")
    expect(page.locator("#builds tr[data-state='succeeded']")).to_have_count(1)
    expect(page.locator("#builds")).to_contain_text("admin/ui-built:1")
    shot(page, "tools-build")

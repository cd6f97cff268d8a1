"""The dashboard's Services view on an in-process cluster with a hollow node (no Docker).

Services, their detail with Scale and Remove, template instances launched and
killed by a non-admin user, API errors shown in the page, markup in labels and
template descriptions rendered as text, and one user not seeing another's
services. Sim replicas pass their health checks at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from browser_helpers import PageWatch, login, shot
from playwright.sync_api import expect

from dockyard.client import ClientError
from dockyard.drivers.sim import SimDriver
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.services import service_body
from dockyard.testing.wait import wait_for

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(2)</script>"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("services-ui")).start()
    try:
        cluster.add_agent("sim-1", SimDriver(cpu_millis=8000, memory_bytes=8 * 1024**3))
        with cluster.client() as api:
            wait_for(lambda: [n for n in api.nodes() if n["state"] == "ready"], 20, message="node")
            api.create_template(
                {
                    "name": "chal",
                    "service": {
                        "image": "busybox",
                        "ports": [80],
                        "health": {"kind": "tcp", "interval_s": 0.2},
                    },
                    "lifetime_s": 600,
                    "max_per_user": 1,
                    "description": f"web challenge {SCRIPT}",
                }
            )
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def tokens(local: LocalCluster) -> dict[str, str]:
    with local.client() as api:
        return {name: api.add_user(name)["token"] for name in ("alice", "bob")}


def no_injected_elements(page: Any) -> None:
    assert page.locator("img").count() == 0, "an <img> element was created from data"
    # the app module and the vendored chart library (uPlot), both from /ui/
    assert page.locator("script").count() == 2
    assert page.locator("script:not([src^='/ui/'])").count() == 0


def test_list_detail_scale_and_remove_from_the_ui(
    page: Any, local: LocalCluster, tokens: dict[str, str], watch: PageWatch
) -> None:
    login(page, local.url, tokens["alice"])
    page.click("a[data-nav='services']")
    expect(page.locator("#services")).to_contain_text("No services yet")

    # Created while the page is open: it appears and turns 3/3 through the live stream.
    with local.client(tokens["alice"]) as api:
        api.create_service(service_body("web", labels={"note": IMG}))
    row = page.locator("#services tr[data-service='web']")
    expect(row.locator("td.ready")).to_have_text("3/3")
    expect(row).to_contain_text("alice")
    expect(row.locator(".label")).to_have_text(f"note={IMG}")
    expect(row.locator("a.svc-url")).to_have_attribute("href", "/svc/web/")
    expect(row.locator("a.svc-url")).to_have_text(f"{local.url}/svc/web/")
    expect(row.locator(".rollout .badge")).to_have_text("stable")
    no_injected_elements(page)
    shot(page, "20-services-list")

    row.locator("a.service-link").click()
    expect(page.locator("#service-name")).to_have_text("web")
    expect(page.locator("#service-ready")).to_have_text("3/3 ready")
    replicas = page.locator("#replicas tr[data-task-id]")
    expect(replicas).to_have_count(3)
    expect(replicas.locator(".badge[data-state='healthy']")).to_have_count(3)
    expect(replicas.first).to_contain_text("sim-1")
    expect(replicas.first).to_contain_text("→ 8080")
    expect(page.locator("#service-labels")).to_have_text(f"note={IMG}")
    expect(page.locator("#service-rollout")).to_contain_text("stable")
    no_injected_elements(page)
    shot(page, "21-service-detail")

    # The API's refusal is shown in the page, naming the field.
    page.fill("#scale-replicas", "5000")
    page.click("#scale-go")
    expect(page.locator("#service-error")).to_be_visible()
    expect(page.locator("#service-error")).to_contain_text("replicas")

    page.fill("#scale-replicas", "1")
    page.click("#scale-go")
    expect(page.locator("#service-error")).to_be_hidden()
    expect(replicas).to_have_count(1)
    expect(page.locator("#service-ready")).to_have_text("1/1 ready")
    with local.client(tokens["alice"]) as api:
        svc = api.service("web")
        assert svc["replicas"] == 1 and svc["ready"] == 1
        assert len(svc["replicas_detail"]) == 1
        assert svc["version"] == 1  # a scale is not a new version

    # A replica links to the existing task page.
    task_id = replicas.first.get_attribute("data-task-id")
    replicas.first.locator("a.task-link").click()
    expect(page.locator("#task-name")).to_have_text("web")
    assert page.url.endswith(f"#/task/{task_id}")
    page.go_back()
    expect(page.locator("#service-name")).to_have_text("web")

    # Remove goes through the page's own confirm dialog; cancel first keeps it.
    page.click("#service-remove")
    page.click("#confirm-no")
    expect(page.locator("#service-name")).to_have_text("web")
    page.click("#service-remove")
    expect(page.locator("#confirm-text")).to_contain_text("Remove service web?")
    page.click("#confirm-yes")
    expect(page.locator("#services")).to_contain_text("No services yet")
    with local.client(tokens["alice"]) as api:
        with pytest.raises(ClientError) as gone:
            api.service("web")
        assert gone.value.status == 404
    assert watch.dialogs == []


def test_a_user_launches_and_kills_a_template_instance(
    page: Any, local: LocalCluster, tokens: dict[str, str]
) -> None:
    login(page, local.url, tokens["bob"])
    expect(page.locator("#whoami .role")).to_have_text("user")
    page.goto(local.url + "/#/services")
    template = page.locator("#templates tr[data-template='chal']")
    expect(template).to_contain_text(f"web challenge {SCRIPT}")
    expect(page.locator("#instances")).to_contain_text("No instances")

    template.locator("button[data-action='launch']").click()
    launched = page.locator("#launched")
    expect(launched).to_be_visible()
    expect(launched.locator("a.svc-url")).to_contain_text(f"{local.url}/svc/chal-")
    name = launched.locator("a.service-link").inner_text()
    assert name.startswith("chal-")

    instance = page.locator(f"#instances tr[data-instance='{name}']")
    expect(instance.locator("td.ready")).to_have_text("1/1")
    expect(instance.locator("a.svc-url")).to_have_attribute("href", f"/svc/{name}/")
    expect(instance.locator("td.expires")).to_contain_text("m ")  # e.g. "9m 58s"
    no_injected_elements(page)
    shot(page, "22-instances")

    # Over the per-user limit: the API's 409 is shown, nothing new is listed.
    template.locator("button[data-action='launch']").click()
    expect(page.locator("#services-error")).to_contain_text("limit is 1")
    expect(page.locator("#instances tr[data-instance]")).to_have_count(1)

    instance.locator("button[data-action='kill-instance']").click()
    page.click("#confirm-yes")
    expect(page.locator("#instances tr[data-instance]")).to_have_count(0)
    expect(page.locator("#launched")).to_be_hidden()
    with local.client(tokens["bob"]) as api:
        assert api.instances() == []


def test_a_user_does_not_see_another_users_services(
    page: Any, local: LocalCluster, tokens: dict[str, str]
) -> None:
    with local.client(tokens["alice"]) as alice:
        alice.create_service(service_body("alice-svc", replicas=1))
    try:
        login(page, local.url, tokens["bob"])
        page.goto(local.url + "/#/services")
        expect(page.locator("#services")).to_contain_text("No services yet")
        expect(page.locator("#templates tr[data-template='chal']")).to_be_visible()  # loaded
        expect(page.locator("tr[data-service='alice-svc']")).to_have_count(0)
        page.goto(local.url + "/#/services/alice-svc")
        expect(page.locator("#main h1")).to_have_text("Service not found")
        expect(page.locator("#service-actions")).to_be_hidden()

        # An admin sees it, with the owner's name and the buttons to manage it.
        page.click("#logout")
        login(page, local.url, local.admin_token)
        page.goto(local.url + "/#/services")
        row = page.locator("#services tr[data-service='alice-svc']")
        expect(row).to_contain_text("alice")
        expect(row.locator("td.ready")).to_have_text("1/1")
        row.locator("a.service-link").click()
        expect(page.locator("#service-actions")).to_be_visible()
        expect(page.locator("#service-remove")).to_be_visible()
    finally:
        with local.client(tokens["alice"]) as alice:
            alice.remove_service("alice-svc")

"""``/docs`` in Chromium: Swagger UI renders from this server's own files under the
page's Content-Security-Policy, and the browser asks no other origin for anything
(red-team finding h). A server without agents is enough."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from browser_helpers import shot

from dockyard.testing.cluster import LocalCluster


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("docs")).start()
    try:
        yield cluster
    finally:
        cluster.close()


def test_swagger_ui_renders_offline_and_asks_no_other_origin(
    page: Any, server: LocalCluster
) -> None:
    from playwright.sync_api import expect

    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(server.url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("dockyard")
    # Operations are listed from /openapi.json; one opens with its parameters.
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/jobs").first).to_be_visible()
    page.locator(".opblock-summary-path", has_text="/api/v1/jobs").first.click()
    expect(page.locator(".opblock-body").first).to_be_visible()
    shot(page, "docs-swagger-ui")
    origin = urlsplit(server.url).netloc
    foreign = [
        u for u in requested if urlsplit(u).scheme != "data" and urlsplit(u).netloc != origin
    ]
    assert foreign == [], foreign
    assert any(u.endswith("/docs/swagger-ui-bundle.js") for u in requested)
    # (the page fixture fails the test on any console error, CSP violations included)

"""What the HTTP listener exposes beyond the API (red-team findings g and h):
``/metrics`` is admins' only, and ``/docs`` loads nothing from another origin."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser

import httpx
import pytest

from dockyard.testing.cluster import LocalCluster


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("exposure")).start()
    try:
        yield cluster
    finally:
        cluster.close()


def test_metrics_are_for_admins_only(server: LocalCluster) -> None:
    """The metrics are cluster-wide (every user's tasks by state, nodes, services
    by name), which a user's own views never show: a user's token is a 403."""
    with server.client() as admin:
        user_token = admin.add_user("metrics-user")["token"]
    url = server.url + "/metrics"
    refused = httpx.get(url, headers={"Authorization": f"Bearer {user_token}"})
    assert refused.status_code == 403, refused.text
    assert "dockyard_" not in refused.text
    assert httpx.get(url).status_code == 401
    ok = httpx.get(url, headers={"Authorization": f"Bearer {server.admin_token}"})
    assert ok.status_code == 200
    assert "dockyard_" in ok.text


class _Refs(HTMLParser):
    """Every URL an HTML page refers to (src, href, action, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action", "srcset", "data", "poster") and value:
                self.urls.append(value)


def test_docs_load_nothing_from_another_origin(server: LocalCluster) -> None:
    """FastAPI's default page loads Swagger UI from a CDN (script on the dashboard's
    origin, where the API token is kept) and a favicon from another site."""
    page = httpx.get(server.url + "/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    for bad in ("http://", "https://", "cdn.", "jsdelivr", "unpkg", "tiangolo"):
        assert bad not in html, f"/docs refers to {bad}"
    refs = _Refs()
    refs.feed(html)
    assert refs.urls, html
    for url in refs.urls:
        assert url.startswith("/") and not url.startswith("//"), url
    scripts = [u for u in refs.urls if u.endswith(".js")]
    assert "/docs/swagger-ui-bundle.js" in scripts
    assert "<script>" not in html  # no inline script: the CSP below allows none
    for url in refs.urls:  # each is served here
        asset = httpx.get(server.url + url)
        assert asset.status_code == 200, url
        assert asset.content, url
    # The browser is told the same: this origin only.
    csp = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'self'"
    for sources in directives.values():
        for source in sources.split():
            assert source in ("'self'", "'none'", "'unsafe-inline'", "data:"), csp
    assert "SwaggerUIBundle" in httpx.get(server.url + "/docs/swagger-ui-bundle.js").text
    assert httpx.get(server.url + "/openapi.json").json()["info"]["title"] == "dockyard"
    assert httpx.get(server.url + "/redoc").status_code == 404  # ReDoc is not served

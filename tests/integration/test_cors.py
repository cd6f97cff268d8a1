"""Row 20 of the test matrix: no cross-origin reads and no CSRF.

The API authenticates by bearer token only (never a cookie) and grants no CORS:
no route answers a foreign Origin with ``Access-Control-Allow-Origin`` (wildcard
or reflected), preflights are not approved, and a request a browser can send
cross-site without a preflight (a form or ``text/plain`` POST, which cannot carry
an Authorization header) is refused before it does anything. Services behind
``/svc/`` share the dashboard's origin, so their CORS grants are dropped there
(tests/integration/test_routing.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from dockyard.testing.cluster import LocalCluster

EVIL = "http://evil.example"
#: Read routes of each kind: API, dashboard, metrics, docs, health.
READS = ["/api/v1/whoami", "/api/v1/tasks", "/api/v1/summary", "/metrics", "/", "/docs"]
READS += ["/openapi.json", "/healthz"]
#: State-changing routes a cross-site form could target.
WRITES = ["/api/v1/jobs", "/api/v1/users", "/api/v1/tokens", "/api/v1/queue/lock"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster().start()
    yield cluster
    cluster.close()


def no_grant(response: httpx.Response) -> None:
    allowed = {k.lower() for k in response.headers if k.lower().startswith("access-control-")}
    assert not allowed, (response.request.url, dict(response.headers))


@pytest.mark.parametrize("path", READS + WRITES)
def test_no_route_grants_a_foreign_origin(cluster: LocalCluster, path: str) -> None:
    auth = {"Authorization": f"Bearer {cluster.admin_token}", "Origin": EVIL}
    with httpx.Client(base_url=cluster.url, timeout=10) as http:
        no_grant(http.get(path, headers=auth))
        preflight = http.options(
            path,
            headers={
                "Origin": EVIL,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        no_grant(preflight)


@pytest.mark.parametrize("path", WRITES)
def test_cross_site_simple_requests_change_nothing(cluster: LocalCluster, path: str) -> None:
    """What a foreign page can send without a preflight: a form or text/plain POST,
    with the victim's cookies but no Authorization header. All refused (401), and a
    cookie holding a real token is not a credential."""
    token = cluster.admin_token
    with httpx.Client(base_url=cluster.url, timeout=10) as http:
        before = http.get("/api/v1/users", headers={"Authorization": f"Bearer {token}"}).json()
        for content_type, body in (
            ("application/x-www-form-urlencoded", "name=mallory&admin=true"),
            ("text/plain", '{"name": "mallory", "admin": true}'),
            ("multipart/form-data; boundary=x", "--x\r\n\r\nname=mallory\r\n--x--\r\n"),
        ):
            response = http.post(
                path,
                content=body,
                headers={"Origin": EVIL, "Content-Type": content_type, "Cookie": f"token={token}"},
            )
            assert response.status_code == 401, (path, content_type, response.text)
            no_grant(response)
        after = http.get("/api/v1/users", headers={"Authorization": f"Bearer {token}"}).json()
    assert after == before

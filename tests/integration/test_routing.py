"""Routing to services end to end: a real server, service rows written directly,
replicas played by HTTP backends on 127.0.0.1 (one per replica, each answering its id).

The cluster runs without agents; the test owns node states and replica rows, so
the node monitor and the service controller are stopped (they would revive the
agent-less node or replace replicas). Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from dockyard.core.ids import new_id
from dockyard.core.services import build_service_spec
from dockyard.core.specs import build_job_spec
from dockyard.server.http.proxy import DEFAULT_TTL_S
from dockyard.store.tables import Node, Task, User, Workload
from dockyard.testing.backends import Backend, pattern
from dockyard.testing.cluster import LocalCluster, free_port
from dockyard.testing.wait import wait_for

BIG = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    ingress = free_port()
    local = LocalCluster(tmp_path_factory.mktemp("routing"), ingress_port=ingress).start()
    try:
        control = wait_for(lambda: local.server.control, message="control plane")
        control.monitor.stop()
        control.services.stop()
        wait_for(lambda: _up(f"http://127.0.0.1:{ingress}/x"), message="ingress listener")
        yield local
    finally:
        local.close()


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    started = [Backend(f"b{i}") for i in range(3)]
    try:
        yield started
    finally:
        for backend in started:
            backend.close()


@pytest.fixture
def http(cluster: LocalCluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        yield client


def _up(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
        return True
    except httpx.HTTPError:
        return False


def _node(cluster: LocalCluster, state: str = "ready") -> str:
    node_id = "n-" + new_id()
    with cluster.server.db.write() as session:
        session.add(
            Node(
                id=node_id,
                name=node_id,
                address="127.0.0.1",
                driver="sim",
                state=state,
                cpu_millis=1,
                memory_bytes=1,
                registered_at=time.time(),
                last_heartbeat_at=time.time(),
            )
        )
    return node_id


def _service(
    cluster: LocalCluster,
    name: str,
    node_id: str,
    ports: list[int],
    *,
    checked: bool = False,
    health: str = "",
) -> list[str]:
    """A live service with one running replica per host port; returns the task ids."""
    spec = build_service_spec(
        build_job_spec(name=name, image="acme/web:1"),
        replicas=len(ports),
        ports=[8080],
        health={"kind": "http", "path": "/id"} if checked else None,
    )
    ids = [new_id() for _ in ports]
    with cluster.server.db.write() as session:
        owner = session.scalar(select(User.id).where(User.name == "admin"))
        assert owner is not None
        workload = Workload(
            id=new_id(),
            owner_id=owner,
            name=name,
            kind="service",
            spec=spec.to_dict(),
            created_at=time.time(),
        )
        session.add(workload)
        session.flush()
        for task_id, port in zip(ids, ports, strict=True):
            session.add(
                Task(
                    id=task_id,
                    workload_id=workload.id,
                    owner_id=owner,
                    name=name,
                    image="acme/web:1",
                    cpu_millis=0,
                    memory_bytes=0,
                    state="running",
                    desired_state="run",
                    node_id=node_id,
                    created_at=time.time(),
                    started_at=time.time(),
                    health=health,
                    port_map=[[8080, port]],
                )
            )
    return ids


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed on exit: connections are refused


def _set_task(cluster: LocalCluster, task_id: str, **values: Any) -> None:
    with cluster.server.db.write() as session:
        session.execute(update(Task).where(Task.id == task_id).values(**values))


def _set_node(cluster: LocalCluster, node_id: str, state: str) -> None:
    with cluster.server.db.write() as session:
        session.execute(update(Node).where(Node.id == node_id).values(state=state))


def _metrics(cluster: LocalCluster) -> str:
    auth = {"Authorization": f"Bearer {cluster.admin_token}"}
    return httpx.get(f"{cluster.url}/metrics", headers=auth, timeout=10).text


def test_requests_spread_over_replicas(
    cluster: LocalCluster, backends: list[Backend], http: httpx.Client
) -> None:
    _service(cluster, "spread", _node(cluster), [b.port for b in backends])
    seen = Counter(http.get("/svc/spread/id").text for _ in range(60))
    # Sequential requests all tie at 0 outstanding: round robin gives each its third.
    assert seen == {"b0": 20, "b1": 20, "b2": 20}


def test_concurrent_requests_go_to_the_least_loaded(
    cluster: LocalCluster, backends: list[Backend]
) -> None:
    _service(cluster, "busy", _node(cluster), [b.port for b in backends[:2]])
    with httpx.Client(base_url=cluster.url, timeout=30) as http:
        # A 20 MB download held open (not read) keeps one replica busy...
        with http.stream("GET", f"/svc/busy/download?n={BIG}") as held:
            busy = next(b.ident for b in backends[:2] if b.hits["/download"])
            idle = {"b0", "b1"} - {busy}
            # ...so every new request goes to the other one.
            assert {http.get("/svc/busy/id").text for _ in range(6)} == idle
            assert held.status_code == 200


def test_request_id_forwarded_headers_and_hop_by_hop(
    cluster: LocalCluster, backends: list[Backend], http: httpx.Client
) -> None:
    _service(cluster, "hdrs", _node(cluster), [backends[0].port])
    response = http.get(
        "/svc/hdrs/headers?q=a%2Fb",
        headers={
            "X-Request-Id": "client-given-42",
            "Authorization": "Bearer app-token",
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "drop me",
            "X-Forwarded-For": "10.9.8.7",
        },
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "client-given-42"
    assert "sandbox" in response.headers["content-security-policy"]
    got = response.json()
    headers = dict(got["headers"])
    assert got["path"] == "/headers?q=a%2Fb"
    assert headers["x-request-id"] == "client-given-42"
    assert headers["authorization"] == "Bearer app-token"  # the app's, passed unchanged
    assert "x-secret-hop" not in headers
    # From a peer uvicorn trusts as a proxy (loopback), the chain is taken as it came.
    assert headers["x-forwarded-for"] == "10.9.8.7"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-prefix"] == "/svc/hdrs"
    assert headers["host"] == f"127.0.0.1:{backends[0].port}"
    # Without one, the proxy makes an id and sends the same one both ways.
    fresh = http.get("/svc/hdrs/headers")
    rid = fresh.headers["x-request-id"]
    assert len(rid) >= 16
    assert dict(fresh.json()["headers"])["x-request-id"] == rid
    assert dict(fresh.json()["headers"])["x-forwarded-for"] == "127.0.0.1"
    # /svc/NAME alone is the service's root.
    assert http.get("/svc/hdrs").text == "b0"


ORIGIN_WIDE = (
    "set-cookie",
    "clear-site-data",
    "strict-transport-security",
    "alt-svc",
    "access-control-allow-origin",
    "access-control-allow-credentials",
)


def test_services_cannot_set_cookies_or_clear_data_on_the_dashboard_origin(
    cluster: LocalCluster, backends: list[Backend], http: httpx.Client
) -> None:
    """On the API port a service shares the dashboard's origin: its Set-Cookie and
    Clear-Site-Data (which would wipe the stored API token), HSTS and Alt-Svc are
    dropped. The ingress port is the service's own origin: they pass there."""
    _service(cluster, "cookies", _node(cluster), [backends[0].port])
    response = http.get("/svc/cookies/origin-headers")
    assert response.status_code == 200 and response.text == "b0"
    for name in ORIGIN_WIDE:
        assert name not in response.headers, (name, response.headers)
    assert not response.cookies
    assert response.headers["x-service-header"] == "kept"
    base = f"http://127.0.0.1:{cluster.server.cfg.ingress_port}"
    with httpx.Client(base_url=base, timeout=30) as ingress:
        own = ingress.get("/cookies/origin-headers")
    assert own.headers.get_list("set-cookie") == ["session=stolen; Path=/", "other=1; Path=/api"]
    assert all(name in own.headers for name in ORIGIN_WIDE)


def test_refused_connection_is_retried_on_another_replica(
    cluster: LocalCluster, backends: list[Backend], http: httpx.Client
) -> None:
    dead = _closed_port()
    _service(cluster, "flaky", _node(cluster), [dead, backends[0].port])
    for _ in range(10):
        response = http.get("/svc/flaky/id")
        assert (response.status_code, response.text) == (200, "b0")
    # Nothing reached the dead replica, so even a POST may go elsewhere.
    post = http.post("/svc/flaky/upload", content=b"hello")
    assert post.status_code == 200
    assert post.json()["sha256"] == hashlib.sha256(b"hello").hexdigest()
    text = _metrics(cluster)
    assert 'dockyard_proxy_retries_total{service="flaky"}' in text
    assert 'dockyard_proxy_upstream_errors_total{service="flaky"}' in text


def test_only_idempotent_requests_are_retried_after_sending(
    cluster: LocalCluster, backends: list[Backend], http: httpx.Client
) -> None:
    _service(cluster, "dying", _node(cluster), [b.port for b in backends[:2]])
    got = http.get("/svc/dying/die")  # both replicas hang up: tried on each, then 502
    assert got.status_code == 502
    assert got.json()["error"] == "upstream_error"
    assert sum(b.hits["/die"] for b in backends[:2]) == 2
    posted = http.post("/svc/dying/die", content=b"x")  # sent once: never replayed
    assert posted.status_code == 502
    assert sum(b.hits["/die"] for b in backends[:2]) == 3


def test_no_healthy_replica_is_503_json(cluster: LocalCluster, backends: list[Backend]) -> None:
    node = _node(cluster)
    _service(cluster, "sick", node, [backends[0].port], checked=True, health="starting")
    _service(cluster, "empty", node, [])
    with httpx.Client(base_url=cluster.url, timeout=30) as http:
        for name in ("sick", "empty"):
            response = http.get(f"/svc/{name}/id")
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/json"
            assert response.headers["x-request-id"]
            assert response.json() == {
                "error": "no_healthy_replica",
                "message": f"service {name!r} has no healthy replica",
                "service": name,
            }
    assert backends[0].hits["/id"] == 0


def test_unknown_service_is_404_json(cluster: LocalCluster, http: httpx.Client) -> None:
    response = http.get("/svc/no-such-service/x", headers={"X-Request-Id": "abc"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "abc"
    assert response.json()["error"] == "service_not_found"
    assert response.json()["service"] == "no-such-service"
    # A removed service is unknown too.
    node = _node(cluster)
    _service(cluster, "gone", node, [_closed_port()])
    with cluster.server.db.write() as session:
        session.execute(
            update(Workload).where(Workload.name == "gone").values(deleted_at=time.time())
        )
    assert wait_for(lambda: http.get("/svc/gone/").status_code == 404, timeout=5)


def _leaves_rotation(
    cluster: LocalCluster, http: httpx.Client, service: str, leaving: str, change: Any
) -> None:
    """Apply ``change`` and show ``leaving`` gets no request that starts a TTL (+ slack) later."""
    warm = Counter(http.get(f"/svc/{service}/id").text for _ in range(6))
    assert warm[leaving] == 3
    change()
    changed = time.monotonic()
    answers: list[tuple[float, str]] = []
    while time.monotonic() < changed + 1.0:  # bounded: one second of requests
        sent = time.monotonic() - changed
        response = http.get(f"/svc/{service}/id")
        assert response.status_code == 200
        answers.append((sent, response.text))
    last = max((sent for sent, who in answers if who == leaving), default=-1.0)
    slack = 0.15  # scheduling on a 2-core machine
    assert last < DEFAULT_TTL_S + slack, f"{leaving} still routed {last:.3f}s after the change"
    late = [who for sent, who in answers if sent >= DEFAULT_TTL_S + slack]
    assert late and leaving not in late


def test_unhealthy_replica_leaves_within_the_ttl(
    cluster: LocalCluster, backends: list[Backend], http: httpx.Client
) -> None:
    node = _node(cluster)
    ids = _service(
        cluster, "checked", node, [b.port for b in backends[:2]], checked=True, health="healthy"
    )
    _leaves_rotation(
        cluster, http, "checked", "b0", lambda: _set_task(cluster, ids[0], health="unhealthy")
    )


def test_replica_on_a_suspect_node_leaves_within_the_ttl(
    cluster: LocalCluster, backends: list[Backend], http: httpx.Client
) -> None:
    quiet, fine = _node(cluster), _node(cluster)
    ids = _service(cluster, "nodes", quiet, [backends[0].port, backends[1].port])
    _set_task(cluster, ids[1], node_id=fine)
    _leaves_rotation(cluster, http, "nodes", "b0", lambda: _set_node(cluster, quiet, "suspect"))
    # A replica the controller stops (desired "stop") leaves as well; none left: 503.
    _set_task(cluster, ids[1], desired_state="stop")
    assert wait_for(lambda: http.get("/svc/nodes/id").status_code == 503, timeout=5)


def test_large_bodies_stream_through_intact(
    cluster: LocalCluster, backends: list[Backend], http: httpx.Client
) -> None:
    _service(cluster, "bulk", _node(cluster), [backends[0].port])
    data = pattern(BIG)

    def chunks() -> Iterator[bytes]:
        for start in range(0, BIG, 256 * 1024):
            yield data[start : start + 256 * 1024]

    want = hashlib.sha256(data).hexdigest()
    sized = http.post(
        "/svc/bulk/upload", content=chunks(), headers={"Content-Length": str(BIG)}
    ).json()
    assert (sized["sha256"], sized["bytes"]) == (want, BIG)
    chunked = http.put("/svc/bulk/upload", content=chunks()).json()  # Transfer-Encoding: chunked
    assert (chunked["sha256"], chunked["bytes"]) == (want, BIG)

    digest = hashlib.sha256()
    pieces = 0
    with http.stream("GET", f"/svc/bulk/download?n={BIG}") as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(BIG)
        for piece in response.iter_raw():
            digest.update(piece)
            pieces += 1
    assert digest.hexdigest() == want
    assert pieces > 1  # streamed, not one buffered blob


def test_a_client_leaving_a_stream_closes_the_replica_connection(
    cluster: LocalCluster, backends: list[Backend], http: httpx.Client
) -> None:
    _service(cluster, "endless", _node(cluster), [backends[2].port])
    with http.stream("GET", "/svc/endless/stream") as response:
        assert response.status_code == 200
        assert next(response.iter_raw())  # streaming...
    # ...the client hung up: the proxy stops reading and closes its side soon after.
    assert backends[2].stream_broken.wait(15), "the replica kept streaming to nobody"


def test_ingress_port_routes_by_first_path_segment(
    cluster: LocalCluster, backends: list[Backend]
) -> None:
    _service(cluster, "edge", _node(cluster), [backends[1].port])
    base = f"http://127.0.0.1:{cluster.server.cfg.ingress_port}"
    with httpx.Client(base_url=base, timeout=30) as http:
        response = http.get("/edge/headers", headers={"Authorization": "Bearer x"})
        assert response.status_code == 200
        assert "content-security-policy" not in response.headers  # its own origin: untouched
        headers = dict(response.json()["headers"])
        assert headers["x-forwarded-prefix"] == "/edge"
        assert http.get("/edge/id").text == "b1"
        assert http.get("/api/v1/whoami").json()["error"] == "service_not_found"  # router only


def test_metrics_by_service_and_status_class(
    cluster: LocalCluster, backends: list[Backend], http: httpx.Client
) -> None:
    _service(cluster, "counted", _node(cluster), [backends[2].port])
    for _ in range(3):
        assert http.get("/svc/counted/id").status_code == 200
    http.get("/svc/not-there/")
    text = _metrics(cluster)
    assert 'dockyard_proxy_requests_total{service="counted",status="2xx"} 3.0' in text
    assert 'dockyard_proxy_requests_total{service="",status="4xx"}' in text
    assert 'dockyard_proxy_request_duration_seconds_count{service="counted"} 3.0' in text
    body = json.loads(http.get("/svc/counted/headers").text)
    assert body["id"] == "b2"

"""Routing: which replicas are routable, which one is picked, the cache, the headers."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from dockyard.server.http import proxy
from dockyard.server.http.ingress import end_to_end, forwarded_headers, has_body, request_id
from dockyard.server.http.proxy import (
    Endpoint,
    EndpointCache,
    Replica,
    ServiceRoute,
    pick,
    routable,
)


def replica(task_id: str = "t1", **changes: Any) -> Replica:
    values: dict[str, Any] = {
        "task_id": task_id,
        "state": "running",
        "desired_state": "run",
        "health": "",
        "port_map": [[8080, 20001]],
        "node_state": "ready",
        "node_address": "10.0.0.5",
    }
    values.update(changes)
    return Replica(**values)


def test_a_running_replica_on_a_ready_node_is_routable() -> None:
    assert routable([replica()], health_checked=False) == (Endpoint("t1", "10.0.0.5", 20001),)


@pytest.mark.parametrize(
    "changes",
    [
        {"state": "assigned"},
        {"state": "starting"},
        {"state": "failed"},
        {"desired_state": "stop"},
        {"node_state": "suspect"},
        {"node_state": "down"},
        {"node_state": None},
        {"node_address": ""},
        {"port_map": []},
        {"port_map": [[8080, 0]]},  # host port not allocated yet
        {"port_map": [[8080]]},
    ],
)
def test_replicas_that_must_not_take_requests(changes: dict[str, Any]) -> None:
    assert routable([replica(**changes)], health_checked=False) == ()


@pytest.mark.parametrize(
    ("health", "ok"), [("healthy", True), ("starting", False), ("unhealthy", False), ("", False)]
)
def test_with_a_health_check_only_healthy_replicas_count(health: str, ok: bool) -> None:
    assert bool(routable([replica(health=health)], health_checked=True)) is ok
    # Without a check, running is enough whatever the column says.
    assert routable([replica(health=health)], health_checked=False)


def test_first_published_port_and_stable_order() -> None:
    got = routable(
        [replica("t2", port_map=[[80, 20002], [443, 20003]]), replica("t1")],
        health_checked=False,
    )
    assert got == (Endpoint("t1", "10.0.0.5", 20001), Endpoint("t2", "10.0.0.5", 20002))


def test_ipv6_netloc() -> None:
    assert Endpoint("t", "::1", 8080).netloc == "[::1]:8080"


A, B, C = (Endpoint(t, "127.0.0.1", p) for t, p in (("a", 1), ("b", 2), ("c", 3)))


def test_pick_prefers_fewest_outstanding() -> None:
    assert pick([A, B, C], {A: 2, B: 0, C: 1}, turn=0) == B
    assert pick([A, B, C], {A: 2, B: 5, C: 1}, turn=7) == C


def test_pick_ties_go_round_robin() -> None:
    counts = Counter(pick([A, B, C], {}, turn) for turn in range(30))
    assert counts == {A: 10, B: 10, C: 10}
    assert [pick([A, B, C], {A: 1}, turn) for turn in range(4)] == [B, C, B, C]


def test_pick_excludes_tried_and_none_when_nothing_left() -> None:
    assert pick([A, B], {}, 0, exclude=[A]) == B
    assert pick([A, B], {}, 1, exclude=[A, B]) is None
    assert pick([], {}, 0) is None


def test_cache_reads_once_per_ttl_and_shares_concurrent_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loads: list[str] = []
    gate, entered = threading.Event(), threading.Event()

    def fake_load(_db: Any, name: str) -> ServiceRoute | None:
        entered.set()
        gate.wait(5)
        loads.append(name)
        return ServiceRoute(name, "w1", False, (A,)) if name == "web" else None

    monkeypatch.setattr(proxy, "load_service", fake_load)
    now = [100.0]
    cache = EndpointCache(db=None, ttl_s=0.2, clock=lambda: now[0])  # type: ignore[arg-type]

    async def scenario() -> None:
        waiting = [asyncio.create_task(cache.get("web")) for _ in range(20)]
        await asyncio.to_thread(entered.wait, 5)  # the first read is under way...
        gate.set()  # ...while all 20 wait for it
        routes = await asyncio.gather(*waiting)
        assert {r.endpoints for r in routes if r} == {(A,)} and len(loads) == 1
        now[0] += 0.19
        assert await cache.get("web") is not None and len(loads) == 1
        now[0] += 0.02  # 0.21 s after the read began: expired
        await cache.get("web")
        assert len(loads) == 2
        assert await cache.get("nope") is None
        assert await cache.get("nope") is None  # unknown names are cached too
        assert loads.count("nope") == 1

    # In a thread of its own: an earlier test in this process (Playwright's sync API)
    # may have left an event loop set on the main thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result(30)


def test_request_id_kept_when_sane_else_made() -> None:
    assert request_id([(b"x-request-id", b"abc-123")]) == b"abc-123"
    made = request_id([(b"x-request-id", b"has space")])
    assert made != b"has space" and len(made) == 32
    assert request_id([(b"x-request-id", b"x" * 201)]) != b"x" * 201
    assert request_id([]) != request_id([])


def test_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    got = end_to_end(
        [
            (b"Connection", b"close, X-Hop"),
            (b"X-Hop", b"1"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Upgrade", b"h2c"),
            (b"Authorization", b"Bearer t"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
        ]
    )
    assert got == [
        (b"authorization", b"Bearer t"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]


def test_forwarded_headers() -> None:
    scope = {
        "scheme": "https",
        "client": ("192.0.2.9", 5000),
        "headers": [
            (b"host", b"dy.example:8700"),
            (b"x-forwarded-for", b"198.51.100.1"),
            (b"x-forwarded-prefix", b"/spoofed"),
            (b"accept", b"*/*"),
        ],
    }
    got = forwarded_headers(scope, "/svc/web", b"rid")
    assert got == [
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"198.51.100.1, 192.0.2.9"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"dy.example:8700"),
        (b"x-forwarded-prefix", b"/svc/web"),
        (b"x-request-id", b"rid"),
    ]


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ([], False),
        ([(b"content-length", b"0")], False),
        ([(b"content-length", b"12")], True),
        ([(b"transfer-encoding", b"chunked")], True),
    ],
)
def test_has_body(headers: list[tuple[bytes, bytes]], body: bool) -> None:
    assert has_body({"headers": headers}) is body

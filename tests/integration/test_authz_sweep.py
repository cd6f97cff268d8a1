"""Authorisation, route by route, from the app's own route table.

Every route the app serves (each APIRoute method, the WebSocket, the static
mount, the ingress routes) must have an entry in ``ROUTES`` below; a route added
later without one fails ``test_every_route_has_an_entry``. Each entry is called:

- **anonymous**: 401 with the JSON error, except the public routes listed in
  ``PUBLIC`` (health, dashboard files, API docs, the service ingress);
- **as user A on user B's objects**: 404 (or 403), and a listing A may read never
  carries B's data (B's task ids, names, build, service, instance...);
- **as admin**: the route works (2xx), on B's objects too.

Afterwards B's objects are as they were (A changed nothing).
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.routing import APIWebSocketRoute
from starlette.routing import Mount, WebSocketRoute
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from dockyard.drivers.sim import SimDriver
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for

B_NAME = "bobsecretuser"


@dataclass
class World:
    """What the calls point at: B's objects, and an id of each kind."""

    url: str
    admin: str
    a: str
    b: str
    node: str = ""
    running: str = ""  # B's running task
    finished: str = ""  # B's finished task (an accounting record)
    queued: str = ""  # B's task that never fits (stays queued)
    queued_for_admin: str = ""  # another one, for the admin's dequeue
    kill_for_admin: str = ""  # B's running task the admin kills
    service: str = "bob-secret-svc"
    service_for_admin: str = "bob-secret-svc2"  # the admin removes it
    instance: str = ""  # B's instance of the template
    build: str = ""  # B's build
    join_token: str = ""  # made by the admin, revoked by the admin
    array: str = ""  # B's job array (never fits: stays queued)
    array_for_admin: str = ""  # another one, the admin cancels it
    rm_for_admin: str = ""  # B's finished task the admin deletes
    b_token: str = ""  # the id of a spare token of B's (the admin revokes it)
    spare_user: str = "dave"  # the admin disables, enables and removes them
    markers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Call:
    """One request: a path (and body) built from the world, and what it must answer."""

    path: Callable[[World], str]
    expect: str  # "hidden" (403/404), "admin_only" (403), "own" (2xx, none of B's data)
    body: Callable[[World], Any] | None = None
    raw: Callable[[World], bytes] | None = None


@dataclass(frozen=True)
class Route:
    user: list[Call]
    admin: Call
    admin_status: tuple[int, ...] = (200,)


def const(text: str) -> Callable[[World], str]:
    return lambda _: text


def job_body(name: str) -> Callable[[World], dict[str, Any]]:
    return lambda _: {"name": name, "image": "busybox", "command": ["sleep", "600"]}


def service_body(name: str) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sleep", "3600"], "replicas": 1}


def context_tar() -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, text in (
            ("Dockerfile", b"FROM scratch\nCOPY hello.txt /\n"),
            ("hello.txt", b"hi\n"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    return data.getvalue()


OWN = "own"
HIDDEN = "hidden"
ADMIN_ONLY = "admin_only"


def value_routes(plural: str) -> dict[tuple[str, str], Route]:
    """Secrets or configs: B's ``bob-secret-<kind>1`` is hidden from A (by name, and
    with ?owner=B); the admin reads it and removes B's ``...2``."""
    base, k = f"/api/v1/{plural}", plural[0]
    mine, spare = f"{base}/bob-secret-{k}1", f"{base}/bob-secret-{k}2"

    def value(name: str) -> Callable[[World], dict[str, Any]]:
        return lambda _: {"name": name, "data": "YQ=="}

    return {
        ("POST", base): Route(
            [Call(const(base), OWN, body=value(f"alice-{k}"))],
            Call(const(base), OWN, body=value(f"adm-{k}")),
            admin_status=(201,),
        ),
        ("GET", base): Route([Call(const(base), OWN)], Call(const(base), OWN)),
        ("GET", f"{base}/{{name}}"): Route(
            [Call(const(mine), HIDDEN), Call(const(f"{mine}?owner={B_NAME}"), HIDDEN)],
            Call(const(f"{mine}?owner={B_NAME}"), OWN),
        ),
        ("PUT", f"{base}/{{name}}"): Route(
            [Call(const(f"{base}/alice-{k}p"), OWN, body=value(f"alice-{k}p"))],
            Call(const(f"{base}/adm-{k}p"), OWN, body=value(f"adm-{k}p")),
        ),
        ("DELETE", f"{base}/{{name}}"): Route(
            [Call(const(mine), HIDDEN), Call(const(f"{mine}?owner={B_NAME}"), HIDDEN)],
            Call(const(f"{spare}?owner={B_NAME}"), OWN),
            admin_status=(204,),
        ),
    }


#: Reachable without a token, and why (docs/security.md).
PUBLIC: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "liveness probe",
    ("GET", "/"): "the dashboard page (it asks for a token)",
    ("GET", "/favicon.ico"): "the dashboard's icon",
    ("MOUNT", "/ui"): "the dashboard's static files",
    ("GET", "/docs"): "the API explorer page",
    ("GET", "/docs/swagger-ui.css"): "its stylesheet",
    ("GET", "/docs/swagger-ui-bundle.js"): "its script",
    ("GET", "/openapi.json"): "the API document",
    ("*", "/svc/{name}"): "the service ingress (docs/routing.md)",
    ("*", "/svc/{name}/{path:path}"): "the service ingress",
}
PUBLIC_URLS: dict[tuple[str, str], str] = {
    ("MOUNT", "/ui"): "/ui/app.css",
    ("*", "/svc/{name}"): "/svc/no-such-service",
    ("*", "/svc/{name}/{path:path}"): "/svc/no-such-service/x",
}

#: Every protected route, in the order the admin calls them (destructive ones last).
ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/api/v1/whoami"): Route(
        [Call(const("/api/v1/whoami"), OWN)], Call(const("/api/v1/whoami"), OWN)
    ),
    ("GET", "/api/v1/status"): Route(
        [Call(const("/api/v1/status"), OWN)], Call(const("/api/v1/status"), OWN)
    ),
    ("GET", "/api/v1/tasks"): Route(
        [Call(const("/api/v1/tasks"), OWN), Call(const("/api/v1/tasks?active=true&q=b"), OWN)],
        Call(const("/api/v1/tasks"), OWN),
    ),
    ("GET", "/api/v1/tasks/{ref}"): Route(
        [Call(lambda w: f"/api/v1/tasks/{w.running}", HIDDEN)],
        Call(lambda w: f"/api/v1/tasks/{w.running}", OWN),
    ),
    ("GET", "/api/v1/tasks/{ref}/logs"): Route(
        [
            Call(lambda w: f"/api/v1/tasks/{w.running}/logs", HIDDEN),
            Call(lambda w: f"/api/v1/tasks/{w.finished}/logs?follow=true", HIDDEN),
        ],
        Call(lambda w: f"/api/v1/tasks/{w.finished}/logs", OWN),
    ),
    ("GET", "/api/v1/tasks/{ref}/usage"): Route(
        [Call(lambda w: f"/api/v1/tasks/{w.running}/usage", HIDDEN)],
        Call(lambda w: f"/api/v1/tasks/{w.running}/usage", OWN),
    ),
    ("GET", "/api/v1/usage"): Route(
        [Call(const("/api/v1/usage"), OWN)], Call(const("/api/v1/usage?window_s=7200"), OWN)
    ),
    ("GET", "/api/v1/nodes/{ref}"): Route(
        [Call(lambda w: f"/api/v1/nodes/{w.node}", OWN)],
        Call(lambda w: f"/api/v1/nodes/{w.node}", OWN),
    ),
    ("GET", "/api/v1/nodes/{ref}/usage"): Route(
        [Call(lambda w: f"/api/v1/nodes/{w.node}/usage", OWN)],
        Call(lambda w: f"/api/v1/nodes/{w.node}/usage", OWN),
    ),
    ("GET", "/api/v1/events"): Route(
        [
            Call(const("/api/v1/events"), OWN),
            Call(lambda w: f"/api/v1/events?task={w.running}", OWN),
        ],
        Call(lambda w: f"/api/v1/events?task={w.running}", OWN),
    ),
    ("GET", "/api/v1/events/stream"): Route(
        [Call(const("/api/v1/events/stream?after=0"), OWN)],
        Call(const("/api/v1/events/stream?after=0"), OWN),
    ),
    ("GET", "/api/v1/summary"): Route(
        [Call(const("/api/v1/summary"), OWN)], Call(const("/api/v1/summary"), OWN)
    ),
    ("GET", "/api/v1/nodes"): Route(
        [Call(const("/api/v1/nodes"), OWN)], Call(const("/api/v1/nodes"), OWN)
    ),
    ("GET", "/api/v1/queue"): Route(
        [Call(const("/api/v1/queue"), OWN)], Call(const("/api/v1/queue"), OWN)
    ),
    ("POST", "/api/v1/plan"): Route(
        [Call(const("/api/v1/plan"), OWN, body=job_body("a-plan"))],
        Call(const("/api/v1/plan"), OWN, body=job_body("adm-plan")),
    ),
    ("GET", "/api/v1/users/stats"): Route(
        [Call(const("/api/v1/users/stats"), OWN)], Call(const("/api/v1/users/stats"), OWN)
    ),
    ("GET", "/api/v1/accounting"): Route(
        [
            Call(const("/api/v1/accounting"), OWN),
            Call(const(f"/api/v1/accounting?user={B_NAME}"), HIDDEN),
        ],
        Call(const(f"/api/v1/accounting?user={B_NAME}"), OWN),
    ),
    ("GET", "/api/v1/accounting/export"): Route(
        [
            Call(const("/api/v1/accounting/export?format=csv"), OWN),
            Call(const(f"/api/v1/accounting/export?user={B_NAME}"), HIDDEN),
        ],
        Call(const(f"/api/v1/accounting/export?user={B_NAME}"), OWN),
    ),
    ("GET", "/metrics"): Route([Call(const("/metrics"), ADMIN_ONLY)], Call(const("/metrics"), OWN)),
    ("GET", "/api/v1/users"): Route(
        [Call(const("/api/v1/users"), ADMIN_ONLY)], Call(const("/api/v1/users"), OWN)
    ),
    ("POST", "/api/v1/users"): Route(
        [Call(const("/api/v1/users"), ADMIN_ONLY, body=lambda _: {"name": "mallory"})],
        Call(const("/api/v1/users"), OWN, body=lambda _: {"name": "carol"}),
        (201,),
    ),
    ("PATCH", "/api/v1/users/{name}"): Route(
        [Call(const(f"/api/v1/users/{B_NAME}"), ADMIN_ONLY, body=lambda _: {"share": 99})],
        Call(const("/api/v1/users/carol"), OWN, body=lambda _: {"share": 2}),
    ),
    ("POST", "/api/v1/tokens"): Route(
        [
            Call(const("/api/v1/tokens"), OWN, body=lambda _: {"description": "mine"}),
            Call(const("/api/v1/tokens"), HIDDEN, body=lambda _: {"user": B_NAME}),
        ],
        Call(const("/api/v1/tokens"), OWN, body=lambda _: {"user": "carol"}),
        (201,),
    ),
    ("GET", "/api/v1/tokens"): Route(
        [Call(const("/api/v1/tokens"), OWN), Call(const(f"/api/v1/tokens?user={B_NAME}"), OWN)],
        Call(const(f"/api/v1/tokens?user={B_NAME}"), OWN),
    ),
    ("DELETE", "/api/v1/tokens/{token_id}"): Route(
        [Call(lambda w: f"/api/v1/tokens/{w.b_token}", HIDDEN)],
        Call(lambda w: f"/api/v1/tokens/{w.b_token}", OWN),
    ),
    ("POST", "/api/v1/users/{name}/disable"): Route(
        [Call(const(f"/api/v1/users/{B_NAME}/disable"), ADMIN_ONLY)],
        Call(lambda w: f"/api/v1/users/{w.spare_user}/disable", OWN),
    ),
    ("POST", "/api/v1/users/{name}/enable"): Route(
        [Call(const(f"/api/v1/users/{B_NAME}/enable"), ADMIN_ONLY)],
        Call(lambda w: f"/api/v1/users/{w.spare_user}/enable", OWN),
    ),
    ("DELETE", "/api/v1/users/{name}"): Route(
        [Call(const(f"/api/v1/users/{B_NAME}"), ADMIN_ONLY)],
        Call(lambda w: f"/api/v1/users/{w.spare_user}", OWN),
        (204,),
    ),
    ("POST", "/api/v1/jobs"): Route(
        [Call(const("/api/v1/jobs"), OWN, body=job_body("a-job"))],
        Call(const("/api/v1/jobs"), OWN, body=job_body("adm-job")),
        (201,),
    ),
    ("POST", "/api/v1/jobs/batch"): Route(
        [Call(const("/api/v1/jobs/batch"), OWN, body=lambda w: {"jobs": [job_body("a-b")(w)]})],
        Call(const("/api/v1/jobs/batch"), OWN, body=lambda w: {"jobs": [job_body("adm-b")(w)]}),
        (201,),
    ),
    ("POST", "/api/v1/tasks/{ref}/exec"): Route(
        [
            Call(
                lambda w: f"/api/v1/tasks/{w.running}/exec",
                HIDDEN,
                body=lambda _: {"command": ["echo", "x"]},
            )
        ],
        Call(
            lambda w: f"/api/v1/tasks/{w.running}/exec",
            OWN,
            body=lambda _: {"command": ["echo", "x"]},
        ),
    ),
    ("WS", "/api/v1/tasks/{ref}/exec/ws"): Route(
        [Call(lambda w: f"/api/v1/tasks/{w.running}/exec/ws?command=echo&command=x", HIDDEN)],
        Call(lambda w: f"/api/v1/tasks/{w.running}/exec/ws?command=echo&command=x", OWN),
    ),
    ("GET", "/api/v1/services"): Route(
        [Call(const("/api/v1/services"), OWN)], Call(const("/api/v1/services"), OWN)
    ),
    ("POST", "/api/v1/services"): Route(
        [Call(const("/api/v1/services"), OWN, body=lambda _: service_body("alice-svc"))],
        Call(const("/api/v1/services"), OWN, body=lambda _: service_body("admin-svc")),
        (201,),
    ),
    ("GET", "/api/v1/services/{name}"): Route(
        [Call(lambda w: f"/api/v1/services/{w.service}", HIDDEN)],
        Call(lambda w: f"/api/v1/services/{w.service}", OWN),
    ),
    ("PUT", "/api/v1/services/{name}"): Route(
        [
            Call(
                lambda w: f"/api/v1/services/{w.service}",
                HIDDEN,
                body=lambda w: {**service_body(w.service), "replicas": 0},
            )
        ],
        Call(
            lambda w: f"/api/v1/services/{w.service}", OWN, body=lambda w: service_body(w.service)
        ),
    ),
    ("POST", "/api/v1/services/{name}/scale"): Route(
        [
            Call(
                lambda w: f"/api/v1/services/{w.service}/scale",
                HIDDEN,
                body=lambda _: {"replicas": 0},
            )
        ],
        Call(lambda w: f"/api/v1/services/{w.service}/scale", OWN, body=lambda _: {"replicas": 1}),
    ),
    ("GET", "/api/v1/templates"): Route(
        [Call(const("/api/v1/templates"), OWN)], Call(const("/api/v1/templates"), OWN)
    ),
    ("POST", "/api/v1/templates"): Route(
        [
            Call(
                const("/api/v1/templates"),
                ADMIN_ONLY,
                body=lambda _: {"name": "a-tpl", "service": {"image": "busybox"}},
            )
        ],
        Call(
            const("/api/v1/templates"),
            OWN,
            body=lambda _: {"name": "tpl2", "service": {"image": "busybox"}},
        ),
        (201,),
    ),
    ("POST", "/api/v1/templates/{name}/launch"): Route(
        [Call(const("/api/v1/templates/tpl/launch"), OWN)],
        Call(const("/api/v1/templates/tpl/launch"), OWN),
        (201,),
    ),
    ("GET", "/api/v1/instances"): Route(
        [Call(const("/api/v1/instances"), OWN)], Call(const("/api/v1/instances"), OWN)
    ),
    ("DELETE", "/api/v1/templates/{name}"): Route(
        [Call(const("/api/v1/templates/tpl"), ADMIN_ONLY)],
        Call(const("/api/v1/templates/tpl2"), OWN),
    ),
    ("POST", "/api/v1/builds"): Route(
        [Call(const("/api/v1/builds?filename=a-ctx"), OWN, raw=lambda _: context_tar())],
        Call(const("/api/v1/builds?filename=adm-ctx"), OWN, raw=lambda _: context_tar()),
        (201,),
    ),
    ("GET", "/api/v1/builds"): Route(
        [Call(const("/api/v1/builds"), OWN)], Call(const("/api/v1/builds"), OWN)
    ),
    ("GET", "/api/v1/builds/{build_id}"): Route(
        [Call(lambda w: f"/api/v1/builds/{w.build}", HIDDEN)],
        Call(lambda w: f"/api/v1/builds/{w.build}", OWN),
    ),
    ("POST", "/api/v1/nodes/join-tokens"): Route(
        [Call(const("/api/v1/nodes/join-tokens"), ADMIN_ONLY, body=lambda _: {})],
        Call(const("/api/v1/nodes/join-tokens"), OWN, body=lambda _: {"description": "x"}),
        (201,),
    ),
    ("GET", "/api/v1/nodes/join-tokens"): Route(
        [Call(const("/api/v1/nodes/join-tokens"), ADMIN_ONLY)],
        Call(const("/api/v1/nodes/join-tokens"), OWN),
    ),
    ("DELETE", "/api/v1/nodes/join-tokens/{token_id}"): Route(
        [Call(lambda w: f"/api/v1/nodes/join-tokens/{w.join_token}", ADMIN_ONLY)],
        Call(lambda w: f"/api/v1/nodes/join-tokens/{w.join_token}", OWN),
    ),
    ("POST", "/api/v1/admin/gc"): Route(
        [Call(const("/api/v1/admin/gc"), ADMIN_ONLY, body=lambda _: {"retention_s": 0})],
        Call(const("/api/v1/admin/gc"), OWN, body=lambda _: {"retention_s": 10**9}),
    ),
    ("POST", "/api/v1/queue/lock"): Route(
        [Call(const("/api/v1/queue/lock"), ADMIN_ONLY)], Call(const("/api/v1/queue/lock"), OWN)
    ),
    ("POST", "/api/v1/queue/unlock"): Route(
        [Call(const("/api/v1/queue/unlock"), ADMIN_ONLY)], Call(const("/api/v1/queue/unlock"), OWN)
    ),
    ("POST", "/api/v1/nodes/{ref}/drain"): Route(
        [
            Call(
                lambda w: f"/api/v1/nodes/{w.node}/drain",
                ADMIN_ONLY,
                body=lambda _: {"deadline_s": 3600},
            )
        ],
        Call(lambda w: f"/api/v1/nodes/{w.node}/drain", OWN, body=lambda _: {"deadline_s": 3600}),
    ),
    ("POST", "/api/v1/nodes/{ref}/undrain"): Route(
        [Call(lambda w: f"/api/v1/nodes/{w.node}/undrain", ADMIN_ONLY)],
        Call(lambda w: f"/api/v1/nodes/{w.node}/undrain", OWN),
    ),
    ("DELETE", "/api/v1/queue/{ref}"): Route(
        [Call(lambda w: f"/api/v1/queue/{w.queued}", HIDDEN)],
        Call(lambda w: f"/api/v1/queue/{w.queued_for_admin}", OWN),
    ),
    ("POST", "/api/v1/tasks/{ref}/kill"): Route(
        [Call(lambda w: f"/api/v1/tasks/{w.running}/kill", HIDDEN)],
        Call(lambda w: f"/api/v1/tasks/{w.kill_for_admin}/kill", OWN),
    ),
    ("POST", "/api/v1/arrays"): Route(
        [
            Call(
                const("/api/v1/arrays"),
                OWN,
                body=lambda _: {**job_body("a-arr")(_), "array": "1-2"},
            )
        ],
        Call(
            const("/api/v1/arrays"), OWN, body=lambda _: {**job_body("adm-arr")(_), "array": "1-2"}
        ),
        (201,),
    ),
    ("GET", "/api/v1/arrays/{ref}"): Route(
        [Call(lambda w: f"/api/v1/arrays/{w.array}", HIDDEN)],
        Call(lambda w: f"/api/v1/arrays/{w.array}", OWN),
    ),
    ("POST", "/api/v1/arrays/{ref}/cancel"): Route(
        [Call(lambda w: f"/api/v1/arrays/{w.array}/cancel", HIDDEN)],
        Call(lambda w: f"/api/v1/arrays/{w.array_for_admin}/cancel", OWN),
    ),
    ("DELETE", "/api/v1/tasks/{ref}"): Route(
        [Call(lambda w: f"/api/v1/tasks/{w.finished}", HIDDEN)],
        Call(lambda w: f"/api/v1/tasks/{w.rm_for_admin}", OWN),
    ),
    **{
        key: route
        for plural in ("secrets", "configs")
        for key, route in value_routes(plural).items()
    },
    ("POST", "/api/v1/services/check"): Route(
        [Call(const("/api/v1/services/check"), OWN, body=lambda _: service_body("a-chk"))],
        Call(const("/api/v1/services/check"), OWN, body=lambda _: service_body("adm-chk")),
    ),
    ("DELETE", "/api/v1/services/{name}"): Route(
        [Call(lambda w: f"/api/v1/services/{w.service}", HIDDEN)],
        Call(lambda w: f"/api/v1/services/{w.service_for_admin}", OWN),
    ),
}


def route_table(app: Any) -> set[tuple[str, str]]:
    """(METHOD, path) of every route the app serves: ``WS`` for a WebSocket, ``MOUNT``
    for a mounted app, ``*`` for a route that takes any method (the ingress)."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.135: included routers

        routes: list[Any] = [
            (c.original_route, c.path, c.methods) for c in iter_route_contexts(app.routes)
        ]
    except ImportError:  # pragma: no cover - older FastAPI: a flat list
        routes = [(r, r.path, getattr(r, "methods", None)) for r in app.routes]
    found: set[tuple[str, str]] = set()
    for route, path, methods in routes:
        if isinstance(route, APIWebSocketRoute | WebSocketRoute):
            found.add(("WS", path))
        elif isinstance(route, Mount):
            found.add(("MOUNT", path))
        elif not methods:
            found.add(("*", path))
        else:
            found.update((m, path) for m in methods if m != "HEAD")
    return found


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster().start()
    try:
        cluster.add_agent("sim-1", SimDriver(cpu_millis=8000, memory_bytes=8 * 1024**3))
        with cluster.client() as api:
            wait_for(lambda: [n for n in api.nodes() if n["state"] == "ready"], timeout=20)
        yield cluster
    finally:
        cluster.close()


def client(world: World, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=world.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def world(cluster: LocalCluster) -> World:
    with cluster.client() as admin:
        a = admin.add_user("alice")["token"]
        b = admin.add_user(B_NAME)["token"]
        admin.create_template(
            {"name": "tpl", "service": {"image": "busybox", "command": ["sleep", "3600"]}}
        )
        node = admin.nodes()[0]["id"]
        join_token = admin.create_join_token("sweep")["id"]
        admin.add_user("dave")
        admin.create_token(B_NAME, "spare")
        (b_token,) = [t["id"] for t in admin.tokens(B_NAME) if t["description"] == "spare"]
    w = World(
        url=cluster.url, admin=cluster.admin_token, a=a, b=b, node=node, join_token=join_token
    )
    w.b_token = b_token
    with cluster.client(b) as bob:
        w.running = bob.run_job("bob-secret-run", "busybox", ["sleep", "3600"])["id"]
        w.kill_for_admin = bob.run_job("bob-secret-kill", "busybox", ["sleep", "3600"])["id"]
        w.finished = bob.run_job("bob-secret-done", "busybox", ["exit", "0"])["id"]
        w.queued = bob.run_job("bob-secret-queued", "busybox", ["true"], memory="64g", hold=True)[
            "id"
        ]
        w.queued_for_admin = bob.run_job(
            "bob-secret-queued2", "busybox", ["true"], memory="64g", hold=True
        )["id"]
        w.array = bob.run_job(
            "bob-secret-arr", "busybox", ["true"], memory="64g", array="1-3%1", hold=True
        )["id"]
        w.array_for_admin = bob.run_job(
            "bob-secret-arr2", "busybox", ["true"], memory="64g", array="1-3%1", hold=True
        )["id"]
        w.rm_for_admin = bob.run_job("bob-secret-rm", "busybox", ["exit", "0"])["id"]
        bob.create_service(service_body(w.service))
        for kind in ("secret", "config"):
            for n in (1, 2):
                bob.create_secret(f"bob-secret-{kind[0]}{n}", b"b", kind=kind)
        bob.create_service(service_body(w.service_for_admin))
        w.instance = bob.launch("tpl")["name"]
        with client(w, b) as http:
            started = http.post(
                "/api/v1/builds", params={"filename": "bob-secret-ctx"}, content=context_tar()
            )
            assert started.status_code == 201, started.text
            w.build = started.json()["id"]
        for ref in (w.running, w.kill_for_admin):
            wait_for(lambda ref=ref: bob.task(ref)["state"] == "running", timeout=20)
        for ref in (w.finished, w.rm_for_admin):
            wait_for(lambda ref=ref: bob.task(ref)["state"] == "succeeded", timeout=20)
        wait_for(lambda: bob.accounting(), timeout=20)
        workloads = [bob.task(t)["workload_id"] for t in (w.running, w.finished, w.queued)]
    w.markers = [
        B_NAME,
        "bob-secret",
        w.running,
        w.finished,
        w.queued,
        w.kill_for_admin,
        w.instance,
        w.build,
        w.array,
        w.rm_for_admin,
        w.b_token,  # A's token listing must not carry it
        *workloads,
    ]
    return w


def send(http: httpx.Client, method: str, call: Call, world: World) -> httpx.Response:
    url = call.path(world)
    if "/events/stream" in url:
        return stream_briefly(http, url)
    if call.raw is not None:
        return http.request(method, url, content=call.raw(world))
    if call.body is not None:
        return http.request(method, url, json=call.body(world))
    return http.request(method, url)


def stream_briefly(http: httpx.Client, url: str) -> httpx.Response:
    """The first second of an event stream (its replay), as a complete response."""
    chunks: list[str] = []
    with http.stream("GET", url, timeout=httpx.Timeout(10, read=1.0)) as response:
        try:
            for text in response.iter_text():
                chunks.append(text)
        except httpx.ReadTimeout:
            pass
        status, headers = response.status_code, response.headers
    return httpx.Response(status, headers=headers, content="".join(chunks).encode())


def websocket(world: World, url: str, token: str | None) -> str:
    """``accepted: <first messages>`` or ``refused: <status>``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with connect("ws" + world.url[4:] + url, additional_headers=headers, open_timeout=10) as ws:
            received = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                message = ws.recv(timeout=10)
                received.append(message if isinstance(message, str) else message.decode())
                if isinstance(message, str) and "exit" in message:
                    break
            return "accepted: " + "".join(received)
    except InvalidStatus as exc:
        return f"refused: {exc.response.status_code}"


def assert_no_b_data(world: World, response: httpx.Response, what: str) -> None:
    text = response.text
    leaked = [m for m in world.markers if m and m in text]
    assert not leaked, f"{what}: A sees B's {leaked}: {text[:300]}"


def is_json_error(response: httpx.Response, code: str | None = None) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "error" in body and (code is None or body["error"] == code)


def test_every_route_has_an_entry(cluster: LocalCluster) -> None:
    """A route added without an entry here (or an entry for a route gone) fails."""
    served = route_table(cluster.server.app)
    known = set(ROUTES) | set(PUBLIC)
    assert served - known == set(), f"routes without an entry: {sorted(served - known)}"
    assert known - served == set(), f"entries for no route: {sorted(known - served)}"
    assert not set(ROUTES) & set(PUBLIC)


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
def test_anonymous_is_401(world: World, method: str, path: str) -> None:
    call = ROUTES[(method, path)].user[0]
    if method == "WS":
        assert websocket(world, call.path(world), None).startswith("refused")
        return
    with client(world, None) as http:
        for token in (None, "Bearer", "Basic YTpi", "Bearer dy_not-a-token"):
            http.headers.pop("Authorization", None)
            if token:
                http.headers["Authorization"] = token
            response = send(http, method, call, world)
            assert response.status_code == 401, (token, response.text[:200])
            assert is_json_error(response, "unauthorized"), response.text[:200]


@pytest.mark.parametrize(("method", "path"), sorted(PUBLIC))
def test_public_routes_need_no_token(world: World, method: str, path: str) -> None:
    url = PUBLIC_URLS.get((method, path), path)
    with client(world, None) as http:
        response = http.get(url)
    assert response.status_code != 401, response.text[:200]
    assert response.status_code < 500
    if path.startswith("/svc/"):
        assert response.status_code == 404 and is_json_error(response, "service_not_found")
    else:
        assert response.status_code == 200


def test_user_a_on_user_b(world: World, cluster: LocalCluster) -> None:
    """A is refused B's objects (404: their existence is not revealed; 403 for admin-only
    routes) and A's listings carry none of B's data."""
    with cluster.client() as admin:
        before = snapshot(admin, world)
    problems: list[str] = []
    with client(world, world.a) as http:
        for (method, _path), route in ROUTES.items():
            for call in route.user:
                what = f"{method} {call.path(world)}"
                if method == "WS":
                    outcome = websocket(world, call.path(world), world.a)
                    if not outcome.startswith("refused"):
                        problems.append(f"{what}: {outcome}")
                    continue
                response = send(http, method, call, world)
                status = response.status_code
                if call.expect == HIDDEN and status not in (403, 404):
                    problems.append(f"{what}: {status}, expected 404/403: {response.text[:200]}")
                elif call.expect == ADMIN_ONLY and status != 403:
                    problems.append(f"{what}: {status}, expected 403: {response.text[:200]}")
                elif call.expect == OWN and not 200 <= status < 300:
                    problems.append(f"{what}: {status}, expected 2xx: {response.text[:200]}")
                elif call.expect == OWN:
                    try:
                        assert_no_b_data(world, response, what)
                    except AssertionError as exc:
                        problems.append(str(exc))
                if call.expect != OWN and not is_json_error(response):
                    problems.append(f"{what}: not a JSON error: {response.text[:200]}")
    assert not problems, "\n".join(problems)
    with cluster.client() as admin:
        assert snapshot(admin, world) == before, "A changed B's objects"


def snapshot(admin: Any, world: World) -> dict[str, Any]:
    """What A must not be able to change: B's tasks, services, user, the template."""
    tasks = {ref: admin.task(ref)["state"] for ref in (world.running, world.queued)}
    services = {s["name"]: (s["replicas"], s["version"]) for s in admin.services()}
    users = {u["name"]: (u["share"], u["quota"], u["policy"]) for u in admin.users()}
    return {
        "tasks": tasks,
        "services": {
            k: v for k, v in services.items() if k.startswith("bob") or k == world.instance
        },
        "users": users.get(B_NAME),
        "templates": sorted(t["name"] for t in admin.templates()),
        "join_tokens": sorted(t["id"] for t in admin.join_tokens() if t["revoked_at"] is None),
    }


def test_admin_reaches_every_route(world: World, cluster: LocalCluster) -> None:
    """Runs after the user sweep (module order): the admin's calls change things."""
    problems: list[str] = []
    with client(world, world.admin) as http:
        for (method, _path), route in ROUTES.items():
            call = route.admin
            what = f"{method} {call.path(world)}"
            if method == "WS":
                outcome = websocket(world, call.path(world), world.admin)
                if not outcome.startswith("accepted") or '"exit": 0' not in outcome:
                    problems.append(f"{what}: {outcome}")
                continue
            response = send(http, method, call, world)
            if response.status_code not in route.admin_status:
                problems.append(f"{what}: {response.status_code}: {response.text[:200]}")
    assert not problems, "\n".join(problems)


def test_admin_sees_b_data(world: World) -> None:
    """The markers the user sweep looks for are really there for someone allowed."""
    with client(world, world.admin) as http:
        tasks = http.get("/api/v1/tasks").text
        assert world.running in tasks and world.finished in tasks
        assert B_NAME in http.get(f"/api/v1/accounting?user={B_NAME}").text
        assert world.build in http.get("/api/v1/builds").text
        assert world.instance in http.get("/api/v1/instances").text
        assert world.running in http.get(f"/api/v1/events?task={world.running}").text


@pytest.mark.parametrize("token", [None, "admin"])
def test_unknown_routes_are_json(world: World, token: str | None) -> None:
    with client(world, world.admin if token else None) as http:
        for path in ("/api/v1/nope", "/api/v1/tasks/x/nope", "/nope"):
            response = http.get(path)
            expected = {404} if token or not path.startswith("/api/") else {401}
            assert response.status_code in expected, (path, response.status_code)
            assert is_json_error(response), response.text[:200]
        if token:
            wrong = http.delete("/api/v1/tasks")
            assert wrong.status_code == 405 and is_json_error(wrong, "method_not_allowed")


def test_ws_refusals_close_before_accept(world: World) -> None:
    """Anonymous and A on B's task: the upgrade is refused (no socket is opened)."""
    url = f"/api/v1/tasks/{world.running}/exec/ws?command=echo&command=x"
    assert websocket(world, url, None).startswith("refused")
    assert websocket(world, url, "dy_not-a-token").startswith("refused")
    assert websocket(world, url, world.a).startswith("refused")
    assert json.dumps({"exit": 0, "error": ""}) in websocket(world, url, world.b)

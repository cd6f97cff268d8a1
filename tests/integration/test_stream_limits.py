"""Long-lived requests cannot freeze the API: 45 log follows or 42 running HTTP execs
hold no worker threads, each user is capped, and a client that goes away gives its
slot back at once."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from dockyard.drivers.sim import SimDriver
from dockyard.server.http.limits import DEFAULT_PER_USER
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for

STREAMS_PER_USER = 15
USERS = 3  # 45 follows in all: more than the 40 worker threads of the HTTP server


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster().start()
    try:
        cluster.add_agent("sim-1", SimDriver(cpu_millis=64_000, memory_bytes=64 * 1024**3))
        with cluster.client() as api:
            wait_for(lambda: [n for n in api.nodes() if n["state"] == "ready"], timeout=20)
        yield cluster
    finally:
        cluster.close()


class Follower(threading.Thread):
    """One ``logs?follow=true`` client that holds its stream open until told to stop."""

    def __init__(self, url: str, token: str, task_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.task_id = url, token, task_id
        self.status: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with (
            httpx.Client(base_url=self.url, headers=headers, timeout=30) as http,
            http.stream("GET", f"/api/v1/tasks/{self.task_id}/logs?follow=true") as resp,
        ):
            self.status = resp.status_code
            self.stop.wait(60)  # holds the stream open; closing the client ends it


def running_task(cluster: LocalCluster, token: str) -> str:
    with cluster.client(token) as api:
        task_id = str(api.run_job("quiet", "busybox", ["run-forever"])["id"])
        wait_for(lambda: api.task(task_id)["state"] == "running", timeout=20)
    return task_id


@contextlib.contextmanager
def followers(cluster: LocalCluster, token: str, task_id: str, n: int) -> Iterator[list[Follower]]:
    threads = [Follower(cluster.url, token, task_id) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: all(t.status is not None for t in threads), timeout=30)
        yield threads
    finally:
        for t in threads:
            t.stop.set()
        for t in threads:
            t.join(10)


def test_follows_do_not_freeze_the_api(cluster: LocalCluster) -> None:
    with cluster.client() as admin:
        tokens = [admin.add_user(f"streamer{i}")["token"] for i in range(USERS)]
    tasks = [running_task(cluster, token) for token in tokens]
    with contextlib.ExitStack() as stack:
        held = [
            stack.enter_context(followers(cluster, token, task, STREAMS_PER_USER))
            for token, task in zip(tokens, tasks, strict=True)
        ]
        assert all(t.status == 200 for group in held for t in group)
        # With 45 follows open, health, the admin's reads and a submit still answer.
        with httpx.Client(base_url=cluster.url, timeout=5) as http:
            assert http.get("/healthz").status_code == 200
            auth = {"Authorization": f"Bearer {cluster.admin_token}"}
            for _ in range(5):
                assert http.get("/api/v1/nodes", headers=auth).status_code == 200
            assert http.get("/api/v1/users", headers=auth).status_code == 200
        with cluster.client(tokens[0]) as api:
            assert api.run_job("after", "busybox", ["exit", "0"])["id"]
    # Every client is gone: the server holds no slot for any of them.
    limit = cluster.server.app.state.ctx.log_follows
    wait_for(lambda: all(limit.open(u) == 0 for u in list(limit._open)), timeout=10)
    assert not limit._open


def test_one_user_is_capped_and_a_closed_client_frees_its_slot(cluster: LocalCluster) -> None:
    with cluster.client() as admin:
        token = admin.add_user("capped")["token"]
    task = running_task(cluster, token)
    auth = {"Authorization": f"Bearer {token}"}
    with followers(cluster, token, task, DEFAULT_PER_USER) as held:
        assert all(t.status == 200 for t in held)
        with httpx.Client(base_url=cluster.url, headers=auth, timeout=10) as http:
            over = http.get(f"/api/v1/tasks/{task}/logs?follow=true")
            assert over.status_code == 429
            assert over.json()["error"] == "too_many_streams"
            # A plain (non-follow) read is not a stream: still served.
            assert http.get(f"/api/v1/tasks/{task}/logs").status_code == 200
    # The clients closed their streams: a new follow is accepted at once.
    deadline = time.monotonic() + 10
    while True:
        with (
            httpx.Client(base_url=cluster.url, headers=auth, timeout=10) as http,
            http.stream("GET", f"/api/v1/tasks/{task}/logs?follow=true") as resp,
        ):
            if resp.status_code == 200:
                break
        assert time.monotonic() < deadline, "slots were not given back after the clients left"
        time.sleep(0.1)


class Execer(threading.Thread):
    """One ``POST /exec`` of ``cat`` (runs until its timeout: no stdin is sent)."""

    def __init__(self, url: str, token: str, task_id: str, timeout_s: float) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.task_id, self.timeout_s = url, token, task_id, timeout_s
        self.status: int | None = None

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        body = {"command": ["cat"], "timeout_s": self.timeout_s}
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as http:
            self.status = http.post(f"/api/v1/tasks/{self.task_id}/exec", json=body).status_code


def test_running_execs_do_not_freeze_the_api(cluster: LocalCluster) -> None:
    with cluster.client() as admin:
        tokens = [admin.add_user(f"execer{i}")["token"] for i in range(USERS)]
    tasks = [running_task(cluster, token) for token in tokens]
    execs = cluster.server.app.state.ctx.exec_sessions
    threads = [
        Execer(cluster.url, token, task, timeout_s=15)
        for token, task in zip(tokens, tasks, strict=True)
        for _ in range(14)  # 42 in all
    ]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: sum(execs.open(u) for u in list(execs._open)) == 42, timeout=30)
        with httpx.Client(base_url=cluster.url, timeout=5) as http:
            assert http.get("/healthz").status_code == 200
            auth = {"Authorization": f"Bearer {cluster.admin_token}"}
            assert http.get("/api/v1/nodes", headers=auth).status_code == 200
            assert http.get("/api/v1/users", headers=auth).status_code == 200
    finally:
        for t in threads:
            t.join(30)
    assert all(t.status == 200 for t in threads), [t.status for t in threads]
    wait_for(lambda: not execs._open, timeout=10)


def test_one_user_is_capped_on_execs(cluster: LocalCluster) -> None:
    with cluster.client() as admin:
        token = admin.add_user("exec-capped")["token"]
    task = running_task(cluster, token)
    execs = cluster.server.app.state.ctx.exec_sessions
    threads = [Execer(cluster.url, token, task, timeout_s=10) for _ in range(DEFAULT_PER_USER)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: sum(execs.open(u) for u in list(execs._open)) == DEFAULT_PER_USER, 30)
        with httpx.Client(base_url=cluster.url, timeout=10) as http:
            over = http.post(
                f"/api/v1/tasks/{task}/exec",
                json={"command": ["echo", "hi"]},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert over.status_code == 429 and over.json()["error"] == "too_many_streams"
    finally:
        for t in threads:
            t.join(30)


def test_event_streams_are_capped_and_given_back(cluster: LocalCluster) -> None:
    with cluster.client() as admin:
        token = admin.add_user("sse-capped")["token"]
    auth = {"Authorization": f"Bearer {token}"}
    with contextlib.ExitStack() as stack:
        for _ in range(DEFAULT_PER_USER):
            http = stack.enter_context(httpx.Client(base_url=cluster.url, headers=auth, timeout=10))
            resp = stack.enter_context(http.stream("GET", "/api/v1/events/stream"))
            assert resp.status_code == 200
        with httpx.Client(base_url=cluster.url, headers=auth, timeout=10) as http:
            over = http.get("/api/v1/events/stream")
            assert over.status_code == 429 and over.json()["error"] == "too_many_streams"
    streams = cluster.server.app.state.ctx.event_streams
    wait_for(lambda: not streams._open, timeout=10, message="event stream slots given back")

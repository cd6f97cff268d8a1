"""Request bodies are bounded and anonymous requests are refused before their body is read.

Against a real in-process server (uvicorn), with raw sockets where the point is
what the server reads: a request that declares a huge body but sends none, and a
chunked body sent until the server answers.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from dockyard.server.http.limits import DEFAULT_MAX_BODY_BYTES
from dockyard.testing.cluster import LocalCluster

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server() -> Iterator[LocalCluster]:
    cluster = LocalCluster().start()
    try:
        yield cluster
    finally:
        cluster.close()


def workloads(cluster: LocalCluster) -> int:
    with cluster.server.db.read() as session:
        return int(session.scalar(text("SELECT count(*) FROM workloads")) or 0)


def job(env_bytes: int) -> bytes:
    return json.dumps({"name": "big", "image": "busybox", "env": {"BIG": "x" * env_bytes}}).encode()


def connect(cluster: LocalCluster) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", cluster.port), timeout=10)
    sock.settimeout(10)
    return sock


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of the response on ``sock`` (Content-Length framed)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    size = int(headers.get("content-length", "0"))
    while len(body) < size:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def request_head(cluster: LocalCluster, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{cluster.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_large_json_body_is_413_and_nothing_is_stored(server: LocalCluster) -> None:
    before = workloads(server)
    response = httpx.post(
        server.url + "/api/v1/jobs",
        content=job(2 * MiB),
        headers={
            "Authorization": f"Bearer {server.admin_token}",
            "Content-Type": "application/json",
        },
        timeout=30,
    )
    assert response.status_code == 413, response.text[:200]
    assert response.json() == {
        "error": "too_large",
        "message": f"request body larger than {DEFAULT_MAX_BODY_BYTES} bytes",
        "field": None,
        "rule": None,
    }
    assert workloads(server) == before


def test_a_body_under_the_limit_is_taken(server: LocalCluster) -> None:
    response = httpx.post(
        server.url + "/api/v1/jobs",
        content=job(DEFAULT_MAX_BODY_BYTES - 4096),
        headers={
            "Authorization": f"Bearer {server.admin_token}",
            "Content-Type": "application/json",
        },
        timeout=30,
    )
    assert response.status_code == 201, response.text[:200]


def test_a_streamed_body_is_counted_and_cut_at_the_limit(server: LocalCluster) -> None:
    """Chunked: no Content-Length to refuse up front. The server answers 413 once it has
    read past the limit, without waiting for the rest (32 MiB here)."""
    before = workloads(server)
    total = 32 * MiB
    payload = job(total)
    sock = connect(server)
    try:
        sock.sendall(
            request_head(
                server,
                "/api/v1/jobs",
                {
                    "Authorization": f"Bearer {server.admin_token}",
                    "Content-Type": "application/json",
                    "Transfer-Encoding": "chunked",
                },
            )
        )
        sent = 0
        step = 64 * 1024
        answered = False
        while sent < len(payload):
            chunk = payload[sent : sent + step]
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                answered = True
                break
            sent += len(chunk)
            if select.select([sock], [], [], 0)[0]:
                answered = True
                break
        if not answered:
            sock.sendall(b"0\r\n\r\n")
        status, _, body = read_response(sock)
    finally:
        sock.close()
    assert status == 413, body[:200]
    assert json.loads(body)["error"] == "too_large"
    assert sent < total // 2, f"the server read {sent} bytes before answering"
    assert workloads(server) == before


def test_an_anonymous_request_is_401_before_its_body_is_read(server: LocalCluster) -> None:
    """It declares 100 MB and sends none of it: the answer comes at once."""
    for auth in (None, "Basic YTpi", "Bearer", "Bearer two words"):
        headers = {"Content-Type": "application/json", "Content-Length": str(100 * 10**6)}
        if auth:
            headers["Authorization"] = auth
        sock = connect(server)
        try:
            sock.sendall(request_head(server, "/api/v1/jobs", headers))
            started = time.monotonic()
            status, response_headers, body = read_response(sock, timeout=5)
        finally:
            sock.close()
        assert status == 401, (auth, body[:200])
        assert json.loads(body)["error"] == "unauthorized"
        assert response_headers.get("www-authenticate") == "Bearer"
        assert time.monotonic() - started < 5


def test_a_declared_oversize_body_is_413_before_it_is_read(server: LocalCluster) -> None:
    headers = {
        "Authorization": f"Bearer {server.admin_token}",
        "Content-Type": "application/json",
        "Content-Length": str(100 * 10**6),
    }
    sock = connect(server)
    try:
        sock.sendall(request_head(server, "/api/v1/jobs", headers))
        status, _, body = read_response(sock, timeout=5)
    finally:
        sock.close()
    assert status == 413, body[:200]
    assert json.loads(body)["error"] == "too_large"


def test_a_build_context_keeps_its_own_larger_limit(server: LocalCluster) -> None:
    """2 MiB is over the JSON limit but far under the build upload's (512 MiB): the
    upload is read and judged as an archive, not refused for its size."""
    response = httpx.post(
        server.url + "/api/v1/builds",
        content=b"\0" * (2 * MiB),
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=30,
    )
    assert response.status_code != 413, response.text[:200]
    assert response.status_code < 500, response.text[:200]


def test_the_limit_is_configurable(tmp_path: object) -> None:
    cluster = LocalCluster(max_body_bytes=8192).start()
    try:
        headers = {
            "Authorization": f"Bearer {cluster.admin_token}",
            "Content-Type": "application/json",
        }
        small = httpx.post(cluster.url + "/api/v1/jobs", content=job(4096), headers=headers)
        large = httpx.post(cluster.url + "/api/v1/jobs", content=job(16384), headers=headers)
    finally:
        cluster.close()
    assert small.status_code == 201, small.text[:200]
    assert large.status_code == 413
    assert large.json()["message"] == "request body larger than 8192 bytes"

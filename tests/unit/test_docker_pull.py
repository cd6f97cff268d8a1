"""What the Docker driver asks the Engine for when it pulls (red-team finding b).

The Docker SDK talks to a fake Engine on 127.0.0.1 that records every request, so
the test sees the ``POST /images/create`` query the real Engine would get: a
digest-pinned reference must be pulled by its digest, never as a tag.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import docker
import pytest

from dockyard.drivers.docker import DockerDriver

DIGEST = "sha256:" + "ab" * 32


class FakeEngine:
    """Answers ping, "no such image" for every image, and a successful pull."""

    def __init__(self) -> None:
        self.pulls: list[dict[str, str]] = []
        engine = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path.endswith("/_ping"):
                    self._answer(200, b"OK", "text/plain")
                else:  # /images/NAME/json: not here yet
                    self._answer(404, json.dumps({"message": "No such image"}).encode())

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if url.path.endswith("/images/create"):
                    query = {k: v[0] for k, v in parse_qs(url.query).items()}
                    engine.pulls.append(query)
                    # A progress stream, chunked like the Engine's.
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for event in ({"status": "Pulling fs layer", "id": "l1"}, {"status": "Done"}):
                        line = json.dumps(event).encode() + b"\r\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self._answer(404, b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"tcp://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    fake = FakeEngine()
    try:
        yield fake
    finally:
        fake.close()


def pulled(engine: FakeEngine, image: str) -> dict[str, str]:
    client = docker.DockerClient(base_url=engine.url, version="1.41", timeout=10)
    try:
        DockerDriver(client=client, pull_attempts=1).ensure_image(image)
    finally:
        client.close()
    assert len(engine.pulls) == 1, engine.pulls
    return engine.pulls[0]


@pytest.mark.parametrize(
    ("image", "repo"),
    [
        (f"busybox@{DIGEST}", "busybox"),
        (f"busybox:1.36@{DIGEST}", "busybox"),  # the digest wins over the tag
        (f"registry.example:5000/team/app@{DIGEST}", "registry.example:5000/team/app"),
    ],
)
def test_a_digest_pinned_image_is_pulled_by_its_digest(
    engine: FakeEngine, image: str, repo: str
) -> None:
    query = pulled(engine, image)
    assert query["fromImage"] == repo
    assert query["tag"] == DIGEST


@pytest.mark.parametrize(
    ("image", "repo", "tag"),
    [
        ("busybox", "busybox", "latest"),
        ("alice/tools:v1", "alice/tools", "v1"),
        ("registry.example:5000/team/app", "registry.example:5000/team/app", "latest"),
        ("registry.example:5000/team/app:2", "registry.example:5000/team/app", "2"),
    ],
)
def test_tagged_images_are_pulled_by_tag(
    engine: FakeEngine, image: str, repo: str, tag: str
) -> None:
    assert pulled(engine, image) == {"fromImage": repo, "tag": tag}

"""Small HTTP backends on 127.0.0.1 for routing tests: each answers with its own id.

``GET /id`` -> the id; ``GET /headers`` -> the request headers as JSON;
``POST|PUT /upload`` -> ``{"sha256", "bytes"}`` of the body (Content-Length or
chunked); ``GET /download?n=BYTES`` -> ``n`` bytes of :func:`pattern`;
``GET /origin-headers`` -> sets cookies, ``Clear-Site-Data``, HSTS, ``Alt-Svc`` and a
credentialed CORS grant;
``GET /stream`` -> chunks for up to 60 s (``stream_broken`` is set when the
reader goes away); ``ANY /die`` -> the connection is closed without an answer. Every request is
counted in ``hits`` (by path).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CHUNK = 64 * 1024


def pattern(size: int) -> bytes:
    """Deterministic, non-repeating-per-block bytes (so a dropped chunk changes the hash)."""
    out = bytearray()
    block = 0
    while len(out) < size:
        out += hashlib.sha256(block.to_bytes(8, "big")).digest() * 2048
        block += 1
    return bytes(out[:size])


class Backend:
    """A threaded HTTP/1.1 server answering its ``ident``; ``close()`` stops it."""

    def __init__(self, ident: str) -> None:
        self.ident = ident
        self.hits: Counter[str] = Counter()
        #: Set when a ``/stream`` client went away (the write failed).
        self.stream_broken = threading.Event()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, name=f"backend-{ident}", daemon=True
        )
        self._thread.start()

    def hit(self, path: str) -> None:
        with self._lock:
            self.hits[path] += 1

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def _handler(backend: Backend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, kind: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _route(self) -> None:
            url = urlsplit(self.path)
            backend.hit(url.path)
            if url.path == "/die":
                self.close_connection = True
                return
            if url.path in ("/upload",) and self.command in ("POST", "PUT"):
                digest, size = self._read_body()
                body = json.dumps({"sha256": digest, "bytes": size, "id": backend.ident})
                self._send(200, body.encode(), "application/json")
                return
            self._read_body()
            if url.path == "/headers":
                headers = [[k.lower(), v] for k, v in self.headers.items()]
                body = json.dumps({"id": backend.ident, "headers": headers, "path": self.path})
                self._send(200, body.encode(), "application/json")
            elif url.path == "/origin-headers":  # what would act on a whole origin
                ident = backend.ident.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(ident)))
                self.send_header("Set-Cookie", "session=stolen; Path=/")
                self.send_header("Set-Cookie", "other=1; Path=/api")
                self.send_header("Clear-Site-Data", '"storage", "cookies"')
                self.send_header("Strict-Transport-Security", "max-age=31536000")
                self.send_header("Alt-Svc", 'h2=":9999"')
                self.send_header("Access-Control-Allow-Origin", "http://evil.example")
                self.send_header("Access-Control-Allow-Credentials", "true")
                self.send_header("X-Service-Header", "kept")
                self.end_headers()
                self.wfile.write(ident)
            elif url.path == "/stream":  # 64 KiB chunks for up to 60 s, until the reader leaves
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                deadline = time.monotonic() + 60
                try:
                    while time.monotonic() < deadline:
                        self.wfile.write(b"%x\r\n%s\r\n" % (CHUNK, b"s" * CHUNK))
                        self.wfile.flush()
                        time.sleep(0.01)
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    backend.stream_broken.set()
                    self.close_connection = True
            elif url.path == "/download":
                size = int(parse_qs(url.query).get("n", ["0"])[0])
                data = pattern(size)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                for start in range(0, size, CHUNK):
                    self.wfile.write(data[start : start + CHUNK])
            else:
                self._send(200, backend.ident.encode())

        def _read_body(self) -> tuple[str, int]:
            digest = hashlib.sha256()
            size = 0
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    length = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if length == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    chunk = self.rfile.read(length)
                    self.rfile.readline()
                    digest.update(chunk)
                    size += len(chunk)
            else:
                left = int(self.headers.get("Content-Length") or 0)
                while left:
                    chunk = self.rfile.read(min(left, CHUNK))
                    if not chunk:
                        break
                    digest.update(chunk)
                    size += len(chunk)
                    left -= len(chunk)
            return digest.hexdigest(), size

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _route

    return Handler

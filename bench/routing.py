"""Routing overhead: requests through ``/svc/NAME/`` vs. the same backends directly.

Starts, on free 127.0.0.1 ports with a temporary data directory:

* ``--backends`` backend processes, each a uvicorn server with a minimal ASGI app
  (``GET /?n=BYTES`` answers ``n`` bytes), so the backend is not the bottleneck;
* one ``dockyard server`` process (SQLite; node grace of an hour, so the agent-less
  node written below stays ``ready``).

It writes one ready node (address 127.0.0.1) and a service ``bench`` whose running
replicas publish the backends' ports straight into the server's store, then, for
each payload size, alternates ``--rounds`` rounds of *direct* (the client spreads
requests over the backends round robin) and *proxied* (``/svc/bench/``) load. A
round is ``--requests`` requests at ``--concurrency`` in flight from one asyncio
``httpx.AsyncClient`` (keep-alive), capped at ``--round-s`` seconds. Both sides
use the same client code in the same process, so what differs is the proxy hop.

Reported per payload and side: requests/s, p50/p99 latency (ms); and the
proxied/direct ratios (throughput: higher is better, latency: lower is better).
Written as JSON to ``--out`` (default ``bench/results/routing.json``).

Run: ``.venv/bin/python bench/routing.py [--requests 2000] [--concurrency 16]``
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from dockyard.store.db import Database, sqlite_url
from dockyard.store.tables import Node, Task, User, Workload
from dockyard.testing.cluster import free_port
from dockyard.testing.stats import percentile
from dockyard.testing.wait import wait_for

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "routing.json"
SERVICE = "bench"


# -- the backend (run as a subprocess: ``routing.py --backend PORT``) -----------
async def backend_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    query = scope.get("query_string", b"").decode()
    size = int(query[2:]) if query.startswith("n=") else 16
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(size).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"x" * size})


def serve_backend(port: int) -> None:
    import uvicorn

    uvicorn.run(backend_app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- helpers -----------------------------------------------------------------
def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


class Stack:
    """Backend processes and a dockyard server process, in a temp directory."""

    def __init__(self, backends: int) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dockyard-bench-routing-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend_ports = [free_port() for _ in range(backends)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self, args: list[str], log_name: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.root / log_name, "ab") as log:
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=env
                )
            )

    def start(self) -> None:
        for port in self.backend_ports:
            self._spawn([__file__, "--backend", str(port)], f"backend-{port}.log")
        self._spawn(
            [
                "-m",
                "dockyard",
                "server",
                "--data-dir",
                str(self.root / "server"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--gateway",
                f"tcp://127.0.0.1:{free_port()}",
                "--node-grace",
                "3600",
                "--insecure-open-join",
            ],
            "server.log",
        )
        wait_for(lambda: answers(f"{self.url}/healthz"), timeout=60, message="server health")
        for port in self.backend_ports:
            url = f"http://127.0.0.1:{port}/"
            wait_for(functools.partial(answers, url), timeout=30, message=f"backend {port}")
        self._write_service()
        wait_for(
            lambda: answers(f"{self.url}/svc/{SERVICE}/"), timeout=10, message="the service route"
        )

    def _write_service(self) -> None:
        db = Database(sqlite_url(self.root / "server"))
        now = time.time()
        try:
            with db.write() as session:
                owner = session.query(User.id).filter(User.name == "admin").scalar()
                session.add(
                    Node(
                        id="bench-node",
                        name="bench-node",
                        address="127.0.0.1",
                        driver="sim",
                        state="ready",
                        cpu_millis=1,
                        memory_bytes=1,
                        registered_at=now,
                        last_heartbeat_at=now,
                    )
                )
                spec = {
                    "name": SERVICE,
                    "image": "bench/backend:1",
                    "replicas": len(self.backend_ports),
                    "service_ports": [8080],
                }
                session.add(
                    Workload(
                        id="bench-svc",
                        owner_id=owner,
                        name=SERVICE,
                        kind="service",
                        spec=spec,
                        created_at=now,
                    )
                )
                session.flush()
                for index, port in enumerate(self.backend_ports):
                    session.add(
                        Task(
                            id=f"bench-r{index}",
                            workload_id="bench-svc",
                            owner_id=owner,
                            name=SERVICE,
                            image="bench/backend:1",
                            cpu_millis=0,
                            memory_bytes=0,
                            state="running",
                            desired_state="run",
                            node_id="bench-node",
                            created_at=now,
                            started_at=now,
                            port_map=[[8080, port]],
                        )
                    )
        finally:
            db.dispose()

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# -- load --------------------------------------------------------------------
async def run_round(
    client: httpx.AsyncClient,
    urls: Sequence[str],
    requests: int,
    concurrency: int,
    max_s: float,
    size: int,
) -> dict[str, Any]:
    """``requests`` GETs over ``urls`` round robin, ``concurrency`` at once, within ``max_s``."""
    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.monotonic() + max_s

    async def worker() -> None:
        nonlocal issued, errors
        while issued < requests and time.monotonic() < deadline:
            url = urls[issued % len(urls)]
            issued += 1
            start = time.perf_counter()
            try:
                response = await client.get(url, params={"n": size})
                ok = response.status_code == 200 and len(response.content) == size
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"latencies": latencies, "errors": errors, "seconds": time.perf_counter() - began}


async def measure(
    targets: dict[str, list[str]], size: int, count: int, args: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    """Alternate rounds of each side (order flipped every round), each on its own
    keep-alive client, after a warm-up round that is not counted."""
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    clients = {side: httpx.AsyncClient(limits=limits, timeout=30) for side in targets}
    sides: dict[str, list[dict[str, Any]]] = {side: [] for side in targets}
    try:
        for side, urls in targets.items():
            await run_round(clients[side], urls, 100, args.concurrency, 10, size)
        names = list(targets)
        for index in range(args.rounds):
            for side in names if index % 2 == 0 else reversed(names):
                sides[side].append(
                    await run_round(
                        clients[side], targets[side], count, args.concurrency, args.round_s, size
                    )
                )
    finally:
        for client in clients.values():
            await client.aclose()
    return sides


def side_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for r in rounds for x in r["latencies"]]
    seconds = sum(r["seconds"] for r in rounds)
    ms = [x * 1000 for x in latencies]
    return {
        "requests": len(latencies),
        "errors": sum(r["errors"] for r in rounds),
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(latencies) / seconds, 1) if seconds else None,
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--backends", type=int, default=2)
    parser.add_argument("--requests", type=int, default=2000, help="per round and side")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-s", type=float, default=15.0, help="cap per round")
    parser.add_argument("--sizes", default="100,1048576", help="response bytes, comma-separated")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.backend:
        serve_backend(args.backend)
        return

    stack = Stack(args.backends)
    started = time.time()
    results: dict[str, Any] = {}
    try:
        stack.start()
        direct = [f"http://127.0.0.1:{p}/" for p in stack.backend_ports]
        proxied = [f"{stack.url}/svc/{SERVICE}/"]
        for size in (int(s) for s in args.sizes.split(",")):
            # Large bodies: fewer requests, same time cap.
            count = args.requests if size <= 65536 else max(50, args.requests // 10)
            sides = asyncio.run(measure({"direct": direct, "proxied": proxied}, size, count, args))
            d, p = side_summary(sides["direct"]), side_summary(sides["proxied"])
            results[str(size)] = {
                "direct": d,
                "proxied": p,
                "ratios": {
                    "requests_per_s": ratio(p["requests_per_s"], d["requests_per_s"]),
                    "p50": ratio(p["p50_ms"], d["p50_ms"]),
                    "p99": ratio(p["p99_ms"], d["p99_ms"]),
                },
            }
            print(f"{size} B direct:  {d}")
            print(f"{size} B proxied: {p}")
            print(f"{size} B ratios:  {results[str(size)]['ratios']}")
    finally:
        stack.stop()
    report = {
        "benchmark": "routing",
        "started_at": started,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "params": {
            "backends": args.backends,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "round_s": args.round_s,
        },
        "sizes": results,
        "note": "ratios are proxied/direct: requests_per_s higher is better, latency lower",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    shutil.rmtree(stack.root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The REST API under load, with 10,000 jobs stored.

A real ``dockyard server`` process (SQLite) and one ``dockyard agent --driver
sim`` process with ``--nodes`` hollow nodes run on this machine. ``--jobs``
(10,000) no-op jobs are submitted in batches and run to completion (the queue is
drained), so the store holds them with their events. Then, against that store:

* **unloaded** latency, one request at a time: ``GET /api/v1/tasks/{id}`` (a
  random stored task), ``POST /api/v1/jobs`` (a no-op job, which then runs on the
  hollow nodes) and ``GET /api/v1/tasks?limit=10000`` (the whole list);
* a **paced mix**, 4 reads to 1 submit, open loop: at each rate of ``--rates``
  the requests are sent on a fixed schedule for ``--duration`` seconds from a
  pool of ``--clients`` keep-alive connections, and each latency is taken from
  the moment the request was *due* (so a server that falls behind is charged for
  the queue, not hidden by it). A rate is held when the read and submit p99s are
  within their targets, nothing failed, and at least 95% of the schedule was
  sent. The report names the highest rate held.

The load generator is plain ``http.client`` (cheap per request, so it takes as
little of the shared CPU as it can) in this process.

Reported: absolute p50/p99 per request kind and per rate, and the same rates per
reference kops (``dockyard.testing.stats``). JSON goes to
``bench/results/api.json``. Run: ``.venv/bin/python bench/api.py`` (``--jobs``,
``--rates``, ``--duration`` to resize; ``--server-arg=--api-workers=2`` passes
flags to the server).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

from dockyard.testing.cluster import ProcessCluster, task_count
from dockyard.testing.stats import (
    cpu_seconds,
    per_reference_kops,
    percentile,
    reference_ops_per_s,
    usable_cpus,
)
from dockyard.testing.wait import wait_for

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "api.json"
TARGET_READ_P99_MS = 10.0
TARGET_SUBMIT_P99_MS = 50.0
TARGET_LIST_P99_MS = 500.0
TARGET_MIX_PER_S = 500.0
#: Share of the schedule that must have been sent for a rate to count as held.
HELD_SENT_SHARE = 0.95


def job_body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": "busybox",
        "command": ["true"],
        "cpu": "10m",
        "memory": "8m",
        "env": {"DOCKYARD_SIM_RUN_FOR": "0"},
    }


class Api:
    """One keep-alive connection (not thread-safe: one per load thread)."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = {"Authorization": f"Bearer {token}"}
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> int:
        """The response's status (its body read and dropped); 0 on a connection error."""
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            return 0


def ms(values: list[float]) -> dict[str, float | int]:
    return {
        "n": len(values),
        "p50_ms": 1000 * percentile(values, 50),
        "p99_ms": 1000 * percentile(values, 99),
        "max_ms": 1000 * max(values) if values else float("nan"),
    }


def unloaded(
    api: Api, ids: list[str], reads: int, submits: int, lists: int
) -> dict[str, dict[str, float | int]]:
    """Latency of one request at a time, per kind."""
    rng = random.Random(1)
    out: dict[str, dict[str, float | int]] = {}
    runs: list[tuple[str, int, Callable[[int], tuple[str, str, dict[str, Any] | None]]]] = [
        ("read", reads, lambda i: ("GET", f"/api/v1/tasks/{rng.choice(ids)}", None)),
        ("submit", submits, lambda i: ("POST", "/api/v1/jobs", job_body(f"unloaded-{i}"))),
        ("list_10000", lists, lambda i: ("GET", "/api/v1/tasks?limit=10000", None)),
    ]
    for kind, n, make in runs:
        times: list[float] = []
        errors = 0
        for i in range(n):
            method, path, body = make(i)
            started = time.perf_counter()
            status = api.call(method, path, body)
            times.append(time.perf_counter() - started)
            errors += status >= 400 or status == 0
        out[kind] = {**ms(times), "errors": errors}
    return out


@dataclass
class MixResult:
    rate: float
    duration_s: float
    sent: int = 0
    reads: list[float] = field(default_factory=list)
    submits: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def summary(self, reference: float) -> dict[str, Any]:
        planned = int(self.rate * self.duration_s)
        read, submit = ms(self.reads), ms(self.submits)
        held = (
            self.errors == 0
            and self.sent >= HELD_SENT_SHARE * planned
            and len(self.reads) > 0
            and len(self.submits) > 0
            and float(read["p99_ms"]) <= TARGET_READ_P99_MS
            and float(submit["p99_ms"]) <= TARGET_SUBMIT_P99_MS
        )
        return {
            "rate_per_s": self.rate,
            "rate_per_reference_kops": per_reference_kops(self.rate, reference),
            "planned": planned,
            "sent": self.sent,
            "completed": len(self.reads) + len(self.submits),
            "errors": self.errors,
            "error_statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "read": read,
            "submit": submit,
            "held": held,
        }


def mix(
    url: str, token: str, ids: list[str], rate: float, duration: float, clients: int, tag: str
) -> MixResult:
    """Requests on a fixed schedule (4 reads : 1 submit) for ``duration`` seconds."""
    result = MixResult(rate, duration)
    lock = threading.Lock()
    pool: queue.SimpleQueue[Api] = queue.SimpleQueue()
    for _ in range(clients):
        pool.put(Api(url, token))
    rng = random.Random(int(rate))

    def one(index: int, due: float) -> None:
        api = pool.get()
        try:
            is_submit = index % 5 == 4
            if is_submit:
                status = api.call("POST", "/api/v1/jobs", job_body(f"mix-{tag}-{index}"))
            else:
                status = api.call("GET", f"/api/v1/tasks/{ids[index % len(ids)]}")
            latency = time.perf_counter() - due  # from when it was due: queueing counts
        finally:
            pool.put(api)
        with lock:
            if status >= 400 or status == 0:
                result.errors += 1
                result.statuses[status] = result.statuses.get(status, 0) + 1
            else:
                (result.submits if is_submit else result.reads).append(latency)

    ids = list(ids)
    rng.shuffle(ids)
    interval = 1.0 / rate
    with ThreadPoolExecutor(clients) as executor:
        start = time.perf_counter()
        end = start + duration
        index = 0
        while True:
            due = start + index * interval
            if due >= end:
                break
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            # A generator that cannot keep up stops sending rather than queue without end.
            if time.perf_counter() - due > 2.0:
                break
            executor.submit(one, index, due)
            index += 1
        result.sent = index
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--reads", type=int, default=1000, help="unloaded reads")
    parser.add_argument("--submits", type=int, default=300, help="unloaded submits")
    parser.add_argument("--lists", type=int, default=20, help="unloaded lists of all")
    parser.add_argument("--rates", default="50,100,200,400,500,700")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per rate")
    parser.add_argument("--clients", type=int, default=64, help="load connections")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra `dockyard server` flag"
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r]
    cluster = ProcessCluster(driver="sim", heartbeat=1.0, node_grace=10.0)
    cluster.server_args = list(args.server_arg)
    cluster.start_server()
    try:
        cluster.agent_args = ["--nodes", str(args.nodes), "--cpu", "64", "--memory", "256g"]
        cluster.start_agent("hollow")
        cluster.wait_ready_nodes(args.nodes, timeout=120)
        token = cluster.admin_token
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=cluster.url, headers=headers, timeout=120) as http:
            started = time.perf_counter()
            for first in range(0, args.jobs, 500):
                jobs = [job_body(f"stored-{i}") for i in range(first, min(first + 500, args.jobs))]
                http.post("/api/v1/jobs/batch", json={"jobs": jobs}).raise_for_status()
            wait_for(
                lambda: task_count(http, state="succeeded") >= args.jobs,
                timeout=args.timeout,
                interval=0.5,
                message="stored jobs succeeded",
            )
            print(f"{args.jobs} jobs stored and run in {time.perf_counter() - started:.1f}s")
            listed = http.get("/api/v1/tasks", params={"limit": 10_000})
            ids = [t["id"] for t in listed.json()]
        assert cluster.server_proc is not None
        server = psutil.Process(cluster.server_proc.pid)

        def server_procs() -> list[psutil.Process]:  # with any API worker processes
            return [server, *server.children(recursive=True)]

        reference = reference_ops_per_s()  # before the load, while the cluster idles
        api = Api(cluster.url, token)
        cpu0 = cpu_seconds(server_procs())
        single = unloaded(api, ids, args.reads, args.submits, args.lists)
        cpu_unloaded = cpu_seconds(server_procs()) - cpu0
        print(json.dumps(single, indent=2))
        rounds = []
        for rate in rates:
            cpu0 = cpu_seconds(server_procs())
            outcome = mix(cluster.url, token, ids, rate, args.duration, args.clients, f"{rate:g}")
            summary = outcome.summary(reference)
            summary["server_cpu_s"] = cpu_seconds(server_procs()) - cpu0
            summary["load_average_1m"] = os.getloadavg()[0]
            rounds.append(summary)
            print(
                f"{rate:>6g}/s sent {summary['sent']} errors {summary['errors']} "
                f"read p99 {summary['read']['p99_ms']:.1f} ms "
                f"submit p99 {summary['submit']['p99_ms']:.1f} ms held={summary['held']}"
            )
            wait_for(  # let the submitted jobs run before the next rate
                lambda: _quiet(cluster.url, headers), timeout=120, interval=0.5, message="drain"
            )
        held = [r["rate_per_s"] for r in rounds if r["held"]]
        best = max(held) if held else 0.0
        targets = {
            "read_p99_ms": TARGET_READ_P99_MS,
            "submit_p99_ms": TARGET_SUBMIT_P99_MS,
            "list_10000_p99_ms": TARGET_LIST_P99_MS,
            "mix_per_s": TARGET_MIX_PER_S,
        }
        met = {
            "read_p99": float(single["read"]["p99_ms"]) <= TARGET_READ_P99_MS,
            "submit_p99": float(single["submit"]["p99_ms"]) <= TARGET_SUBMIT_P99_MS,
            "list_10000_p99": float(single["list_10000"]["p99_ms"]) <= TARGET_LIST_P99_MS,
            "mix": best >= TARGET_MIX_PER_S,
        }
        result = {
            "benchmark": "api",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"python": platform.python_version(), "cpus": usable_cpus()},
            "shape": {
                "jobs_stored": args.jobs,
                "hollow_nodes": args.nodes,
                "store": "sqlite (WAL)",
                "server_args": args.server_arg,
                "mix": "4 GET /api/v1/tasks/{id} : 1 POST /api/v1/jobs, open loop",
                "seconds_per_rate": args.duration,
                "load_connections": args.clients,
            },
            "unloaded": single,
            "unloaded_server_cpu_ms_per_request": 1000
            * cpu_unloaded
            / (args.reads + args.submits + args.lists),
            "mix": rounds,
            "highest_rate_held_per_s": best,
            "highest_rate_held_per_reference_kops": per_reference_kops(best, reference),
            "targets": targets,
            "met": met,
            "meets_targets": all(met.values()),
            "reference_ops_per_s": reference,
            "load_average_1m_at_end": os.getloadavg()[0],
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k != "mix"}, indent=2))
        print(f"\nwrote {args.out}")
        return 0
    finally:
        cluster.close()


def _quiet(url: str, headers: dict[str, str]) -> bool:
    """No task is waiting or running (the mix's submissions have run)."""
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        return task_count(http, active="true") == 0


if __name__ == "__main__":
    raise SystemExit(main())

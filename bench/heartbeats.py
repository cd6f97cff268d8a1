"""Heartbeat capacity benchmark (issue 4): how many heartbeats/s one server handles.

Starts a real ``dockyard server`` process on 127.0.0.1 and ``--procs`` load
processes, each holding its share of ``--nodes`` hollow nodes: one ZeroMQ
DEALER socket per node, registered with a real ``hello`` (the server writes the
node to its store and answers ``welcome``). Then, in steps of increasing
target rate, the load processes send heartbeats round-robin over their nodes,
paced to the target, each stamped with ``sent_at``.

Per step, from the server's own ``/metrics``:

* received rate (``dockyard_gateway_heartbeats`` delta / step time);
* p50 / p99 heartbeat lag (``dockyard_heartbeat_lag_seconds``: send -> handled,
  including queueing in the socket; bucket upper bounds);
* the server's CPU-seconds per heartbeat and bytes written to disk per heartbeat
  (psutil: the process's ``cpu_times`` and ``io_counters``).

A step is *sustained* when the server received >= 95 % of what was sent and the
p99 lag is <= 50 ms. The result is the highest sustained rate, plus
``heartbeats_per_server_cpu_second`` (the rate one core would sustain at the
measured cost, which does not depend on how much CPU the load processes took
from the server on this 2-core machine), and the server's resident memory per
registered hollow node. Targets (issue 4): >= 20,000 heartbeats/s on one core,
no disk write per heartbeat, <= 100 KB per hollow node.

Usage::

    .venv/bin/python bench/heartbeats.py [--nodes 2000] [--procs 2] [--step-s 4]
        [--rates 2000,5000,10000,20000,30000,40000] [--out FILE]
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import psutil
import zmq
from prometheus_client.parser import text_string_to_metric_families

from dockyard.protocol.messages import Desired, Heartbeat, Hello, Welcome, decode, encode
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.stats import cpu_seconds
from dockyard.testing.wait import WaitTimeout, wait_for

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LAG = "dockyard_heartbeat_lag_seconds"
BEATS = "dockyard_gateway_heartbeats"


# -- load process -------------------------------------------------------------
def _raise_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def load_process(endpoint: str, node_ids: list[str], ctl: Connection) -> None:
    """Register ``node_ids``, then send heartbeats at the rates the parent asks for."""
    _raise_fd_limit(4 * len(node_ids) + 256)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context(io_threads=1)
    ctx.setsockopt(zmq.MAX_SOCKETS, 4 * len(node_ids) + 256)
    socks: list[zmq.Socket[bytes]] = []
    poller = zmq.Poller()
    for node_id in node_ids:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, node_id.encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.connect(endpoint)
        socks.append(sock)
        poller.register(sock, zmq.POLLIN)
    welcomed: set[int] = set()
    generations: dict[int, int] = {}
    deadline = time.monotonic() + 120
    next_hello = 0.0
    while len(welcomed) < len(socks) and time.monotonic() < deadline:
        if time.monotonic() >= next_hello:  # (re)send hello to those not welcomed yet
            for i, sock in enumerate(socks):
                if i not in welcomed:
                    hello = Hello(
                        node_id=node_ids[i],
                        name=node_ids[i],
                        address="127.0.0.1",
                        driver="sim",
                        version="bench",
                        cpu_millis=4000,
                        memory_bytes=8 << 30,
                    )
                    try:
                        sock.send(encode(hello), zmq.NOBLOCK)
                    except zmq.Again:  # not connected yet: the next round re-sends
                        pass
            next_hello = time.monotonic() + 5
        for sock, _ in poller.poll(200):
            while True:
                try:
                    msg, _ = decode(sock.recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
                if isinstance(msg, Welcome):
                    welcomed.add(socks.index(sock))
                elif isinstance(msg, Desired):  # as a real agent: hold this generation
                    generations[socks.index(sock)] = msg.generation
    settle = time.monotonic() + 10  # the desired sets that follow the last welcomes
    while len(generations) < len(socks) and time.monotonic() < settle:
        for sock, _ in poller.poll(200):
            try:
                while True:
                    msg, _ = decode(sock.recv(zmq.NOBLOCK))
                    if isinstance(msg, Desired):
                        generations[socks.index(sock)] = msg.generation
            except zmq.Again:
                pass
    ctl.send({"registered": len(welcomed), "rss": psutil.Process().memory_info().rss})
    drain = list(socks)
    while True:
        order = ctl.recv()
        if order is None:
            break
        rate, duration = float(order["rate"]), float(order["duration"])
        sent = 0
        start = time.perf_counter()
        i = 0
        n = len(socks)
        while True:
            elapsed = time.perf_counter() - start
            if elapsed >= duration:
                break
            due = int(rate * elapsed) - sent
            for _ in range(min(due, 2000)):
                beat = Heartbeat(
                    node_id=node_ids[i],
                    sent_at=time.time(),
                    generation=generations.get(i, 1),
                    cpu_percent=1.0,
                    memory_bytes=1 << 20,
                    running=0,
                    unacked=0,
                )
                try:
                    socks[i].send(encode(beat), zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:
                    pass
                i = (i + 1) % n
            if due <= 0:
                time.sleep(0.0005)
        for sock in drain:  # discard anything the server sent (none expected)
            try:
                while sock.recv(zmq.NOBLOCK):
                    pass
            except zmq.Again:
                pass
        ctl.send({"sent": sent, "seconds": time.perf_counter() - start})
    for sock in socks:
        sock.close(0)
    ctx.term()


# -- measuring ----------------------------------------------------------------
def scrape(url: str, token: str) -> tuple[float, dict[float, float]]:
    """(heartbeats received, lag histogram cumulative buckets) from /metrics."""
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {token}"}).text
    beats = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == BEATS:
            beats = sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == LAG:
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    buckets[float(s.labels["le"])] = s.value
    return beats, buckets


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """Upper bound of the bucket holding quantile ``q`` of the observations in between."""
    bounds = sorted(after)
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for bound in bounds:
        if after[bound] - before.get(bound, 0.0) >= q * total:
            return bound
    return float("inf")


def _drained(url: str, token: str, beats0: float, sent: int) -> bool:
    """The server has counted (nearly) every heartbeat sent in the step."""
    return scrape(url, token)[0] - beats0 >= sent * 0.999


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--procs", type=int, default=2, help="load processes")
    parser.add_argument("--step-s", type=float, default=4.0, help="seconds per rate step")
    parser.add_argument("--rates", default="2000,5000,10000,20000,30000,40000")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "heartbeats.json")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.nodes < args.procs or args.procs < 1 or not rates or args.step_s <= 0:
        parser.error("need --nodes >= --procs >= 1, some --rates and --step-s > 0")

    root = Path(tempfile.mkdtemp(prefix="dockyard-bench-heartbeats-"))
    # A long grace: this measures handling, not liveness (no node may go down meanwhile).
    # Plaintext gateway (no CURVE): this measures message handling; CURVE's cost is
    # the encryption in libzmq's I/O thread, outside the gateway thread measured here.
    cluster = ProcessCluster(
        root=root,
        heartbeat=1.0,
        node_grace=600.0,
        driver="sim",
        server_args=["--insecure-open-join"],
    )
    result: dict[str, Any] = {
        "benchmark": "heartbeats",
        "started_at": time.time(),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "params": {"nodes": args.nodes, "procs": args.procs, "step_s": args.step_s},
    }
    procs: list[Any] = []  # spawn-context processes
    pipes: list[Connection] = []
    try:
        cluster.start_server()
        assert cluster.server_proc is not None
        server = psutil.Process(cluster.server_proc.pid)
        token = cluster.admin_token
        rss_before = server.memory_info().rss
        spawn = mp.get_context("spawn")
        ids = [f"n-hb{i:06d}" for i in range(args.nodes)]
        for p in range(args.procs):
            parent, child = spawn.Pipe()
            proc = spawn.Process(
                target=load_process, args=(cluster.gateway, ids[p :: args.procs], child)
            )
            proc.start()
            procs.append(proc)
            pipes.append(parent)
        t0 = time.monotonic()
        hellos = [pipe.recv() for pipe in pipes]
        registered = sum(h["registered"] for h in hellos)
        # one heartbeat from every node, so each is known to the gateway as ready
        for pipe in pipes:
            pipe.send({"rate": args.nodes / args.procs, "duration": 1.0})
        for pipe in pipes:
            pipe.recv()
        wait_for(
            lambda: scrape(cluster.url, token)[0] >= args.nodes * 0.99,
            timeout=60,
            message="first heartbeats",
        )
        rss_after = server.memory_info().rss
        result["registration"] = {
            "nodes": registered,
            "seconds": round(time.monotonic() - t0, 2),
            "server_rss_before_mb": round(rss_before / 2**20, 1),
            "server_rss_after_mb": round(rss_after / 2**20, 1),
            "server_bytes_per_node": round((rss_after - rss_before) / max(1, registered)),
            "load_process_bytes_per_node": round(
                sum(h["rss"] for h in hellos) / max(1, registered)
            ),
        }
        print(f"registered {registered} hollow nodes: {result['registration']}")

        steps: list[dict[str, Any]] = []
        for rate in rates:
            beats0, lag0 = scrape(cluster.url, token)
            cpu0 = cpu_seconds([server])
            io0 = server.io_counters().write_bytes
            t = time.monotonic()
            for pipe in pipes:
                pipe.send({"rate": rate / args.procs, "duration": args.step_s})
            reports = [pipe.recv() for pipe in pipes]
            sent = sum(r["sent"] for r in reports)
            # let the server drain what is queued (bounded), then measure
            try:
                wait_for(
                    functools.partial(_drained, cluster.url, token, beats0, sent),
                    timeout=10,
                    message="drain",
                )
            except WaitTimeout:
                pass  # not all arrived: the step reports it (received < sent)
            seconds = time.monotonic() - t
            beats1, lag1 = scrape(cluster.url, token)
            cpu = cpu_seconds([server]) - cpu0
            written = server.io_counters().write_bytes - io0
            received = beats1 - beats0
            p50, p99 = quantile(lag0, lag1, 0.50), quantile(lag0, lag1, 0.99)
            step = {
                "target_per_s": rate,
                "sent": sent,
                "received": int(received),
                "received_per_s": round(received / seconds, 1),
                "lag_p50_ms": None if p50 is None else round(p50 * 1000, 2),
                "lag_p99_ms": None if p99 is None else round(p99 * 1000, 2),
                "server_cpu_s": round(cpu, 3),
                "server_cpu_us_per_heartbeat": round(cpu / max(1, received) * 1e6, 1),
                "disk_bytes_per_heartbeat": round(written / max(1, received), 2),
            }
            step["sustained"] = bool(received >= 0.95 * sent and p99 is not None and p99 <= 0.050)
            steps.append(step)
            print(json.dumps(step))
            if not step["sustained"]:
                break
        sustained = [s for s in steps if s["sustained"]]
        best = max(sustained, key=lambda s: s["received_per_s"]) if sustained else None
        costs = [s["server_cpu_us_per_heartbeat"] for s in steps if s["received"] > 1000]
        per_core = round(1e6 / min(costs)) if costs else None
        result["steps"] = steps
        result["summary"] = {
            "max_sustained_per_s": best["received_per_s"] if best else 0,
            "max_sustained_lag_p99_ms": best["lag_p99_ms"] if best else None,
            "heartbeats_per_server_cpu_second": per_core,
            "server_bytes_per_node": result["registration"]["server_bytes_per_node"],
            "targets": {
                "per_s": 20000,
                "p99_ms": 50,
                "bytes_per_node": 100_000,
                "met": bool(
                    best
                    and (best["received_per_s"] >= 20000 or (per_core or 0) >= 20000)
                    and result["registration"]["server_bytes_per_node"] <= 100_000
                ),
            },
        }
        print(json.dumps(result["summary"], indent=2))
    finally:
        for pipe in pipes:
            try:
                pipe.send(None)
            except (BrokenPipeError, OSError):
                pass
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

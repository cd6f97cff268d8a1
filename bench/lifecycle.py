"""Task lifecycle throughput: no-op tasks from submit to done on 100 hollow nodes.

A real ``dockyard server`` process and ``--agent-procs`` (default 4)
``dockyard agent --driver sim --nodes N`` processes sharing ``--nodes`` (100)
hollow nodes, each its own ZeroMQ identity with heartbeats, run on this machine.
(One process holding all 100 nodes, ~1,000 threads under one GIL, measures that
process more than the control plane: ``--agent-procs 1``.)
The benchmark submits ``--tasks`` no-op jobs
(``DOCKYARD_SIM_RUN_FOR=0``) through the REST API from ``--submitters``
threads — ``--batch`` jobs per request (``POST /api/v1/jobs/batch``; 1 means
one ``POST /api/v1/jobs`` per job) — then waits until every task has
succeeded. Each task goes the whole way: API -> store -> scheduler pass ->
desired set over ZeroMQ -> hollow container start -> status reports (running, succeeded) -> store.

Reported: tasks/s end to end (first submit to last task done), the submit rate
alone, and the drain rate after the last submit. JSON goes to
``bench/results/lifecycle.json``.

Run: ``.venv/bin/python bench/lifecycle.py`` (``--tasks``, ``--nodes``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from dockyard.testing.cluster import ProcessCluster, task_count
from dockyard.testing.stats import (
    cpu_seconds,
    per_reference_kops,
    reference_ops_per_s,
    usable_cpus,
)
from dockyard.testing.wait import wait_for

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "lifecycle.json"
#: Issue 19's targets: tasks/s per reference kops, and the server's CPU per task.
TARGET_PER_REFERENCE_KOPS = 10.0
TARGET_SERVER_CPU_MS_PER_TASK = 0.4


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument(
        "--agent-procs",
        type=int,
        default=4,
        help="agent processes the hollow nodes are spread over (a real node runs its own)",
    )
    parser.add_argument("--submitters", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100, help="jobs per request (1: single)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    procs = max(1, min(args.agent_procs, args.nodes))
    per_proc = [args.nodes // procs + (1 if i < args.nodes % procs else 0) for i in range(procs)]
    cluster = ProcessCluster(driver="sim", heartbeat=1.0, node_grace=10.0)
    cluster.start_server()
    try:
        for index, nodes in enumerate(per_proc):
            cluster.agent_args = ["--nodes", str(nodes), "--cpu", "16", "--memory", "64g"]
            cluster.start_agent(f"hollow{index}")
        cluster.wait_ready_nodes(args.nodes, timeout=120)
        print(f"{args.nodes} hollow nodes ready ({cluster.root})")
        headers = {"Authorization": f"Bearer {cluster.admin_token}"}
        local = threading.local()

        def body(index: int) -> dict[str, object]:
            return {
                "name": f"noop-{index}",
                "image": "busybox",
                "command": ["true"],
                "cpu": "100m",
                "memory": "16m",
                "env": {"DOCKYARD_SIM_RUN_FOR": "0"},
            }

        def submit(first: int) -> None:
            http = getattr(local, "http", None)
            if http is None:
                http = local.http = httpx.Client(base_url=cluster.url, headers=headers, timeout=60)
            if args.batch == 1:
                http.post("/api/v1/jobs", json=body(first)).raise_for_status()
                return
            last = min(first + args.batch, args.tasks)
            jobs = [body(i) for i in range(first, last)]
            http.post("/api/v1/jobs/batch", json={"jobs": jobs}).raise_for_status()

        assert cluster.server_proc is not None
        server = psutil.Process(cluster.server_proc.pid)
        agents = [psutil.Process(p.pid) for p in cluster.agents.values()]
        me = psutil.Process()

        def cpu_now() -> list[float]:  # server, agents, this load generator
            return [cpu_seconds([server]), cpu_seconds(agents), cpu_seconds([me])]

        reference = reference_ops_per_s()  # before the run, while the cluster idles
        cpu0 = cpu_now()
        started = time.perf_counter()
        with ThreadPoolExecutor(args.submitters) as pool:
            list(pool.map(submit, range(0, args.tasks, max(args.batch, 1))))
        submitted = time.perf_counter()
        print(f"submitted {args.tasks} in {submitted - started:.1f}s")
        with httpx.Client(base_url=cluster.url, headers=headers, timeout=60) as http:
            wait_for(
                lambda: task_count(http, state="succeeded") >= args.tasks,
                timeout=args.timeout,
                interval=0.2,
                message="all tasks succeeded",
            )
            done = time.perf_counter()
            cpu = [b - a for a, b in zip(cpu0, cpu_now(), strict=True)]
            failed = sum(task_count(http, state=s) for s in ("failed", "lost", "killed"))
        total = done - started
        rate = args.tasks / total
        result = {
            "benchmark": "lifecycle",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"python": platform.python_version(), "cpus": usable_cpus()},
            "shape": {
                "tasks": args.tasks,
                "hollow_nodes": args.nodes,
                "agent_processes": procs,
                "submitters": args.submitters,
                "jobs_per_request": args.batch,
                "store": "sqlite (WAL)",
            },
            "tasks_per_s": rate,
            "targets": {
                "tasks_per_s_per_reference_kops": TARGET_PER_REFERENCE_KOPS,
                "server_cpu_ms_per_task": TARGET_SERVER_CPU_MS_PER_TASK,
            },
            "meets_target": per_reference_kops(rate, reference) >= TARGET_PER_REFERENCE_KOPS
            and 1000 * cpu[0] / args.tasks <= TARGET_SERVER_CPU_MS_PER_TASK,
            "submit_per_s": args.tasks / (submitted - started),
            "drain_after_submit_s": done - submitted,
            "total_s": total,
            # Where the machine's CPU went during the run (user + system seconds):
            # the server's share per task is what bounds it on a dedicated core.
            "cpu_s": {"server": cpu[0], "agents": cpu[1], "load_generator": cpu[2]},
            "server_cpu_ms_per_task": 1000 * cpu[0] / args.tasks,
            "tasks_per_server_cpu_s": args.tasks / cpu[0] if cpu[0] else None,
            # The machine's speed on a fixed workload, measured in this run: compare
            # runs on different machines by tasks_per_s_per_reference_kops.
            "reference_ops_per_s": reference,
            "tasks_per_s_per_reference_kops": per_reference_kops(rate, reference),
            "not_succeeded": failed,
            "load_average_1m_at_end": os.getloadavg()[0],
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        print(f"\nwrote {args.out}")
        return 0 if failed == 0 else 1
    finally:
        cluster.close()


if __name__ == "__main__":
    raise SystemExit(main())

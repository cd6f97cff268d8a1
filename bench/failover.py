"""Failover benchmark (issue 4): how fast a lost node's tasks are replaced.

Runs a real ``dockyard server`` process and N ``dockyard agent --driver sim``
processes (hollow nodes) on 127.0.0.1, submits M long-running jobs, waits until
every one is running, then SIGKILLs one agent per round and measures, from the
server's own records:

* kill -> ``node_down`` event (detection, from the kill time taken here), and
  the server's last recorded heartbeat of the victim -> ``node_down``;
* ``node_down`` -> each replacement ``assigned`` (its ``assigned_at``);
* ``node_down`` -> each replacement ``running`` (its ``started_at``);

and checks that each lost task was replaced exactly once, that no replacement
went to the dead node, and that every job has exactly one live task afterwards.

All timestamps compared are wall-clock ``time.time()`` values from the same
machine (the server stamps events and task times with its receive time).

Usage::

    .venv/bin/python bench/failover.py [--nodes 20] [--tasks 1000] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.stats import cpu_seconds, percentile
from dockyard.testing.wait import wait_for

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PLACED = ("assigned", "pulling", "starting", "running")
TERMINAL = ("succeeded", "failed", "killed", "lost", "expired")
#: The gateway flushes buffered heartbeats to the store this often (server/gateway.py).
HEARTBEAT_FLUSH_S = 2.0


def summary(values: list[float]) -> dict[str, Any]:
    def r(x: float | None) -> float | None:
        return None if x is None or math.isnan(x) else round(x, 4)

    return {
        "n": len(values),
        "min": r(min(values, default=None)),
        "p50": r(percentile(values, 50)),
        "p99": r(percentile(values, 99)),
        "max": r(max(values, default=None)),
    }


class Api:
    """Thin REST access (the SDK's ``tasks()`` has no ``limit``; this bench needs all tasks)."""

    def __init__(self, url: str, token: str) -> None:
        self._http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, **params: Any) -> Any:
        response = self._http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self._http.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def tasks(self, *states: str) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": 10_000}
        if states:
            params["state"] = list(states)
        return list(self.get("/api/v1/tasks", **params))

    def nodes(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/nodes"))

    def events(self, after: int = 0, node: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            params: dict[str, Any] = {"after": after, "limit": 10_000}
            if node:
                params["node"] = node
            page = list(self.get("/api/v1/events", **params))
            out.extend(page)
            if len(page) < 10_000:
                return out
            after = int(page[-1]["id"])


def submit(cluster: ProcessCluster, count: int, cpu: str, memory: str, workers: int) -> float:
    """Submit ``count`` jobs that run until killed; returns the seconds it took."""
    local = threading.local()
    clients: list[Api] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        api = getattr(local, "api", None)
        if api is None:
            api = local.api = Api(cluster.url, cluster.admin_token)
            with lock:
                clients.append(api)
        api.post(
            "/api/v1/jobs",
            {
                "name": f"fo-{index:05d}",
                "image": "bench/hollow:1",
                "command": ["sleep", "3600"],
                "cpu": cpu,
                "memory": memory,
            },
        )

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, range(count)))
    finally:
        for api in clients:
            api.close()
    return time.monotonic() - started


def process_stats(procs: Iterable[psutil.Process], window_s: float) -> dict[str, Any]:
    """Total CPU (percent of one core) over ``window_s`` and RSS of some processes."""
    alive = [p for p in procs if p.is_running()]
    before = cpu_seconds(alive)
    time.sleep(window_s)
    cpu = cpu_seconds(alive) - before
    rss = [p.memory_info().rss for p in alive]
    return {
        "processes": len(alive),
        "cpu_percent_of_one_core": round(100 * cpu / window_s, 1),
        "rss_mib_total": round(sum(rss) / 2**20, 1),
        "rss_mib_each_mean": round(sum(rss) / max(1, len(rss)) / 2**20, 1),
    }


def run_round(
    cluster: ProcessCluster,
    api: Api,
    victim: str,
    node_ids: dict[str, str],
    expected_running: int,
    timeout: float,
) -> dict[str, Any]:
    victim_id = node_ids[victim]
    before = api.tasks()
    on_victim = {t["id"] for t in before if t["node_id"] == victim_id and t["state"] in PLACED}
    # tasks live at the start of the round (earlier rounds' lost tasks are not "other")
    known_ids = {t["id"] for t in before if t["state"] in PLACED}
    cursor = max((int(e["id"]) for e in api.events()), default=0)

    kill_wall = time.time()
    kill_mono = time.monotonic()
    cluster.stop_agent(victim, signal.SIGKILL)

    def victim_down() -> bool:
        return any(n["id"] == victim_id and n["state"] == "down" for n in api.nodes())

    wait_for(victim_down, timeout=timeout, interval=0.05, message=f"{victim} down")
    seen_down_mono = time.monotonic()

    def replaced_and_running() -> list[dict[str, Any]] | None:
        tasks = api.tasks()
        repl = [t for t in tasks if t["previous_task_id"] in on_victim]
        done = len(repl) >= len(on_victim) and all(t["state"] == "running" for t in repl)
        return tasks if done else None

    tasks = wait_for(
        replaced_and_running,
        timeout=timeout,
        interval=0.25,
        message=f"replacements of {len(on_victim)} tasks running",
    )
    all_running_mono = time.monotonic()
    # The victim's last heartbeat reaches the store at the next bulk flush.
    time.sleep(max(0.0, kill_mono + HEARTBEAT_FLUSH_S + 0.5 - time.monotonic()))
    victim_node = next(n for n in api.nodes() if n["id"] == victim_id)
    events = api.events(after=cursor)
    tasks = api.tasks()

    def first(reason: str) -> float | None:
        return next(
            (
                float(e["at"])
                for e in events
                if e["node_id"] == victim_id and e["kind"] == "node" and e["reason"] == reason
            ),
            None,
        )

    down_at = first("node_down")
    suspect_at = first("node_suspect")
    last_hb = float(victim_node["last_heartbeat_at"])
    by_id = {t["id"]: t for t in tasks}
    replacements: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in tasks:
        if t["previous_task_id"]:
            replacements[t["previous_task_id"]].append(t)
    lost_ok = [
        by_id[tid]["state"] == "lost" and by_id[tid]["reason"] == "node_lost" for tid in on_victim
    ]
    counts = Counter(len(replacements.get(tid, [])) for tid in on_victim)
    repl = [r for tid in on_victim for r in replacements.get(tid, [])]
    newly_lost = {
        t["id"] for t in tasks if t["state"] == "lost" and t["id"] in known_ids
    } - on_victim
    live_per_job = Counter(t["workload_id"] for t in tasks if t["state"] not in TERMINAL)
    running = sum(1 for t in tasks if t["state"] == "running")
    placed = [float(r["assigned_at"]) - down_at for r in repl if down_at and r["assigned_at"]]
    started = [float(r["started_at"]) - down_at for r in repl if down_at and r["started_at"]]
    return {
        "victim": victim,
        "victim_node_id": victim_id,
        "lost_tasks": len(on_victim),
        "times_wall": {
            "kill": round(kill_wall, 4),
            "server_last_heartbeat": round(last_hb, 4),
            "node_suspect_event": suspect_at,
            "node_down_event": down_at,
        },
        "detection_s": {
            "from_kill": None if down_at is None else round(down_at - kill_wall, 4),
            "from_server_last_heartbeat": None if down_at is None else round(down_at - last_hb, 4),
            "last_heartbeat_before_kill_s": round(kill_wall - last_hb, 4),
            "seen_by_bench_after_kill_s": round(seen_down_mono - kill_mono, 4),
        },
        "placed_after_detection_s": summary(placed),
        "running_after_detection_s": summary(started),
        "all_running_seen_by_bench_after_kill_s": round(all_running_mono - kill_mono, 3),
        "checks": {
            "every_lost_task_marked_node_lost": all(lost_ok),
            "replacements_per_lost_task": {str(k): v for k, v in sorted(counts.items())},
            "each_lost_task_replaced_exactly_once": counts == Counter({1: len(on_victim)}),
            "replacements_on_dead_node": sum(1 for r in repl if r["node_id"] == victim_id),
            "other_tasks_lost": len(newly_lost),
            "jobs_with_more_than_one_live_task": sum(1 for c in live_per_job.values() if c > 1),
            "jobs_with_a_live_task": len(live_per_job),
            "running_tasks": running,
            "running_tasks_expected": expected_running,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="agents killed, one per round")
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--grace", type=float, default=3.0)
    parser.add_argument("--cpu", default="40m", help="per task (sim nodes have 4 cores)")
    parser.add_argument("--memory", default="16m", help="per task (sim nodes have 8 GiB)")
    parser.add_argument("--submit-workers", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=180.0, help="per wait")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not 1 <= args.rounds < args.nodes:
        parser.error("--rounds must be at least 1 and less than --nodes")

    root = Path(tempfile.mkdtemp(prefix="dockyard-bench-failover-"))
    cluster = ProcessCluster(
        root=root, heartbeat=args.heartbeat, node_grace=args.grace, driver="sim"
    )
    result: dict[str, Any] = {
        "benchmark": "failover",
        "started_at": time.time(),
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "config": {
            "nodes": args.nodes,
            "tasks": args.tasks,
            "rounds": args.rounds,
            "heartbeat_s": args.heartbeat,
            "node_grace_s": args.grace,
            "task_cpu": args.cpu,
            "task_memory": args.memory,
            "driver": "sim (dockyard agent --driver sim, one process per node)",
            "server": "dockyard server process, SQLite",
        },
    }
    api: Api | None = None
    try:
        t0 = time.monotonic()
        cluster.start_server()
        names = [f"hollow-{i + 1:02d}" for i in range(args.nodes)]
        for name in names:
            cluster.start_agent(name)
        cluster.wait_ready_nodes(args.nodes, timeout=args.timeout)
        node_ids = {name: cluster.node_id(name) for name in names}
        api = Api(cluster.url, cluster.admin_token)
        setup: dict[str, Any] = {"cluster_ready_s": round(time.monotonic() - t0, 2)}
        setup["submit_s"] = round(
            submit(cluster, args.tasks, args.cpu, args.memory, args.submit_workers), 2
        )
        t1 = time.monotonic()
        wait_for(
            lambda: len(api.tasks("running")) >= args.tasks if api else False,
            timeout=args.timeout,
            interval=1.0,
            message=f"{args.tasks} running tasks",
        )
        setup["all_running_after_submit_s"] = round(time.monotonic() - t1, 2)
        result["setup"] = setup
        server = psutil.Process(cluster.server_proc.pid) if cluster.server_proc else None
        agents = [psutil.Process(p.pid) for p in cluster.agents.values()]
        result["steady_state"] = {
            "agents": process_stats(agents, 3.0),
            "server": process_stats([server], 3.0) if server else None,
        }

        rounds = []
        for index in range(args.rounds):
            alive = {n["id"]: n for n in api.nodes() if n["state"] == "ready"}
            # Kill the alive agent holding the most tasks.
            victim = max(
                (name for name in cluster.agents if node_ids[name] in alive),
                key=lambda name: (alive[node_ids[name]]["tasks"], name),
            )
            print(f"round {index + 1}: SIGKILL {victim}", file=sys.stderr, flush=True)
            rounds.append(
                run_round(cluster, api, victim, node_ids, args.tasks, timeout=args.timeout)
            )
        result["rounds"] = rounds
        detection_kill = [r["detection_s"]["from_kill"] for r in rounds]
        detection_hb = [r["detection_s"]["from_server_last_heartbeat"] for r in rounds]
        # Pooled distributions over every round's replacements.
        placed_all: list[float] = []
        running_all: list[float] = []
        tasks = api.tasks()
        by_prev = {t["previous_task_id"]: t for t in tasks if t["previous_task_id"]}
        down_by_node = {r["victim_node_id"]: r["times_wall"]["node_down_event"] for r in rounds}
        for t in tasks:
            if t["state"] != "lost" or t["node_id"] not in down_by_node:
                continue
            repl = by_prev.get(t["id"])
            down_at = down_by_node[t["node_id"]]
            if repl and down_at:
                if repl["assigned_at"]:
                    placed_all.append(repl["assigned_at"] - down_at)
                if repl["started_at"]:
                    running_all.append(repl["started_at"] - down_at)
        placed_summary = summary(placed_all)
        checks_ok = all(
            r["checks"]["each_lost_task_replaced_exactly_once"]
            and r["checks"]["every_lost_task_marked_node_lost"]
            and r["checks"]["replacements_on_dead_node"] == 0
            and r["checks"]["other_tasks_lost"] == 0
            and r["checks"]["jobs_with_more_than_one_live_task"] == 0
            and r["checks"]["running_tasks"] == args.tasks
            for r in rounds
        )
        det_max_hb = max((d for d in detection_hb if d is not None), default=None)
        det_max_kill = max((d for d in detection_kill if d is not None), default=None)
        result["summary"] = {
            "detection_from_kill_s": summary([d for d in detection_kill if d is not None]),
            "detection_from_server_last_heartbeat_s": summary(
                [d for d in detection_hb if d is not None]
            ),
            "placed_after_detection_s": placed_summary,
            "running_after_detection_s": summary(running_all),
            "lost_tasks_total": sum(r["lost_tasks"] for r in rounds),
            "exactly_once_and_no_duplicates": checks_ok,
        }
        result["targets"] = {
            "detection_le_3s_from_last_heartbeat": det_max_hb is not None and det_max_hb <= 3.0,
            "detection_le_3s_from_kill": det_max_kill is not None and det_max_kill <= 3.0,
            "placed_p99_le_0.5s_after_detection": (
                placed_summary["p99"] is not None and placed_summary["p99"] <= 0.5
            ),
            "each_lost_task_replaced_exactly_once": checks_ok,
        }
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["server_and_agent_logs_tail"] = cluster.logs()[-4000:]
    finally:
        result["wall_s"] = round(time.time() - result["started_at"], 1)
        if api is not None:
            api.close()
        for name in list(cluster.agents):
            try:
                cluster.stop_agent(name, signal.SIGKILL)
            except Exception:  # keep tearing down the rest
                pass
        try:
            cluster.stop_server()
        except Exception:
            pass
        if "error" in result:
            result["kept_logs_in"] = str(root)
        else:
            shutil.rmtree(root, ignore_errors=True)

    out = args.out or RESULTS_DIR / "failover.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    out.write_text(text + "\n")
    print(text)
    print(f"wrote {out}", file=sys.stderr)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())

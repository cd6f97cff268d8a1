"""Placement throughput at scale (the C1M shape, scaled to one machine).

100 jobs x 1,000 tasks, each job with a label constraint, are queued in a
SQLite store next to 5,000 hollow-node records (16 cores, 64 GiB, zone and rack
labels, a few with GPUs, some draining). The real ``SchedulerLoop.step`` then
runs pass after pass until the queue is empty: each pass reads the snapshot,
orders the queue (priority, fair share), places with the pure scheduler and
commits the assignments and events to SQLite.

Reported: placements/s over the whole run (wall time of all passes), p50/p99
scheduling-pass latency, passes, and a baseline measured in the same run: the
pure ``place()`` over the same nodes comparing *every* fitting node per task
(``limit=n``, what a full scan costs) against the default limited candidates.

Run: ``.venv/bin/python bench/placement.py`` (``--jobs``, ``--tasks``,
``--nodes`` to resize). JSON goes to ``bench/results/placement.json``.

Batch work in the queue (issue 22): ``--arrays N --array-size S`` adds N job
arrays of S elements (stored compactly, released into tasks pass by pass) and
``--held H`` adds H tasks held on a dependency that is never met; their
placements count like the others'.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from dockyard.core.ids import new_id
from dockyard.core.resources import Resources
from dockyard.scheduler.constraints import parse_constraints
from dockyard.scheduler.placement import NodeView, TaskRequest, place
from dockyard.server.control.loops import SchedulerLoop
from dockyard.store.db import Database, sqlite_url
from dockyard.store.tables import Event, JobArray, JobDependency, Node, Task, User, Workload
from dockyard.testing.stats import (
    per_reference_kops,
    percentile,
    reference_ops_per_s,
    usable_cpus,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "placement.json"
GiB = 1024**3
ZONES = ["a", "b", "c", "d", "e"]
#: Issue 19's target: placements/s per reference kops.
TARGET_PER_REFERENCE_KOPS = 50.0


def constraint_for(job: int) -> list[str]:
    kinds = [
        [f"zone={ZONES[job % 5]}"],
        [f"zone!={ZONES[job % 5]}"],
        [f"zone in {ZONES[job % 5]},{ZONES[(job + 1) % 5]}"],
        [f"rack not in r{job % 10},r{(job + 3) % 10}"],
    ]
    return kinds[job % len(kinds)]


def seed(db: Database, jobs: int, tasks: int, nodes: int, users: int) -> None:
    rnd = random.Random(7)
    now = time.time()
    with db.write() as session:
        owners = []
        for index in range(users):
            uid = new_id()
            owners.append(uid)
            session.add(
                User(id=uid, name=f"user{index}", is_admin=False, created_at=now, share=1.0)
            )
        session.flush()
        session.execute(
            insert(Node),
            [
                {
                    "id": f"n-{i:05d}",
                    "name": f"hollow-{i:05d}",
                    "address": "127.0.0.1",
                    "driver": "sim",
                    "state": "ready",
                    "cpu_millis": 16000,
                    "memory_bytes": 64 * GiB,
                    "labels": {"zone": ZONES[i % 5], "rack": f"r{i % 10}"},
                    "generation": 1,
                    "registered_at": now,
                    "last_heartbeat_at": now,
                    "draining": i % 97 == 0,
                    "gpus": "0,1,2,3" if i % 50 == 0 else "",
                }
                for i in range(nodes)
            ],
        )
        for job in range(jobs):
            wid = new_id()
            owner = owners[job % users]
            cpu = rnd.choice([250, 500, 1000])
            mem = rnd.choice([256, 512, 1024]) * 1024**2
            spec = {
                "name": f"job-{job}",
                "image": "busybox",
                "cpu_millis": cpu,
                "memory_bytes": mem,
                "constraints": constraint_for(job),
            }
            session.add(
                Workload(
                    id=wid, owner_id=owner, name=f"job-{job}", kind="job", spec=spec, created_at=now
                )
            )
            session.flush()
            session.execute(
                insert(Task),
                [
                    {
                        "id": new_id(),
                        "workload_id": wid,
                        "owner_id": owner,
                        "name": f"job-{job}",
                        "attempt": 1,
                        "image": "busybox",
                        "cpu_millis": cpu,
                        "memory_bytes": mem,
                        "state": "pending",
                        "desired_state": "run",
                        "reason": "submitted",
                        "message": "",
                        "container_id": "",
                        "created_at": now + job * 0.001 + t * 1e-7,
                        "stop_reason": "",
                        "priority": job % 3,
                        "constraints": constraint_for(job),
                        "ports": "",
                        "gpus": 0,
                        "gpu_indices": "",
                        "algorithm": "spread" if job % 4 == 3 else "binpack",
                    }
                    for t in range(tasks)
                ],
            )


def seed_batch(db: Database, arrays: int, size: int, held: int) -> None:
    """Job arrays (one row each) and tasks held on a job that never ends."""
    now = time.time()
    with db.write() as session:
        owner = session.scalars(select(User.id)).first()
        assert owner is not None
        for k in range(arrays):
            wid = new_id()
            spec = {
                "name": f"array-{k}",
                "image": "busybox",
                "cpu_millis": 250,
                "memory_bytes": 256 * 1024**2,
                "array": f"1-{size}",
            }
            session.add(
                Workload(
                    id=wid, owner_id=owner, name=spec["name"], kind="job", spec=spec, created_at=now
                )
            )
            session.flush()
            session.add(
                JobArray(
                    workload_id=wid,
                    owner_id=owner,
                    indices=f"1-{size}",
                    total=size,
                    released=0,
                    throttle=None,
                    phase="releasing",
                    created_at=now,
                )
            )
        if held:
            blocker = new_id()  # pending for ever: it fits no node
            session.add(
                Workload(
                    id=blocker, owner_id=owner, name="blocker", kind="job", spec={}, created_at=now
                )
            )
            waiting = new_id()
            session.add(
                Workload(
                    id=waiting, owner_id=owner, name="held", kind="job", spec={}, created_at=now
                )
            )
            session.flush()
            base = {
                "owner_id": owner,
                "attempt": 1,
                "image": "busybox",
                "state": "pending",
                "desired_state": "run",
                "message": "",
                "container_id": "",
                "stop_reason": "",
                "priority": 0,
                "ports": "",
                "gpus": 0,
                "gpu_indices": "",
                "algorithm": "binpack",
                "created_at": now,
            }
            session.execute(
                insert(Task),
                [
                    {
                        **base,
                        "id": new_id(),
                        "workload_id": blocker,
                        "name": "blocker",
                        "cpu_millis": 10**9,
                        "memory_bytes": 1,
                        "reason": "submitted",
                        "constraints": [],
                    }
                ],
            )
            session.execute(
                insert(Task),
                [
                    {
                        **base,
                        "id": new_id(),
                        "workload_id": waiting,
                        "name": "held",
                        "cpu_millis": 100,
                        "memory_bytes": 1,
                        "reason": "waiting_dependency",
                        "constraints": [],
                        "held": True,
                    }
                    for _ in range(held)
                ],
            )
            session.add(JobDependency(workload_id=waiting, kind="ok", on_workload_id=blocker))


def check(db: Database) -> dict[str, Any]:
    """No node over-committed; every placed task on a node matching its constraints."""
    with db.read() as session:
        caps = {
            n.id: (n.cpu_millis, n.memory_bytes, dict(n.labels))
            for n in session.scalars(select(Node))
        }
        over = 0
        for node_id, cpu, mem in session.execute(
            select(Task.node_id, func.sum(Task.cpu_millis), func.sum(Task.memory_bytes))
            .where(Task.node_id.is_not(None))
            .group_by(Task.node_id)
        ).all():
            cap = caps[str(node_id)]
            if cpu > cap[0] or mem > cap[1]:
                over += 1
        bad = 0
        parsed: dict[tuple[str, ...], Any] = {}
        for node_id, constraints in session.execute(
            select(Task.node_id, Task.constraints).where(Task.node_id.is_not(None))
        ).all():
            key = tuple(constraints)
            cons = parsed.setdefault(key, parse_constraints(key))
            if not all(c.matches(caps[str(node_id)][2]) for c in cons):
                bad += 1
        pending = session.scalar(select(func.count()).where(Task.state == "pending"))
        events = session.scalar(select(func.count()).select_from(Event))
    return {
        "overcommitted_nodes": over,
        "constraint_violations": bad,
        "left_pending": pending,
        "events": events,
    }


def baseline(nodes: int, tasks: int) -> dict[str, float]:
    """Pure place(): full comparison of every fitting node vs limited candidates."""
    views = [
        NodeView(
            f"n{i}",
            f"n{i}",
            "ready",
            Resources(16000, 64 * GiB),
            Resources(),
            {"zone": ZONES[i % 5], "rack": f"r{i % 10}"},
        )
        for i in range(nodes)
    ]
    reqs = [
        TaskRequest(
            f"t{i}", Resources(500, 512 * 1024**2), constraints=parse_constraints(constraint_for(i))
        )
        for i in range(tasks)
    ]
    out = {}
    for label, limit in (("limited", None), ("full_scan", nodes)):
        started = time.perf_counter()
        plan = place(reqs, views, limit=limit)
        elapsed = time.perf_counter() - started
        assert len(plan.assignments) == tasks
        out[f"{label}_per_s"] = tasks / elapsed
    out["speedup"] = out["limited_per_s"] / out["full_scan_per_s"]
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per job")
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--baseline-tasks", type=int, default=2000)
    parser.add_argument("--arrays", type=int, default=0, help="job arrays in the queue")
    parser.add_argument("--array-size", type=int, default=10_000, help="elements per array")
    parser.add_argument("--held", type=int, default=0, help="tasks held on a dependency")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="dockyard-bench-placement-"))
    db = Database(sqlite_url(root))
    db.migrate()
    started = time.perf_counter()
    seed(db, args.jobs, args.tasks, args.nodes, args.users)
    seed_batch(db, args.arrays, args.array_size, args.held)
    seeded_s = time.perf_counter() - started
    total = args.jobs * args.tasks + args.arrays * args.array_size
    print(f"seeded {total} tasks and {args.nodes} nodes in {seeded_s:.1f}s ({root})")
    reference = reference_ops_per_s()  # this machine's speed, for ratios across runs
    loop = SchedulerLoop(db, push=lambda _nodes: None)
    passes: list[float] = []
    timing = {"read_s": 0.0, "place_s": 0.0, "write_s": 0.0}
    placed = 0
    cpu_started = time.process_time()
    run_started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        loop.step()
        elapsed = time.perf_counter() - t0
        if loop.last_placed == 0:
            break
        passes.append(elapsed)
        placed += loop.last_placed
        for key in timing:
            timing[key] += loop.last_timing.get(key, 0.0)
        parts = " ".join(f"{k[:-2]} {v * 1000:.0f}" for k, v in loop.last_timing.items())
        print(f"pass {len(passes)}: {loop.last_placed} placed in {elapsed * 1000:.0f} ms ({parts})")
    wall = sum(passes)
    run_wall = time.perf_counter() - run_started
    cpu_s = time.process_time() - cpu_started
    verdict = check(db)
    base = baseline(args.nodes, args.baseline_tasks)
    rate = placed / wall if wall else 0.0
    result = {
        "benchmark": "placement",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"python": platform.python_version(), "cpus": usable_cpus()},
        "shape": {
            "jobs": args.jobs,
            "tasks_per_job": args.tasks,
            "nodes": args.nodes,
            "users": args.users,
            "arrays": args.arrays,
            "array_size": args.array_size,
            "held_on_dependencies": args.held,
            "store": "sqlite (WAL)",
        },
        "placed": placed,
        "passes": len(passes),
        "placements_per_s": rate,
        "target_per_reference_kops": TARGET_PER_REFERENCE_KOPS,
        "meets_target": per_reference_kops(rate, reference) >= TARGET_PER_REFERENCE_KOPS,
        "reference_ops_per_s": reference,
        "placements_per_s_per_reference_kops": per_reference_kops(rate, reference),
        "pass_latency_ms": {
            "p50": 1000 * statistics.median(passes) if passes else None,
            "p99": 1000 * percentile(passes, 99) if passes else None,
            "max": 1000 * max(passes) if passes else None,
        },
        "wall_s_including_final_empty_pass": run_wall,
        "cpu_s": cpu_s,
        "placements_per_cpu_s": placed / cpu_s if cpu_s else 0.0,
        "load_average_1m_at_end": _load(),
        "time_split_s": timing,
        "checks": verdict,
        "baseline_pure_place": base,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
    return 0 if verdict["overcommitted_nodes"] == 0 and verdict["constraint_violations"] == 0 else 1


def _load() -> float:
    return os.getloadavg()[0]


if __name__ == "__main__":
    raise SystemExit(main())

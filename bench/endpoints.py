"""Service discovery: from a replica's health change in the store to the new name tables.

The leader's ``EndpointsLoop`` (server/control/endpoints.py, every 0.25 s) is run as
the server runs it, in its own thread, over a SQLite store seeded with ``--services``
(200) services in stacks of ``--per-stack`` (10), each with ``--replicas`` (2)
healthy replicas spread over ``--nodes`` (20) ready nodes. Its ``send`` is the
benchmark's: it records each ``endpoints`` message as it is handed to the gateway.

Each of ``--changes`` (100) changes, at a random point of the loop's period, flips
one random replica's health (healthy <-> unhealthy) in one write transaction, as the
gateway's apply thread does with an agent's ``health`` message, and waits until every
node that carries the stack's network got a table that shows the change (the
replica's endpoint gone or back).

Reported: that latency (p50/p99; the loop's period bounds it from below: about half
of it on average), the loop's CPU per step (idle and while changing), CPU per change
(the loop's CPU over the change phase / changes), and the same per reference kops
(``dockyard.testing.stats``). Not included: the ZeroMQ hop to the agent and the
agent applying the table (addresses, /etc/hosts, proxy listeners), which
``tests/e2e/test_networking_docker.py`` exercises on real Docker. JSON goes to
``bench/results/endpoints.json``.

Run: ``.venv/bin/python bench/endpoints.py`` (``--services``, ``--changes``).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dockyard.core.ids import new_id
from dockyard.core.networks import network_id, resolve
from dockyard.core.services import build_service_spec
from dockyard.core.specs import build_job_spec
from dockyard.protocol.messages import Endpoints, ServerMessage
from dockyard.server.control.endpoints import INTERVAL_S, EndpointsLoop
from dockyard.store.db import Database, sqlite_url
from dockyard.store.tables import Node, Task, User, Workload
from dockyard.testing.stats import per_reference_kops, percentile, reference_ops_per_s

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "endpoints.json"
PORT = 8080


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--per-stack", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--idle-steps", type=int, default=20, help="steps timed with no change")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


class Replica:
    def __init__(self, task_id: str, net: str, name: str, nodes: set[str], end: list[Any]):
        self.task_id, self.net, self.name, self.nodes, self.end = task_id, net, name, nodes, end


def seed(db: Database, args: argparse.Namespace) -> list[Replica]:
    """Nodes, one user, the services and their running, healthy replicas."""
    now = time.time()
    nodes = [f"n-bench{i:04d}" for i in range(args.nodes)]
    replicas: list[Replica] = []
    with db.write() as session:
        user = User(id=new_id(), name="bench", created_at=now)
        session.add(user)
        for index, node_id in enumerate(nodes):
            session.add(
                Node(
                    id=node_id,
                    name=node_id,
                    address=f"10.99.{index // 250}.{index % 250 + 1}",
                    state="ready",
                    cpu_millis=64000,
                    memory_bytes=256 << 30,
                    registered_at=now,
                    last_heartbeat_at=now,
                )
            )
        session.flush()
        host_port = 20000
        stack_nodes: dict[str, set[str]] = {}
        placed: list[tuple[str, str, str, str, list[Any]]] = []
        for index in range(args.services):
            stack = f"s{index // args.per_stack}"
            short = f"svc{index % args.per_stack}"
            task = build_job_spec(name=f"{stack}_{short}", image="busybox", memory="16m")
            spec = build_service_spec(
                task,
                replicas=args.replicas,
                ports=[PORT],
                health={"kind": "tcp"},
                labels={"dockyard.stack": stack},
                networks=[{"name": "default", "aliases": [short]}],
            )
            workload = Workload(
                id=new_id(),
                owner_id=user.id,
                name=spec.name,
                kind="service",
                spec={**spec.to_dict(), "policy": None},
                created_at=now,
            )
            session.add(workload)
            session.flush()
            (ref,) = resolve(
                spec.networks, owner_id=user.id, service_name=spec.name, labels=spec.labels
            )
            assert ref.id == network_id(user.id, f"stack:{stack}", "default")
            for r in range(args.replicas):
                node_index = (index * args.replicas + r) % args.nodes
                node_id = nodes[node_index]
                host_port += 1
                end = [f"10.99.{node_index // 250}.{node_index % 250 + 1}", host_port]
                task_id = new_id()
                session.add(
                    Task(
                        id=task_id,
                        workload_id=workload.id,
                        owner_id=user.id,
                        name=spec.name,
                        image="busybox",
                        cpu_millis=100,
                        memory_bytes=16 << 20,
                        state="running",
                        desired_state="run",
                        node_id=node_id,
                        created_at=now,
                        health="healthy",
                        port_map=[[PORT, host_port]],
                    )
                )
                stack_nodes.setdefault(ref.id, set()).add(node_id)
                placed.append((task_id, ref.id, short, node_id, end))
    for task_id, net, short, _node, end in placed:
        replicas.append(Replica(task_id, net, short, stack_nodes[net], end))
    return replicas


class Recorder:
    """The loop's ``send``: the newest table each node got, and when."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[float, dict[str, Any]]] = {}
        self.changed = threading.Condition()
        self.messages = 0

    def send(self, node_id: str, message: ServerMessage) -> None:
        assert isinstance(message, Endpoints)
        with self.changed:
            self.latest[node_id] = (time.perf_counter(), message.networks)
            self.messages += 1
            self.changed.notify_all()

    def shows(self, replica: Replica, healthy: bool, since: float) -> float | None:
        """When the last of the replica's network's nodes got a table showing it so."""
        last = 0.0
        for node_id in replica.nodes:
            got = self.latest.get(node_id)
            if got is None or got[0] < since:
                return None
            table = got[1].get(replica.net, {}).get("names", {}).get(replica.name, {})
            present = replica.end in table.get("tcp", {}).get(str(PORT), [])
            if present != healthy:
                return None
            last = max(last, got[0])
        return last


class TimedLoop(EndpointsLoop):
    """The loop with each step's wall and thread CPU time recorded."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.steps: list[tuple[float, float]] = []  # (wall s, cpu s)

    def step(self) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        super().step()
        self.steps.append((time.perf_counter() - wall, time.thread_time() - cpu))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="dockyard-bench-endpoints-"))
    db = Database(sqlite_url(root))
    db.migrate()
    replicas = seed(db, args)
    print(f"{args.services} services, {len(replicas)} replicas, {args.nodes} nodes ({root})")
    reference = reference_ops_per_s()
    recorder = Recorder()
    loop = TimedLoop(db, recorder.send)
    loop.start()
    try:
        deadline = time.monotonic() + 60
        while len(loop.steps) < args.idle_steps and time.monotonic() < deadline:
            time.sleep(INTERVAL_S)
        idle = list(loop.steps)
        health = {r.task_id: True for r in replicas}
        latencies: list[float] = []
        first_step = len(loop.steps)
        changes_started = time.perf_counter()
        for _ in range(args.changes):
            time.sleep(rng.uniform(0, INTERVAL_S))  # not in step with the loop's period
            replica = rng.choice(replicas)
            healthy = not health[replica.task_id]
            health[replica.task_id] = healthy
            with db.write() as session:
                task = session.get(Task, replica.task_id)
                assert task is not None
                task.health = "healthy" if healthy else "unhealthy"
            changed_at = time.perf_counter()

            def shown(r: Replica = replica, h: bool = healthy, t: float = changed_at) -> Any:
                return recorder.shows(r, h, t)

            with recorder.changed:
                seen = recorder.changed.wait_for(shown, timeout=30)
            if not seen:
                raise SystemExit(f"no table showed the change of {replica.task_id} in 30 s")
            latencies.append(float(seen) - changed_at)
        changes_s = time.perf_counter() - changes_started
        busy = loop.steps[first_step:]
    finally:
        loop.stop()
    busy_cpu = sum(cpu for _, cpu in busy)
    cpu_per_change = busy_cpu / max(1, args.changes)
    result = {
        "benchmark": "endpoints",
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "reference_ops_per_s": round(reference),
        "services": args.services,
        "replicas": len(replicas),
        "nodes": args.nodes,
        "changes": args.changes,
        "interval_s": INTERVAL_S,
        "latency_s": {
            "p50": round(percentile(latencies, 50), 4),
            "p99": round(percentile(latencies, 99), 4),
            "max": round(max(latencies), 4),
        },
        "step_s": {
            "idle_cpu_p50": round(percentile([c for _, c in idle], 50), 5),
            "idle_wall_p50": round(percentile([w for w, _ in idle], 50), 5),
            "busy_cpu_p50": round(percentile([c for _, c in busy], 50), 5),
            "busy_wall_p99": round(percentile([w for w, _ in busy], 99), 5),
        },
        "cpu_per_change_s": round(cpu_per_change, 5),
        "loop_cpu_share": round(busy_cpu / changes_s, 4) if changes_s else None,
        "messages": recorder.messages,
        "per_reference_kops": {
            # Rates per thousand reference ops/s: changes the loop could handle per CPU
            # second, and idle steps per CPU second.
            "changes_per_cpu_s": round(per_reference_kops(1 / cpu_per_change, reference), 3)
            if cpu_per_change
            else None,
            "idle_steps_per_cpu_s": round(
                per_reference_kops(1 / percentile([c for _, c in idle], 50), reference), 3
            ),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

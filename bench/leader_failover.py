"""Leader failover under load: three servers on PostgreSQL, the leader killed or frozen.

Three real ``dockyard server --db postgresql://...`` processes on a fresh database
(``dockyard.testing.ha.HACluster``), one hollow-node agent process
(``dockyard agent --driver sim --nodes N``) connected to every gateway, and
``--submitters`` client threads submitting short jobs through the REST API of any
live (not stopped) server, counting acknowledged submissions.

``--rounds`` rounds (default 10) alternate SIGKILL and SIGSTOP of the current
leader; the SIGSTOP rounds listed in ``--in-transaction`` stop it *inside* its
scheduler's fenced transaction (``freeze_leader_in_transaction``: lease row
share-locked, placements written, proven from ``pg_stat_activity``/``pg_locks``).
Per round, from the signal:

* ``leader_s``: until the store's lease row shows a new term held by another
  instance (the takeover is that instance's first write under the lease lock;
  from then on its fenced writes pass);
* ``scheduling_s``: until a probe job submitted right after the signal is placed
  (its task's ``assigned_at``, the new leader's clock, minus the signal's
  ``time.time()``; same machine).

A killed server is restarted (a follower); a stopped one gets SIGCONT and must
become a follower before the next round. At the end every acknowledged job id must
be in the store, and no job may have more than one task. The machine's reference
speed (``dockyard.testing.stats.reference_ops_per_s``) is measured first, while
nothing runs. All traffic goes to 127.0.0.1; every wait has a deadline.

Usage::

    .venv/bin/python bench/leader_failover.py [--rounds 10] [--nodes 4] [--out FILE]
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
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import Engine, create_engine, text

from dockyard.testing import postgres
from dockyard.testing.ha import HACluster, freeze_leader_in_transaction
from dockyard.testing.stats import (
    cpu_seconds,
    per_reference_kops,
    percentile,
    reference_ops_per_s,
    usable_cpus,
)
from dockyard.testing.wait import wait_for

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "leader_failover.json"
TARGET_P99_S = 2.0
#: Jobs run this long on the hollow nodes, then succeed (the nodes do not fill up).
RUN_FOR = "2s"


def summary(values: list[float]) -> dict[str, Any]:
    def r(x: float | None) -> float | None:
        return None if x is None or math.isnan(x) else round(x, 3)

    return {
        "n": len(values),
        "min": r(min(values, default=None)),
        "p50": r(percentile(values, 50)),
        "p99": r(percentile(values, 99)),
        "max": r(max(values, default=None)),
    }


class Submitters:
    """``threads`` threads, each submitting a job every ``interval`` s through the next
    server that is running and not stopped; at most ``limit`` jobs in all."""

    def __init__(self, cluster: HACluster, threads: int, interval: float, limit: int) -> None:
        self.cluster = cluster
        self.interval = interval
        self.limit = limit
        self.paused: set[str] = set()  # servers SIGSTOPped (requests to them would hang)
        self.acked: list[str] = []
        self.errors = 0
        self.error_kinds: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._count = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"submit-{i}", daemon=True)
            for i in range(threads)
        ]

    def targets(self) -> list[str]:
        return [n for n in self.cluster.live() if n not in self.paused]

    def submit_one(self, name: str, label: str, http: httpx.Client | None = None) -> str:
        body = {
            "name": label,
            "image": "sim",
            "command": ["true"],
            "cpu": "10m",
            "memory": "8m",
            "env": {"DOCKYARD_SIM_RUN_FOR": RUN_FOR},
        }
        headers = {"Authorization": f"Bearer {self.cluster.token}"}
        if http is None:
            with httpx.Client(headers=headers, timeout=5) as one:
                response = one.post(self.cluster.url(name) + "/api/v1/jobs", json=body)
        else:
            response = http.post(self.cluster.url(name) + "/api/v1/jobs", json=body)
        response.raise_for_status()
        job = str(response.json()["workload_id"])
        with self._lock:
            self.acked.append(job)
        return job

    def _run(self, index: int) -> None:
        headers = {"Authorization": f"Bearer {self.cluster.token}"}
        turn = index
        with httpx.Client(headers=headers, timeout=3) as http:
            while not self._stop.is_set():
                with self._lock:
                    if self._count >= self.limit:
                        return
                    self._count += 1
                    serial = self._count
                targets = self.targets()
                if targets:
                    name = targets[turn % len(targets)]
                    turn += 1
                    try:
                        self.submit_one(name, f"load-{serial}", http)
                    except (httpx.HTTPError, KeyError, ValueError) as exc:
                        kind = (
                            f"http {exc.response.status_code}"
                            if isinstance(exc, httpx.HTTPStatusError)
                            else type(exc).__name__
                        )
                        with self._lock:
                            self.errors += 1
                            self.error_kinds[kind] += 1
                self._stop.wait(self.interval)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


class Store:
    """Reads the store directly (autocommit), as the truth the bench checks against."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=2)

    def one(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).one_or_none()

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def lease(self) -> tuple[str, int, float, float]:
        """holder, term, renewed_at, and the database's clock now."""
        row = self.one(
            "SELECT holder, term, renewed_at, EXTRACT(EPOCH FROM clock_timestamp()) AS now"
            " FROM leader_lease WHERE id = 1"
        )
        return str(row.holder), int(row.term), float(row.renewed_at), float(row.now)

    def assigned_at(self, job: str) -> float | None:
        value = self.scalar("SELECT max(assigned_at) FROM tasks WHERE workload_id = :job", job=job)
        return None if value is None else float(value)

    def task_assigned_at(self, task_id: str) -> float | None:
        value = self.scalar("SELECT assigned_at FROM tasks WHERE id = :t", t=task_id)
        return None if value is None else float(value)

    def ready_nodes(self) -> int:
        return int(self.scalar("SELECT count(*) FROM nodes WHERE state = 'ready'") or 0)

    def follows(self, instance: str, since: float) -> bool:
        row = self.one("SELECT term, seen_at FROM server_instances WHERE id = :i", i=instance)
        return row is not None and row.term is None and float(row.seen_at) > since

    def missing(self, jobs: Iterable[str]) -> list[str]:
        wanted = sorted(set(jobs))
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 1000):
                chunk = wanted[start : start + 1000]
                found.update(
                    str(r[0])
                    for r in conn.execute(
                        text("SELECT id FROM workloads WHERE id = ANY(:ids)"), {"ids": chunk}
                    )
                )
        return [j for j in wanted if j not in found]

    def jobs_with_several_tasks(self) -> int:
        return int(
            self.scalar(
                "SELECT count(*) FROM (SELECT workload_id FROM tasks GROUP BY workload_id"
                " HAVING count(*) > 1) t"
            )
            or 0
        )

    def node_down_events(self) -> int:
        return int(
            self.scalar("SELECT count(*) FROM events WHERE reason IN ('node_down', 'node_lost')")
            or 0
        )

    def close(self) -> None:
        self.engine.dispose()


class CpuMeter:
    """User + system CPU seconds of server processes, including ones since killed (each
    counted as last sampled)."""

    def __init__(self) -> None:
        self._last: dict[int, float] = {}

    def sample(self, cluster: HACluster) -> None:
        for proc in cluster.procs.values():
            try:
                self._last[proc.pid] = cpu_seconds([psutil.Process(proc.pid)])
            except psutil.Error:
                pass

    def total(self) -> float:
        return sum(self._last.values())


def instance_names(cluster: HACluster, names: Iterable[str]) -> dict[str, str]:
    """Instance id -> server name, from each server's own status."""
    out: dict[str, str] = {}
    for name in names:
        status = cluster.status(name, timeout=5)
        if status is not None:
            out[str(status["instance"])] = name
    return out


def run_round(
    index: int,
    kind: str,
    cluster: HACluster,
    store: Store,
    subs: Submitters,
    instances: dict[str, str],
    nodes: int,
    timeout: float,
) -> dict[str, Any]:
    holder, term, _, _ = store.lease()
    victim = instances[holder]
    others = [n for n in cluster.live() if n != victim]
    proc = cluster.procs[victim]
    record: dict[str, Any] = {"round": index, "kind": kind, "victim": victim, "old_term": term}
    subs.paused.add(victim)  # until it is back (restarted, or woken and following)
    frozen = None
    if kind == "sigkill":
        signalled_wall, signalled_mono = time.time(), time.monotonic()
        proc.kill()
        proc.wait(10)
    elif kind == "sigstop":
        signalled_wall, signalled_mono = time.time(), time.monotonic()
        os.killpg(proc.pid, signal.SIGSTOP)
    else:  # sigstop inside the scheduler's fenced transaction
        frozen = freeze_leader_in_transaction(cluster, victim, timeout=timeout)
        signalled_wall, signalled_mono = frozen.stopped_wall, frozen.stopped_mono
        record["frozen"] = {
            "backend_pid": frozen.backend_pid,
            "xid": frozen.xid,
            "tasks_placed_uncommitted": len(frozen.task_ids),
            "backend_state_after_stop": frozen.state_after,
        }
    # The old leader renews no more: the new one takes over about lease_s after this.
    _, _, renewed_at, db_now = store.lease()
    record["lease_age_at_signal_s"] = round(db_now - renewed_at, 3)
    try:
        probe = wait_for(
            lambda: _try_submit(subs, others, f"probe-{index}"),
            timeout=timeout,
            interval=0.02,
            message="the probe job acknowledged",
        )
        probe_acked_s = time.monotonic() - signalled_mono

        def new_leader() -> tuple[str, int] | None:
            who, now_term, _, _ = store.lease()
            return (who, now_term) if now_term > term and who != holder else None

        new_holder, new_term = wait_for(
            new_leader, timeout=timeout, interval=0.01, message="a new term in the store"
        )
        leader_s = time.monotonic() - signalled_mono
        assigned = wait_for(
            lambda: store.assigned_at(probe),
            timeout=timeout,
            interval=0.01,
            message="the probe job placed",
        )
        record.update(
            {
                "new_leader": instances.get(new_holder, new_holder),
                "new_term": new_term,
                "leader_s": round(leader_s, 3),
                "scheduling_s": round(float(assigned) - signalled_wall, 3),
                "probe_acked_after_s": round(probe_acked_s, 3),
            }
        )
    finally:
        if kind != "sigkill" and proc.poll() is None:
            woke_at = store.lease()[3]
            os.killpg(proc.pid, signal.SIGCONT)
            record["woke_at_db"] = woke_at
    # Back to three servers, the old leader a follower, every node ready.
    restore = time.monotonic()
    if kind == "sigkill":
        cluster.start_server(victim, timeout=timeout)
        instances.update(instance_names(cluster, [victim]))
    else:
        wait_for(
            lambda: store.follows(holder, record["woke_at_db"]),
            timeout=timeout,
            message=f"{victim} follows",
        )
        assert proc.poll() is None, f"{victim} exited after SIGCONT"
    subs.paused.discard(victim)
    if frozen is not None:
        # What the frozen transaction had placed never landed: each of those tasks was
        # placed again, once, by the new leader after the stop.
        stale = 0
        for task_id in frozen.task_ids:

            def placed(task: str = task_id) -> float | None:
                return store.task_assigned_at(task)

            at = wait_for(placed, timeout=timeout, message=f"task {task_id} placed")
            stale += at < signalled_wall
        record["frozen"]["stale_placements_landed"] = stale
    wait_for(lambda: store.ready_nodes() >= nodes, timeout=timeout, message="nodes ready")
    record["restore_s"] = round(time.monotonic() - restore, 2)
    return record


def result_stale(rounds: list[dict[str, Any]]) -> int:
    return sum(r["frozen"]["stale_placements_landed"] for r in rounds if "frozen" in r)


def _try_submit(subs: Submitters, names: list[str], label: str) -> str | None:
    for name in names:
        try:
            return subs.submit_one(name, label)
        except (httpx.HTTPError, KeyError, ValueError):
            continue
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--in-transaction",
        default="4,8",
        help="rounds (1-based, SIGSTOP rounds: even ones) frozen inside a transaction",
    )
    parser.add_argument("--nodes", type=int, default=4, help="hollow nodes in the agent")
    parser.add_argument("--submitters", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.1, help="s between a thread's jobs")
    parser.add_argument("--max-jobs", type=int, default=20_000, help="bound on submissions")
    parser.add_argument("--timeout", type=float, default=60.0, help="per wait")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 50:
        parser.error("--rounds must be 1..50")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    in_tx = {int(r) for r in args.in_transaction.split(",") if r.strip()}
    if not postgres.available():
        print(f"PostgreSQL not reachable at {postgres.admin_url()} (scripts/setup.sh)")
        return 2
    reference = reference_ops_per_s()  # before anything runs
    root = Path(tempfile.mkdtemp(prefix="dockyard-bench-leader-"))
    result: dict[str, Any] = {
        "benchmark": "leader_failover",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "python": platform.python_version(),
            "cpus": usable_cpus(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "shape": {
            "servers": 3,
            "store": "postgresql (127.0.0.1)",
            "hollow_nodes": args.nodes,
            "submitters": args.submitters,
            "submit_interval_s": args.interval,
            "rounds": args.rounds,
            "in_transaction_rounds": sorted(in_tx),
            "lease_s": 1.2,
            "job": f"sim, runs {RUN_FOR}, 10m CPU",
        },
        "reference_ops_per_s": round(reference),
    }
    started = time.monotonic()
    rounds: list[dict[str, Any]] = []
    with postgres.fresh_database("dy_bench_leader") as db_url:
        cluster = HACluster(db_url, root)
        store = Store(db_url)
        subs = Submitters(cluster, args.submitters, args.interval, args.max_jobs)
        meter = CpuMeter()
        try:
            cluster.start_all(nodes=args.nodes, timeout=args.timeout)
            instances = instance_names(cluster, cluster.names)
            assert cluster.agent is not None
            agent = psutil.Process(cluster.agent.pid)
            meter.sample(cluster)
            cpu0, agent0, me0 = meter.total(), cpu_seconds([agent]), cpu_seconds([psutil.Process()])
            subs.start()
            load_started = time.monotonic()
            wait_for(lambda: len(subs.acked) >= 20, timeout=args.timeout, message="submissions")
            for index in range(1, args.rounds + 1):
                kind = "sigkill" if index % 2 else "sigstop"
                if kind == "sigstop" and index in in_tx:
                    kind = "sigstop_in_transaction"
                print(f"round {index}: {kind}", file=sys.stderr, flush=True)
                meter.sample(cluster)  # a killed server's CPU cannot be read afterwards
                record = run_round(
                    index, kind, cluster, store, subs, instances, args.nodes, args.timeout
                )
                print(f"  {record}", file=sys.stderr, flush=True)
                rounds.append(record)
            load_s = time.monotonic() - load_started
            meter.sample(cluster)
            subs.stop()
            acked = list(subs.acked)
            missing = store.missing(acked)
            several = store.jobs_with_several_tasks()
            downs = store.node_down_events()
            leader_s = [r["leader_s"] for r in rounds]
            sched_s = [r["scheduling_s"] for r in rounds]
            rate = len(acked) / load_s if load_s else 0.0
            lead = summary(leader_s)
            sched = summary(sched_s)
            result["rounds"] = rounds
            result["summary"] = {
                "leader_s": lead,
                "scheduling_s": sched,
                "by_kind": {
                    kind: {
                        "leader_s": summary([r["leader_s"] for r in rounds if r["kind"] == kind]),
                        "scheduling_s": summary(
                            [r["scheduling_s"] for r in rounds if r["kind"] == kind]
                        ),
                    }
                    for kind in sorted({r["kind"] for r in rounds})
                },
                "acknowledged_submissions": len(acked),
                "acknowledged_missing_from_store": len(missing),
                "submission_errors": subs.errors,
                "submission_errors_by_kind": dict(subs.error_kinds),
                "jobs_with_more_than_one_task": several,
                "stale_placements_landed": result_stale(rounds),
                "node_down_events": downs,
                "acked_submissions_per_s": round(rate, 2),
                "load_s": round(load_s, 1),
            }
            # Failover times are mostly lease timing (wall clock), not CPU: they are not
            # expected to scale with the reference; the submission rate is.
            result["per_reference_kops"] = {
                "acked_submissions_per_s": round(per_reference_kops(rate, reference), 4),
                "leader_p99_s_x_reference_kops": round(lead["p99"] * reference / 1000, 1),
                "scheduling_p99_s_x_reference_kops": round(sched["p99"] * reference / 1000, 1),
            }
            result["cpu_s"] = {
                "servers": round(meter.total() - cpu0, 1),
                "agent": round(cpu_seconds([agent]) - agent0, 1),
                "load_generator": round(cpu_seconds([psutil.Process()]) - me0, 1),
                "over_s": round(load_s, 1),
            }
            result["targets"] = {
                "leader_p99_le_2s": lead["p99"] is not None and lead["p99"] <= TARGET_P99_S,
                "scheduling_p99_le_2s": sched["p99"] is not None and sched["p99"] <= TARGET_P99_S,
                "zero_acknowledged_lost": not missing,
                "no_stale_placement": result_stale(rounds) == 0,
            }
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
            result["rounds"] = rounds
            result["logs_tail"] = cluster.logs()[-6000:]
        finally:
            subs.stop()
            cluster.close()
            store.close()
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    if "error" in result:
        result["kept_logs_in"] = str(root)
    else:
        shutil.rmtree(root, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    raise SystemExit(main())

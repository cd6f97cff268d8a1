"""Row 9 of the test matrix: two servers on one PostgreSQL never exceed a user's quota.

Two real ``dockyard server`` processes share one fresh database; one agent process
runs three hollow nodes that know both gateways. A user with a concurrent quota
(``max_tasks`` and ``max_cpu``) submits short jobs through *both* APIs at once,
while the leader is SIGKILLed and later SIGSTOPped past its lease (a leader change
mid-pass). A sampler reads the store directly every few milliseconds: the user's
placed tasks (assigned, pulling, starting, running) never pass either bound.

Admission happens in one place only: the leader's scheduler pass counts placed
tasks and admits within the quota, and its write is fenced by the leader term in
the same transaction (a deposed leader's plan never lands; a new leader's pass
reads after the old leader's last fenced write committed). No Docker needed.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from dockyard.client import Client, ClientError
from dockyard.testing import postgres
from dockyard.testing.ha import HACluster
from dockyard.testing.wait import wait_for

MAX_TASKS = 6
MAX_CPU_MILLIS = 500  # binds first: five 100m jobs
JOB_CPU = "100m"
PLACED = ("assigned", "pulling", "starting", "running")


@pytest.fixture()
def pair() -> Iterator[HACluster]:
    root = Path(tempfile.mkdtemp(prefix="dockyard-ha-quota-"))
    with postgres.store_for("postgresql", "dy_haq") as db_url:
        assert db_url is not None
        cluster = HACluster(db_url, root, count=2)
        try:
            cluster.start_all()
            yield cluster
        except BaseException:
            print(cluster.logs())
            raise
        finally:
            cluster.close()
            if not os.environ.get("DOCKYARD_KEEP_TEST_DIRS"):
                shutil.rmtree(root, ignore_errors=True)


class Sampler:
    """Reads the user's placed tasks from the store until stopped; keeps the maxima."""

    def __init__(self, db_url: str, owner_id: str) -> None:
        self._engine = create_engine(db_url)
        self._owner = owner_id
        self.max_tasks = 0
        self.max_cpu = 0
        self.samples = 0
        self.worst: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = text(
            "SELECT count(*), coalesce(sum(cpu_millis), 0) FROM tasks"
            " WHERE owner_id = :owner AND state = ANY(:placed)"
        )
        with self._engine.connect() as conn:
            while not self._stop.is_set():
                params = {"owner": self._owner, "placed": list(PLACED)}
                count, cpu = conn.execute(query, params).one()
                conn.rollback()  # a fresh snapshot each time
                self.samples += 1
                if count > self.max_tasks or cpu > self.max_cpu:
                    self.worst.append((int(count), int(cpu)))
                self.max_tasks = max(self.max_tasks, int(count))
                self.max_cpu = max(self.max_cpu, int(cpu))
                self._stop.wait(0.005)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self._engine.dispose()


class Submitter:
    """Submits short jobs through one server's API until stopped (errors while that
    server is down or paused are counted, not raised)."""

    def __init__(self, cluster: HACluster, server: str, token: str, prefix: str) -> None:
        self.cluster, self.server, self.token, self.prefix = cluster, server, token, prefix
        self.acked: list[str] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                with Client(url=self.cluster.url(self.server), token=self.token, timeout=5) as api:
                    job = api.run_job(
                        f"{self.prefix}-{i}",
                        "sim",
                        ["true"],
                        cpu=JOB_CPU,
                        env={"DOCKYARD_SIM_RUN_FOR": f"{200 + 37 * (i % 7)}ms"},
                    )
                self.acked.append(str(job["id"]))
            except (ClientError, httpx.HTTPError):
                self.errors += 1
                self._stop.wait(0.2)
            i += 1
            self._stop.wait(0.02)

    def __enter__(self) -> Submitter:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_two_servers_admitting_concurrently_never_exceed_the_quota(pair: HACluster) -> None:
    leader, term = pair.leader()
    with pair.client(leader) as admin:
        token = str(admin.add_user("quotaed")["token"])
        admin.update_user("quotaed", quota={"max_tasks": MAX_TASKS, "max_cpu": "500m"})
    engine = create_engine(pair.db_url)
    with engine.connect() as conn:
        owner_id = str(conn.execute(text("SELECT id FROM users WHERE name = 'quotaed'")).scalar())
    engine.dispose()
    with Sampler(pair.db_url, owner_id) as sampler:
        subs = [Submitter(pair, name, token, f"q-{name}") for name in pair.names]
        for sub in subs:
            sub.__enter__()
        try:
            wait_for(
                lambda: sampler.max_cpu >= MAX_CPU_MILLIS and sum(len(s.acked) for s in subs) > 40,
                timeout=60,
                message="the quota filled while both APIs admit",
            )
            # A leader change mid-pass: SIGKILL the leader while both keep submitting.
            pair.procs[leader].kill()
            pair.procs[leader].wait(10)
            new, new_term = pair.leader(above_term=term)
            assert new != leader
            before = sum(len(s.acked) for s in subs)
            wait_for(
                lambda: sum(len(s.acked) for s in subs) > before + 30,
                timeout=60,
                message="submissions after the failover",
            )
            pair.start_server(leader)
            # Then SIGSTOP the new leader past its lease and wake it up: fenced.
            os.killpg(pair.procs[new].pid, signal.SIGSTOP)
            try:
                pair.leader(among=[leader], above_term=new_term)
                before = sum(len(s.acked) for s in subs)
                wait_for(
                    lambda: sum(len(s.acked) for s in subs) > before + 20,
                    timeout=60,
                    message="submissions while the old leader is paused",
                )
            finally:
                os.killpg(pair.procs[new].pid, signal.SIGCONT)
            time.sleep(3)  # the woken leader's stale pass, if any, has landed or been fenced
        finally:
            for sub in subs:
                sub.__exit__()
    assert sampler.samples > 500, sampler.samples
    assert sampler.max_tasks <= MAX_TASKS, sampler.worst
    assert sampler.max_cpu <= MAX_CPU_MILLIS, sampler.worst
    assert sampler.max_cpu == MAX_CPU_MILLIS, "the quota was reached (the test bit)"
    acked = [t for s in subs for t in s.acked]
    assert len(acked) > 100
    # Every admitted job still runs to its end, within the quota.
    leader_now, _ = pair.leader()
    with pair.client(leader_now) as admin:

        def finished() -> bool:
            states = {t["id"]: t["state"] for t in admin.tasks() if t["id"] in set(acked)}
            return len(states) == len(acked) and all(s == "succeeded" for s in states.values())

        wait_for(finished, timeout=180, message="every acknowledged job succeeded")

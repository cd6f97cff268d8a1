"""Usage history: buckets from samples and heartbeats, roll-up, retention, row caps,
the owner-scoped API and the bounded per-task/per-node Prometheus gauges."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from dockyard.drivers.sim import SimDriver
from dockyard.server.state import usage_history as history
from dockyard.store.db import Database
from dockyard.store.tables import UsageHistory
from dockyard.testing import postgres
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for

GIB = 1024**3


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    with postgres.store_for(str(request.param), "dy_uh") as url:
        database = Database(url or f"sqlite:///{tmp_path_factory.mktemp('uh') / 'store.db'}")
        database.migrate()
        try:
            yield database
        finally:
            database.dispose()


def _clear(db: Database) -> None:
    with db.write() as session:
        session.execute(UsageHistory.__table__.delete())


def test_buffer_turns_totals_into_per_bucket_usage() -> None:
    buf = history.UsageBuffer()
    t0 = 1_000_000.0  # a bucket boundary (divisible by 10)
    # first sample: no interval yet, nothing recorded
    buf.add_task("t1", t0, (0.0, 0.0, None), (1.0, 0.5, 100))
    # 2 s later: 1 CPU second more and 1 GiB-s more -> 0.5 cores, 0.5 GiB over 2 s
    buf.add_task("t1", t0 + 2, (1.0, 0.5, t0), (2.0, 1.5, 200), "u1")
    buf.add_task("t2", t0 + 5, (0.0, 0.0, t0), (5.0, 5.0, 10), "u2")  # 1 core, 1 GiB
    # a re-sent sample (totals did not grow) adds nothing
    buf.add_task("t1", t0 + 3, (2.0, 1.5, t0 + 2), (2.0, 1.5, 200))
    # the next bucket
    buf.add_task("t1", t0 + 12, (2.0, 1.5, t0 + 3), (11.0, 1.5 + 9 * 0.25, 300))
    buf.add_node("n1", t0 + 1, 50.0, GIB)
    buf.add_node("n1", t0 + 3, 100.0, 2 * GIB)
    assert buf.closed(t0 + 9) == []
    closed = buf.closed(t0 + 10)
    owners = {r["subject_id"]: r for r in closed if r["subject"] == "owner"}
    rows = {(r["subject"], r["bucket"]): r for r in closed if r["subject_id"] in ("t1", "n1")}
    assert set(rows) == {("task", int(t0)), ("node", int(t0))}
    # the sums per owner and over everyone: cores and GiB summed over the 10 s bucket
    assert set(owners) == {"u1", "u2", "*"}
    assert owners["*"]["seconds"] == 10
    assert owners["*"]["cpu_s"] == pytest.approx(1.0 + 5.0)
    assert owners["u2"]["memory_gib_s"] == pytest.approx(5.0)
    task = rows[("task", int(t0))]
    assert task["cpu_s"] / task["seconds"] == pytest.approx(0.5)
    assert task["memory_gib_s"] / task["seconds"] == pytest.approx(0.5)
    assert task["max_memory_bytes"] == 200
    node = rows[("node", int(t0))]
    # 1 s at 50 % (first beat) + 2 s at 100 %: busy 2.5 of 3 s
    assert node["cpu_s"] / node["seconds"] == pytest.approx(2.5 / 3)
    assert node["max_memory_bytes"] == 2 * GIB
    later = buf.closed(t0 + 30)
    assert [r["bucket"] for r in later] == [int(t0) + 10]
    assert later[0]["cpu_s"] / later[0]["seconds"] == pytest.approx(1.0)
    assert len(buf) == 0


def test_store_rollup_retention_and_cap(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear(db)
    now = float(int(time.time()) // 60 * 60)
    rows = []
    # two nodes, 10 s buckets over the last 2 h: a at 1 core / 1 GiB, b at 0.5 / 2 GiB
    for i in range(1, 720):
        bucket = int(now) - i * 10
        for sid, cpu, mem in (("a", 1.0, 1.0), ("b", 0.5, 2.0)):
            rows.append(
                {
                    "subject": "node",
                    "subject_id": sid,
                    "res": 10,
                    "bucket": bucket,
                    "seconds": 10.0,
                    "cpu_s": 10 * cpu,
                    "memory_gib_s": 10 * mem,
                    "max_memory_bytes": int(mem * GIB),
                }
            )
    with db.write() as session:
        history.store(session, rows)
        history.store(session, rows[:5])  # stored twice: kept once
    with db.write() as session:
        done = history.maintain(session, now)
    assert done.rolled_up > 0
    assert done.pruned > 0  # the 10 s rows past an hour
    with db.read() as session:
        oldest_fine = session.scalar(
            select(func.min(UsageHistory.bucket)).where(UsageHistory.res == 10)
        )
        assert oldest_fine is not None and oldest_fine >= now - 3600
        coarse = history.series(session, "node", ["a"], now - 7200, 60)
        fine = history.series(session, "node", ["a", "b"], now - 600, 10)
    # full minutes rolled up, means preserved; the newest minutes wait for the lag
    assert len(coarse) >= 100
    assert all(p.cpu == pytest.approx(1.0) for p in coarse[1:])
    assert all(p.memory_bytes == pytest.approx(GIB) for p in coarse[1:])
    assert coarse[-1].t <= now - 60 - history.ROLLUP_LAG_S
    # a sum over subjects adds their means
    assert len(fine) == 60  # buckets now-600 .. now-10
    assert all(p.cpu == pytest.approx(1.5) and p.subjects == 2 for p in fine)
    assert all(p.memory_bytes == pytest.approx(3 * GIB) for p in fine)
    # a second pass finds nothing more to roll up
    with db.write() as session:
        assert history.maintain(session, now).rolled_up == 0
    # the row cap drops the oldest buckets first
    monkeypatch.setitem(history.MAX_ROWS, 10, 100)
    with db.write() as session:
        history.maintain(session, now)
    with db.read() as session:
        fine_rows = session.scalar(select(func.count()).where(UsageHistory.res == 10))
        newest = session.scalar(select(func.max(UsageHistory.bucket)).where(UsageHistory.res == 10))
    assert fine_rows is not None and fine_rows <= 100
    assert newest == int(now) - 10
    # a task's buckets: none stored for a task that no longer exists; forgotten with it
    task_row = {**rows[0], "subject": "task", "subject_id": "gone"}
    with db.write() as session:
        history.store(session, [task_row])
    with db.read() as session:
        assert history.series(session, "task", ["gone"], now - 7200, 10) == []
    with db.write() as session:
        session.execute(UsageHistory.__table__.insert(), [task_row])
    with db.write() as session:
        assert history.forget_tasks(session, ["gone"]) == 1
    with db.read() as session:
        assert history.series(session, "task", ["gone"], now - 7200, 10) == []


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    cl = LocalCluster().start()
    try:
        cl.add_agent("sim-u", SimDriver(cpu_millis=2000, memory_bytes=2 * GIB))
        with cl.client() as api:
            wait_for(lambda: [n for n in api.nodes() if n["state"] == "ready"], timeout=20)
        yield cl
    finally:
        cl.close()


def _http(cluster: LocalCluster, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=cluster.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def test_api_series_owner_scoped_and_metrics(cluster: LocalCluster) -> None:
    with cluster.client() as api:
        bob = api.add_user("uh-bob")["token"]
        task = api.run_job(name="uh-job", image="busybox", command=["sleep", "600"], memory="64m")
        node = api.nodes()[0]
    with _http(cluster, cluster.admin_token) as admin:

        def points() -> list[dict[str, float]]:
            return list(admin.get(f"/api/v1/tasks/{task['id']}/usage").json()["points"])

        # the sim driver reports a quarter of the memory limit: 16 MiB
        got = wait_for(points, timeout=30)
        assert got[-1]["memory_bytes"] == pytest.approx(16 * 1024**2, rel=0.05)
        body = admin.get(f"/api/v1/tasks/{task['id']}/usage", params={"window_s": 7200}).json()
        assert body["resolution_s"] == 60 and body["memory_limit_bytes"] == 64 * 1024**2
        nodes = wait_for(
            lambda: admin.get(f"/api/v1/nodes/{node['name']}/usage").json()["points"], timeout=30
        )
        assert nodes[-1]["memory_bytes"] > 0
        assert admin.get(f"/api/v1/nodes/{node['id']}").json()["name"] == node["name"]
        total = admin.get("/api/v1/usage").json()
        assert total["kind"] == "tasks" and total["points"]
        assert admin.get("/api/v1/usage", params={"window_s": 5}).status_code == 422

        text = admin.get("/metrics").text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        mem = families["dockyard_task_memory_bytes"].samples
        assert any(s.labels["task"] == task["id"] and s.labels["owner"] == "admin" for s in mem)
        assert families["dockyard_node_memory_used_bytes"].samples
        assert "dockyard_usage_series_omitted" in families

    with _http(cluster, bob) as other:
        assert other.get(f"/api/v1/tasks/{task['id']}/usage").status_code == 404
        mine = other.get("/api/v1/usage").json()
        assert mine["points"] == []  # bob has no tasks: the admin's do not show
        assert other.get(f"/api/v1/nodes/{node['id']}/usage").status_code == 200
        assert other.get("/api/v1/nodes/no-such-node/usage").status_code == 404

    # deleting the ended task (dockyard rm) deletes its history too
    with _http(cluster, cluster.admin_token) as admin:
        assert admin.post(f"/api/v1/tasks/{task['id']}/kill").status_code == 200
        wait_for(
            lambda: admin.get(f"/api/v1/tasks/{task['id']}").json()["state"] == "killed",
            timeout=30,
        )
        assert admin.delete(f"/api/v1/tasks/{task['id']}").status_code == 200
    with cluster.server.db.read() as session:
        left = session.scalar(select(func.count()).where(UsageHistory.subject_id == task["id"]))
    assert left == 0

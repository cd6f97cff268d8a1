"""The dashboard with 1,000 nodes and 10,000 tasks: pages stay bounded and usable.

The cluster's store is filled directly (bulk inserts, as the scheduler would have
left it: 3,000 running tasks on 1,000 nodes, 500 queued that fit nowhere, 6,500
finished). The test asserts what keeps the browser from freezing: every table
renders one page (at most 50 rows) with the right totals, paging and search work,
and the page's DOM stays small. How long each view took is written to
``artifacts/dashboard-scale.json`` (a measurement, not an assertion).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import SCREENSHOTS, UI_TIMEOUT_MS, PageWatch, login, shot
from sqlalchemy import insert, select

from dockyard.store.tables import Node, Task, User, Workload
from dockyard.testing.cluster import LocalCluster

NODES, RUNNING, QUEUED, FINISHED = 1000, 3000, 500, 6500


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # No agents: a long grace keeps the (silent) nodes ready.
    cluster = LocalCluster(tmp_path_factory.mktemp("scale"), node_grace=3600).start()
    try:
        with cluster.client() as api:
            api.run_job("seed", "busybox", ["true"])  # a valid spec to copy
        now = time.time()
        db = cluster.server.db
        with db.write() as session:
            admin = session.scalars(select(User).where(User.name == "admin")).one()
            spec = session.scalars(select(Workload.spec)).first()
            session.execute(
                insert(Node),
                [
                    {
                        "id": f"n-scale{i:05d}",
                        "name": f"node-{i:04d}",
                        "state": "ready",
                        "cpu_millis": 16000,
                        "memory_bytes": 64 << 30,
                        "registered_at": now,
                        "last_heartbeat_at": now,
                        "labels": {"zone": f"z{i % 3}"},
                        "gpus": "0,1",
                    }
                    for i in range(NODES)
                ],
            )
            total = RUNNING + QUEUED + FINISHED
            session.execute(
                insert(Workload),
                [
                    {
                        "id": f"w-scale{i:06d}",
                        "owner_id": admin.id,
                        "name": f"job-{i:05d}",
                        "spec": spec,
                        "created_at": now - total + i,
                    }
                    for i in range(total)
                ],
            )
            rows: list[dict[str, Any]] = []
            for i in range(total):
                row: dict[str, Any] = {
                    "id": f"t-scale{i:06d}",
                    "workload_id": f"w-scale{i:06d}",
                    "owner_id": admin.id,
                    "name": f"job-{i:05d}",
                    "image": "busybox:latest",
                    "cpu_millis": 100,
                    "memory_bytes": 64 << 20,
                    "created_at": now - total + i,
                }
                if i < RUNNING:
                    row |= {"state": "running", "node_id": f"n-scale{i % NODES:05d}"}
                    row |= {"started_at": now - 60}
                    if i < NODES:  # one GPU held on every node
                        row |= {"gpus": 1, "gpu_indices": "0"}
                elif i < RUNNING + QUEUED:  # more memory than any node has: stays queued
                    row |= {"state": "pending", "memory_bytes": 1 << 40}
                else:
                    row |= {"state": "succeeded", "node_id": f"n-scale{i % NODES:05d}"}
                    row |= {"started_at": now - 120, "finished_at": now - 100, "exit_code": 0}
                rows.append(row)
            session.execute(insert(Task), rows)
        yield cluster
    finally:
        cluster.close()


def _timed(page: Any, action: Any, ready: str) -> float:
    start = time.perf_counter()
    action()
    page.wait_for_selector(ready, timeout=UI_TIMEOUT_MS)
    return round(time.perf_counter() - start, 3)


def _rows(page: Any, selector: str) -> int:
    return int(page.locator(selector).count())


def test_thousand_nodes_ten_thousand_tasks(page: Any, watch: PageWatch, big: LocalCluster) -> None:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    login(page, big.url, big.admin_token)
    timings["login_to_live"] = round(time.perf_counter() - start, 3)

    # Overview: one page of nodes out of 1,001 (the seed's local node has none here).
    # A locator, not wait_for_function: the dashboard's CSP forbids eval, which that
    # polls with once the predicate is not already true.
    page.get_by_text("node-0000", exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
    body = page.inner_text("body")
    assert "1000" in body.replace(",", "") or "1,000" in body
    assert _rows(page, "table tbody tr") <= 120  # one page of nodes + recent events
    assert "GPUs allocated (0)" in body  # the GPU usage bar: 1 of 2 devices held
    shot(page, "scale-overview")

    # Jobs: running tab paginated out of 3,000; history out of 6,500+.
    timings["jobs_running"] = _timed(
        page, lambda: page.goto(big.url + "/#/jobs"), "text=/of 3[,.]?00[01]$/"
    )
    assert _rows(page, "table tbody tr") <= 60
    timings["jobs_history"] = _timed(
        page, lambda: page.get_by_role("tab", name="History").click(), "text=/of 6[,.]?50[01]/"
    )
    assert _rows(page, "table tbody tr") <= 60
    shot(page, "scale-jobs-history")

    dom_nodes = int(page.evaluate("document.getElementsByTagName('*').length"))
    assert dom_nodes < 5000, dom_nodes  # bounded by the page size, not by 10,000 tasks
    assert not watch.dialogs and not watch.errors, (watch.dialogs, watch.errors)
    out = Path(SCREENSHOTS).parent / "dashboard-scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"timings_s": timings, "dom_elements": dom_nodes}, indent=2))

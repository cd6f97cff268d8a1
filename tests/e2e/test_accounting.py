"""Accounting and quotas on a real Docker Engine (the batch layer's cgroup accounting)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest
from docker_cluster import docker_cluster

from dockyard.client import Client, ClientError
from dockyard.core.accounting import parse_sge_line
from dockyard.drivers.base import LABEL_NODE, LABEL_TASK
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

TERMINAL = {"succeeded", "failed", "killed", "lost", "expired"}
BURN = "i=0; while [ $i -lt {n} ]; do i=$((i+1)); done"


@pytest.fixture(scope="module")
def sampled(image: str) -> Iterator[ProcessCluster]:
    with docker_cluster(agent_args=["--sample-interval", "0.2"]) as cl:
        yield cl


def finish(api: Client, task_id: str, timeout: float = 120) -> dict[str, Any]:
    return wait_for(
        lambda: t if (t := api.task(task_id))["state"] in TERMINAL else None, timeout=timeout
    )


def record_of(api: Client, task_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: next((r for r in api.accounting() if r["task_id"] == task_id), None), timeout=10
    )


def test_cpu_seconds_match_what_the_job_burned(sampled: ProcessCluster, image: str) -> None:
    with sampled.client() as api:
        # CPU is sampled (every 0.2 s here), not read at exit (a container's cgroup
        # goes with it): the job idles a second after burning, so the last sample
        # has all of it even when the sampler runs late on a loaded machine.
        script = f"time sh -c '{BURN.format(n=2_000_000)}'; sleep 1"
        task = api.run_job("burn", image, ["sh", "-c", script], cpu=1)
        done = finish(api, task["id"])
        assert done["state"] == "succeeded"
        report = "\n".join(line["line"] for line in api.logs(task["id"])["lines"])
        user = re.search(r"user\s+(\d+)m\s*([\d.]+)s", report)
        sys_ = re.search(r"sys\s+(\d+)m\s*([\d.]+)s", report)
        assert user and sys_, report
        burned = sum(int(m.group(1)) * 60 + float(m.group(2)) for m in (user, sys_))
        assert burned > 1.0, "the job should burn a measurable amount of CPU"
        rec = record_of(api, task["id"])
        assert abs(rec["cpu_s"] - burned) <= 0.2 * burned, (rec["cpu_s"], burned)
        assert rec["wall_s"] > 0 and rec["max_memory_bytes"] > 0
        assert rec["owner"] == "admin" and rec["state"] == "succeeded" and rec["exit_code"] == 0


def test_cpu_hours_quota_kills_with_quota_exceeded(sampled: ProcessCluster, image: str) -> None:
    with sampled.client() as admin:
        token = admin.add_user("burner")["token"]
        admin.update_user("burner", quota={"cpu_hours": 1.5 / 3600})
        with sampled.client(token) as api:
            task = api.run_job(
                "spin", image, ["sh", "-c", "while :; do :; done"], cpu=1, kill_grace_s=1
            )
            done = finish(api, task["id"], timeout=60)
            assert (done["state"], done["reason"]) == ("killed", "quota_exceeded")
            rec = record_of(api, task["id"])
            assert 1.5 <= rec["cpu_s"] <= 4.0
            assert rec["quota"] == {"cpu_hours": 1.5 / 3600}
            later = api.run_job("later", image, ["true"])
            waiting = wait_for(
                lambda: t if (t := api.task(later["id"]))["reason"] == "quota" else None,
                timeout=20,
            )
            assert waiting["state"] == "pending" and "CPU-hours" in waiting["message"]
            stats = next(s for s in api.user_stats() if s["name"] == "burner")
            assert stats["quota_cpu_hours_used"] * 3600 >= 1.5
            api.kill(later["id"])


def test_oom_job_is_accounted_with_its_peak_memory(sampled: ProcessCluster, image: str) -> None:
    with sampled.client() as api:
        grow = "x=; while :; do x=\"$x$(head -c 1000000 /dev/zero | tr '\\0' a)\"; sleep 0.05; done"
        task = api.run_job("grow", image, ["sh", "-c", grow], memory="32m")
        done = finish(api, task["id"])
        assert (done["state"], done["reason"]) == ("failed", "oom_killed")
        rec = record_of(api, task["id"])
        assert rec["reason"] == "oom_killed"
        assert 8 * 1024**2 <= rec["max_memory_bytes"] <= 40 * 1024**2
        assert rec["memory_gib_s"] > 0


def test_sge_export_parses_back_field_by_field(sampled: ProcessCluster, image: str) -> None:
    """Its own three runs (a success, a failure, a kill): the module's other tests may
    have run on another cluster (pytest-xdist), so their records are not counted on."""
    with sampled.client() as api:
        ids = [
            api.run_job("sge-ok", image, ["sh", "-c", "sleep 0.3"])["id"],
            api.run_job("sge-fail", image, ["sh", "-c", "exit 3"])["id"],
            api.run_job("sge-kill", image, ["sleep", "60"], kill_grace_s=1)["id"],
        ]
        wait_for(lambda: api.task(ids[2])["state"] == "running", timeout=60)
        api.kill(ids[2])
        for task_id in ids:
            finish(api, task_id)
            record_of(api, task_id)
        records = {r["seq"]: r for r in api.accounting()}
        lines = [line for line in api.export_accounting("sge").splitlines() if line]
        assert len(lines) == len(records) >= 3
        for line in lines:
            fields = parse_sge_line(line)
            rec = records[int(fields["job_number"])]
            assert fields["qname"] == "dockyard"
            assert fields["owner"] == rec["owner"] and fields["hostname"] == rec["node"]
            assert fields["job_name"] == rec["job_name"]
            assert fields["project"] == rec["task_id"]
            assert int(fields["submission_time"]) == int(rec["submitted_at"])
            assert int(fields["end_time"]) == int(rec["ended_at"])
            assert int(fields["exit_status"]) == (rec["exit_code"] or 0)
            assert float(fields["ru_wallclock"]) == pytest.approx(rec["wall_s"], abs=1e-3)
            assert float(fields["cpu"]) == pytest.approx(rec["cpu_s"], abs=1e-3)
            assert int(fields["maxvmem"]) == rec["max_memory_bytes"]
            assert int(fields["task_number"]) == rec["attempt"]
            assert fields["category"].endswith(f"reason={rec['reason']}")
        csv_text = api.export_accounting("csv")
        assert csv_text.splitlines()[0].startswith("seq,task_id,")
        assert len(csv_text.splitlines()) == len(records) + 1


def test_users_cannot_run_maintenance_or_read_others_records(sampled: ProcessCluster) -> None:
    with sampled.client() as admin:
        token = admin.add_user("carol")["token"]
        with sampled.client(token) as carol:
            with pytest.raises(ClientError) as err:
                carol.gc(0)
            assert err.value.status == 403
            assert admin.accounting()  # the admin has records; none of them are hers:
            assert carol.accounting() == [] and carol.export_accounting("sge") == ""
        env = {**os.environ, "DOCKYARD_URL": sampled.url, "DOCKYARD_TOKEN": token}
        for args in (["admin", "export-accounting"], ["admin", "gc"]):
            res = subprocess.run(
                [sys.executable, "-m", "dockyard", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert res.returncode != 0 and "admin" in res.stderr.lower(), res


def test_gc_removes_dead_containers_and_old_records(sampled: ProcessCluster, image: str) -> None:
    """``admin gc``: finished work past the retention goes, and each node removes dead
    dockyard containers it does not own (here: one left by an earlier node identity)."""
    engine = docker.from_env()
    orphan = engine.containers.create(
        image,
        ["true"],
        labels={LABEL_TASK: "t-orphan", LABEL_NODE: "n-gone"},
    )
    try:
        orphan.start()
        wait_for(lambda: engine.containers.get(orphan.id).status == "exited", timeout=30)
        with sampled.client() as api:
            done = finish(api, api.run_job("old", image, ["true"])["id"])
            assert done["state"] == "succeeded"
            records_before = len(api.accounting())
            result = api.gc(0)
            assert result["nodes_pruned"] == 1 and result["tasks"] >= 1
            node_id = sampled.node_id("node-1")
            wait_for(
                lambda: any(e["reason"] == "containers_pruned" for e in api.events(node=node_id)),
                timeout=15,
            )

            def gone() -> bool:
                try:
                    engine.containers.get(orphan.id)
                except docker.errors.NotFound:
                    return True
                return False

            wait_for(gone, timeout=15)
            assert all(t["id"] != done["id"] for t in api.tasks())
            assert len(api.accounting()) == records_before  # accounting outlives task records
    finally:
        try:
            orphan.remove(force=True)
        except docker.errors.NotFound:
            pass

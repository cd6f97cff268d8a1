"""Row 21 of the test matrix: a run lost with its node is charged once, up to node-down.

Real processes on a real Docker Engine: a server and two agents. A job runs on
node-1 (burning CPU, then sleeping); node-1's agent is SIGKILLed; the node goes
down and the job is replaced on node-2. The lost attempt's accounting record is
written at node-down, ending then. When node-1's agent comes back, its stale copy
of the job is killed and that kill is reported: the record must not change, no
second record may appear for the task, and the replacement is charged on its own.
The agent is lost by SIGKILL (and restarted) or by SIGSTOP past the grace (and
resumed, so its watcher reports the stale copy's kill).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from docker_cluster import docker_cluster

from dockyard.client import Client
from dockyard.drivers.base import LABEL_TASK
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

GRACE = 3.0
TERMINAL = {"succeeded", "failed", "killed", "lost", "expired"}
JOB = "i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; echo burned; sleep 600"


@pytest.fixture()
def pair(image: str) -> Iterator[ProcessCluster]:
    with docker_cluster(agents=2, node_grace=GRACE, agent_args=["--sample-interval", "0.2"]) as cl:
        yield cl


def records_of(api: Client, task_id: str) -> list[dict[str, Any]]:
    return [r for r in api.accounting() if r["task_id"] == task_id]


def running_copies(task_id: str) -> list[Any]:
    return list(docker.from_env().containers.list(filters={"label": f"{LABEL_TASK}={task_id}"}))


def node_state(api: Client, name: str) -> str:
    return str(next(n["state"] for n in api.nodes() if n["name"] == name))


@pytest.mark.parametrize("loss", ["sigkill", "sigstop"])
def test_lost_run_is_charged_once_up_to_node_down(
    pair: ProcessCluster, image: str, loss: str
) -> None:
    """``sigkill``: the agent dies and is restarted (it removes the stale copy without
    a report). ``sigstop``: the agent hangs past the grace and resumes: its watcher
    sees the stale copy killed and reports it, a report for a task already lost."""
    with pair.client() as api:
        api.drain("node-2", deadline_s=3600)
        job = api.run_job("lost", image, ["sh", "-c", JOB], cpu=0.5, memory="32m", kill_grace_s=1)
        tid = job["id"]
        wait_for(lambda: api.task(tid)["state"] == "running", timeout=60, message="running")
        wait_for(
            lambda: any(line["line"] == "burned" for line in api.logs(tid)["lines"]),
            timeout=60,
            message="the job burned its CPU",
        )
        wait_for(lambda: api.task(tid)["cpu_seconds"] > 0, timeout=15, message="a usage sample")
        api.undrain("node-2")
        killed_at = time.time()
        if loss == "sigkill":
            pair.stop_agent("node-1", signal.SIGKILL)
        else:
            pair.signal_agent("node-1", signal.SIGSTOP)
        wait_for(lambda: node_state(api, "node-1") == "down", timeout=GRACE + 5)
        lost = api.task(tid)
        assert (lost["state"], lost["reason"]) == ("lost", "node_lost")
        down = next(
            e for e in api.events(node=pair.node_id("node-1")) if e["reason"] == "node_down"
        )
        # Charged at node-down, up to node-down: one record, ending then.
        [record] = wait_for(lambda: records_of(api, tid) or None, timeout=10)
        assert (record["state"], record["reason"], record["attempt"]) == ("lost", "node_lost", 1)
        assert killed_at < record["ended_at"] <= down["at"] + 1.0, (record, down, killed_at)
        assert record["ended_at"] == pytest.approx(lost["finished_at"], abs=1e-3)
        assert record["wall_s"] == pytest.approx(
            record["ended_at"] - record["started_at"], abs=0.01
        )
        assert record["cpu_s"] > 0
        replacement = wait_for(
            lambda: next(
                (
                    t
                    for t in api.tasks()
                    if t["workload_id"] == job["workload_id"]
                    and t["id"] != tid
                    and t["state"] == "running"
                ),
                None,
            ),
            timeout=60,
            message="the replacement runs",
        )
        assert replacement["node"] == "node-2" and replacement["attempt"] == 2
        # The stale copy still runs on node-1's Engine; the agent returns and kills it.
        assert running_copies(tid)
        returned_at = time.time()
        if loss == "sigkill":
            pair.start_agent("node-1")
        else:
            pair.signal_agent("node-1", signal.SIGCONT)
        wait_for(lambda: node_state(api, "node-1") == "ready", timeout=30)
        wait_for(lambda: not running_copies(tid), timeout=60, message="stale copy killed")
        time.sleep(3)  # its kill report and last usage samples arrive and are applied
        after = api.task(tid)
        assert (after["state"], after["finished_at"]) == ("lost", lost["finished_at"]), after
        assert records_of(api, tid) == [record], "the lost run is charged once, unchanged"
        assert record["ended_at"] < returned_at
        # The replacement is charged on its own record once it ends.
        assert records_of(api, replacement["id"]) == []
        api.kill(replacement["id"])
        wait_for(lambda: api.task(replacement["id"])["state"] in TERMINAL, timeout=60)
        [second] = wait_for(lambda: records_of(api, replacement["id"]) or None, timeout=10)
        assert (second["attempt"], second["state"], second["node"]) == (2, "killed", "node-2")
        per_workload = [r for r in api.accounting() if r["workload_id"] == job["workload_id"]]
        assert sorted(r["task_id"] for r in per_workload) == sorted([tid, replacement["id"]])

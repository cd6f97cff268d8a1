"""The scheduler's CLI as a user runs it: a real server and a hollow-node agent
process (GPUs and labels declared), and `dockyard run / plan / queue / users`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from dockyard.testing.cli import CliUser
from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.wait import wait_for


class User(CliUser):
    def __init__(self, cluster: ProcessCluster) -> None:
        super().__init__(
            {
                **os.environ,
                "DOCKYARD_URL": cluster.url,
                "DOCKYARD_TOKEN": cluster.admin_token,
                "PYTHONUNBUFFERED": "1",
                "COLUMNS": "200",  # a wide terminal: tables do not wrap the reasons
            },
            timeout=60,
        )

    def plan(self, *args: str) -> Any:
        """``plan --json ...``: options after the image belong to its command."""
        return json.loads(self.cli("plan", "--json", *args, check=False).stdout)


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    cluster = ProcessCluster(
        driver="sim",
        agent_args=["--nodes", "2", "--cpu", "4", "--memory", "8g", "--gpus", "2"],
    )
    cluster.start_server()
    cluster.start_agent("hollow", extra_args=["--label", "zone=a"])
    try:
        cluster.wait_ready_nodes(2)
        yield User(cluster)
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.close()


def test_gpu_job_with_a_constraint_gets_exclusive_devices(user: User) -> None:
    user.cli(
        "run",
        "--name",
        "train",
        "--gpus",
        "2",
        "--constraint",
        "zone=a",
        "busybox",
        "--",
        "sleep",
        "60",
    )
    task = wait_for(
        lambda: t if (t := user.json("inspect", "train"))["state"] == "running" else None,
        timeout=20,
        message="train running",
    )
    assert sorted(task["gpu_indices"]) == [0, 1]
    user.cli("run", "--name", "train2", "--gpus", "2", "busybox", "--", "sleep", "60")
    other = wait_for(
        lambda: t if (t := user.json("inspect", "train2"))["state"] == "running" else None,
        timeout=20,
        message="train2 running",
    )
    assert other["node_id"] != task["node_id"]  # each node has two GPUs, both taken


def test_plan_says_why_not_and_queue_explains(user: User) -> None:
    refused = user.plan("--memory", "64g", "busybox")
    assert refused["fits"] is False
    assert refused["reason"] == "0/2 nodes fit: 2 insufficient memory"
    shown = user.cli("plan", "--constraint", "zone=b", "busybox", check=False)
    assert shown.returncode == 1  # nothing fits: non-zero
    assert "would wait: 0/2 nodes fit: 2 constraint zone=b" in shown.stdout
    assert user.plan("busybox")["fits"] is True

    user.cli("run", "--hold", "--name", "huge", "--memory", "64g", "busybox", "--", "sleep", "1")
    queue = wait_for(
        lambda: q if (q := user.json("queue"))["entries"] else None,
        timeout=20,
        message="huge queued",
    )
    (entry,) = [e for e in queue["entries"] if e["name"] == "huge"]
    assert "insufficient memory" in entry["message"]
    assert "insufficient memory" in user.cli("queue").stdout
    user.cli("queue", "rm", "huge")  # users remove their own queued work


def test_lock_holds_new_work_and_admin_clears_the_queue(user: User) -> None:
    user.cli("queue", "lock")
    assert user.json("queue")["locked"] is True
    user.cli("run", "--name", "held", "busybox", "--", "sleep", "1")
    held = wait_for(
        lambda: t if (t := user.json("inspect", "held"))["reason"] != "submitted" else None,
        timeout=20,
        message="held explained",
    )
    assert held["state"] == "pending" and "locked" in held["message"]
    user.cli("queue", "rm", "held")
    assert user.json("inspect", "held")["state"] == "killed"
    user.cli("queue", "unlock")
    assert user.json("queue")["locked"] is False


def test_users_show_running_and_share(user: User) -> None:
    """Its own two running jobs (the module's others may have ended by now)."""
    ids = [
        user.cli("run", "--name", f"share-{i}", "busybox", "--", "sleep", "300").stdout.strip()
        for i in range(2)
    ]
    wait_for(
        lambda: all(user.json("inspect", i)["state"] == "running" for i in ids),
        timeout=20,
        message="both running",
    )
    stats = user.json("users")
    admin = next(s for s in stats if s["name"] == "admin")
    assert admin["running"] >= 2 and admin["share"] == 1.0
    assert "admin" in user.cli("users").stdout
    user.cli("kill", *ids)


def test_bad_input_is_a_clear_cli_error(user: User) -> None:
    bad = user.cli("run", "--name", "x", "--constraint", "zone", "busybox", check=False)
    assert bad.returncode != 0 and "constraint" in bad.stderr
    bad = user.cli("run", "--name", "x", "--gpus", "-1", "busybox", check=False)
    assert bad.returncode != 0 and "gpus" in bad.stderr

"""Services on a real Docker Engine: published ports and health checks (http, tcp, cmd).

An in-process server and agent (``LocalCluster``) over the real Docker driver.
The first test goes through ``POST /api/v1/services`` (host port allocated by
the scheduler); the others place a replica-like task with a preset ``port_map``
directly in the store, so the service controller cannot replace an unhealthy
replica before the test has looked at it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from sqlalchemy import select

from dockyard.core.ids import new_id
from dockyard.core.services import build_service_spec
from dockyard.core.specs import build_job_spec
from dockyard.core.states import DesiredState, TaskState
from dockyard.drivers.base import LABEL_NODE
from dockyard.drivers.docker import DockerDriver
from dockyard.server.state.events import EventKind, record
from dockyard.server.state.jobs import bump_generations
from dockyard.store.tables import Event, Node, Task, User, Workload
from dockyard.testing.cluster import LocalCluster, free_port
from dockyard.testing.images import ensure_busybox_image
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker

DOCKYARD = str(Path(sys.executable).parent / "dockyard")
HTTPD = "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"
#: httpd in the background: it can be stopped while the container keeps running.
HTTPD_BG = "mkdir -p /www && echo ok > /www/index.html && httpd -p 8080 -h /www && exec sleep 3600"
FAST = {"interval_s": 0.3, "timeout_s": 1.0, "retries": 2}


@pytest.fixture(scope="module")
def image() -> str:
    return ensure_busybox_image()


@pytest.fixture(scope="module")
def local(image: str) -> Iterator[LocalCluster]:
    cluster = LocalCluster(node_grace=10.0).start()
    node_id = ""
    try:
        agent = cluster.add_agent("docker-1", DockerDriver())
        node_id = agent.node_id
        with cluster.client() as api:
            wait_for(lambda: [n for n in api.nodes() if n["state"] == "ready"], timeout=30)
        yield cluster
    finally:
        cluster.close()
        client = docker.from_env()
        for container in client.containers.list(
            all=True, filters={"label": f"{LABEL_NODE}={node_id}"}
        ):
            container.remove(force=True)


def _place(
    cluster: LocalCluster, image: str, name: str, health: dict[str, Any], command: str = HTTPD
) -> str:
    """A replica of a one-port service (container 8080 -> a free host port), placed on
    the node as the scheduler would; returns its task id."""
    task_spec = build_job_spec(
        name=name, image=image, command=["sh", "-c", command], cpu="0.1", memory="32m"
    )
    spec = build_service_spec(task_spec, ports=[8080], health=health)
    host_port = free_port()
    now = time.time()
    with cluster.server.db.write() as session:
        admin = session.scalars(select(User).where(User.name == "admin")).one()
        node = session.scalars(select(Node)).one()
        workload = Workload(
            id=new_id(),
            owner_id=admin.id,
            name=name,
            kind="job",  # the spec is a service's; kind job keeps the controller away
            spec=spec.to_dict(),
            created_at=now,
        )
        session.add(workload)
        session.flush()
        task = Task(
            id=new_id(),
            workload_id=workload.id,
            owner_id=admin.id,
            name=name,
            attempt=1,
            image=image,
            cpu_millis=100,
            memory_bytes=32 << 20,
            state=TaskState.ASSIGNED,
            desired_state=DesiredState.RUN,
            node_id=node.id,
            reason="placed",
            created_at=now,
            assigned_at=now,
            port_map=[[8080, host_port]],
        )
        session.add(task)
        session.flush()
        record(session, EventKind.TASK, "placed", "placed by the test", task=task)
        bump_generations(session, [node.id])
        task_id, node_id = task.id, node.id
    cluster.server._push({node_id})
    return task_id


def _health(cluster: LocalCluster, task_id: str, want: str, timeout: float = 60) -> dict[str, Any]:
    with cluster.client() as api:
        return wait_for(
            lambda: t if (t := api.task(task_id))["health"] == want else None,
            timeout=timeout,
            message=f"{task_id} {want}",
        )


def _health_events(cluster: LocalCluster, task_id: str) -> list[tuple[str, str]]:
    with cluster.server.db.read() as session:
        return [
            (e.reason, e.message)
            for e in session.scalars(
                select(Event).where(Event.task_id == task_id).order_by(Event.id)
            )
            if e.reason in ("healthy", "unhealthy", "health_starting")
        ]


def _bindings(container_id: str) -> dict[str, Any]:
    attrs = docker.from_env().api.inspect_container(container_id)
    return dict(attrs["HostConfig"]["PortBindings"] or {})


def test_service_via_api_publishes_on_loopback_and_turns_healthy(
    local: LocalCluster, image: str
) -> None:
    with local.client() as api:
        api.create_service(
            {
                "name": "web-health",
                "image": image,
                "command": ["sh", "-c", HTTPD],
                "cpu": "0.1",
                "memory": "32m",
                "ports": [8080],
                "health": {"kind": "http", "path": "/index.html", **FAST},
            }
        )
        task = wait_for(
            lambda: next(
                (
                    t
                    for t in api.tasks(active=True)
                    if t["name"] == "web-health" and t["health"] == "healthy"
                ),
                None,
            ),
            timeout=90,
            message="a healthy web-health replica",
        )
    [endpoint] = task["endpoints"]
    assert endpoint["container"] == 8080 and endpoint["address"] == "127.0.0.1"
    host = int(endpoint["host"])
    response = httpx.get(f"http://127.0.0.1:{host}/index.html", timeout=5, trust_env=False)
    assert response.status_code == 200 and response.text == "ok\n"
    # Bound on the node's address only, not on every interface.
    assert _bindings(task["container_id"]) == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(host)}]
    }
    reasons = [r for r, _ in _health_events(local, task["id"])]
    assert reasons == ["health_starting", "healthy"]
    # What `dockyard inspect --json` prints carries the new fields.
    env = {**os.environ, "DOCKYARD_URL": local.url, "DOCKYARD_TOKEN": local.admin_token}
    proc = subprocess.run(
        [DOCKYARD, "inspect", "--json", task["id"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["health"] == "healthy" and shown["health_at"] is not None
    assert shown["endpoints"] == [{"container": 8080, "host": host, "address": "127.0.0.1"}]


@pytest.mark.parametrize(
    ("health", "want", "detail"),
    [
        ({"kind": "tcp"}, "healthy", "connected"),
        ({"kind": "cmd", "command": ["test", "-f", "/www/index.html"]}, "healthy", "exited 0"),
        ({"kind": "http", "path": "/missing"}, "unhealthy", "404"),
        ({"kind": "cmd", "command": ["false"]}, "unhealthy", "exited 1"),
    ],
    ids=["tcp-ok", "cmd-ok", "http-404", "cmd-false"],
)
def test_health_checks_on_docker(
    local: LocalCluster, image: str, health: dict[str, Any], want: str, detail: str
) -> None:
    name = f"hc-{new_id()[:6]}"
    task_id = _place(local, image, name, {**health, **FAST})
    task = _health(local, task_id, want)
    assert task["state"] == "running"
    [endpoint] = task["endpoints"]
    host = int(endpoint["host"])
    # The port is published on 127.0.0.1 whatever the check says.
    response = httpx.get(f"http://127.0.0.1:{host}/index.html", timeout=5, trust_env=False)
    assert response.status_code == 200
    events = _health_events(local, task_id)
    assert events[0][0] == "health_starting"
    assert events[-1][0] == want and detail in events[-1][1], events
    with local.client() as api:
        api.kill(task_id)
        wait_for(lambda: api.task(task_id)["state"] == "killed", timeout=60)


def test_tcp_check_through_the_proxy_fails_when_nothing_listens(
    local: LocalCluster, image: str
) -> None:
    """Docker's proxy accepts on the host port even when the container does not listen."""
    task_id = _place(local, image, f"hc-{new_id()[:6]}", {"kind": "tcp", **FAST}, HTTPD_BG)
    task = _health(local, task_id, "healthy")
    # Stop httpd; the container keeps running (sleep), its port goes dark.
    container = docker.from_env().containers.get(task["container_id"])
    assert container.exec_run(["killall", "httpd"]).exit_code == 0
    task = _health(local, task_id, "unhealthy")
    assert task["state"] == "running"
    assert [r for r, _ in _health_events(local, task_id)] == [
        "health_starting",
        "healthy",
        "unhealthy",
    ]
    with local.client() as api:
        api.kill(task_id)

"""The README's five-minute tour, run as a user would: `dockyard up`, then the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.testing.cli import CliUser
from dockyard.testing.cluster import free_port
from dockyard.testing.dockerclean import remove_node_resources
from dockyard.testing.wait import wait_for

pytestmark = pytest.mark.docker


class Tour(CliUser):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        env = {
            **os.environ,
            "DOCKYARD_DATA_DIR": str(root / "data"),
            "DOCKYARD_URL": f"http://127.0.0.1:{self.port}",
            "XDG_CONFIG_HOME": str(root / "config"),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("DOCKYARD_TOKEN", None)
        super().__init__(env)


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory, image: str) -> Iterator[Tour]:
    t = Tour(tmp_path_factory.mktemp("tour"))
    log = open(t.root / "up.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dockyard",
            "up",
            "--port",
            str(t.port),
            "--gateway-port",
            str(free_port()),
        ],
        env=t.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: (
                t.cli("nodes", "--json", check=False).returncode == 0
                and any(n["state"] == "ready" for n in t.json("nodes"))
            ),
            timeout=60,
            message="dockyard up with a ready node",
        )
        yield t
    finally:
        node_ids = [n["id"] for n in t.json("nodes")] if proc.poll() is None else []
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        log.close()
        remove_node_resources(node_ids)  # containers and networks; fails on a leaked network


def test_token_file_is_0600(tour: Tour) -> None:
    assert (tour.root / "data" / "admin.token").stat().st_mode & 0o777 == 0o600


def test_tour(tour: Tour, image: str) -> None:
    task_id = tour.cli(
        "run",
        "--name",
        "hello",
        "--cpu",
        "0.5",
        "--memory",
        "64m",
        image,
        "--",
        "sh",
        "-c",
        "echo hi; exit 3",
    ).stdout.strip()
    assert len(task_id) == 12

    done = wait_for(
        lambda: t if (t := tour.json("inspect", task_id))["state"] == "failed" else None,
        timeout=60,
    )
    assert done["exit_code"] == 3 and done["reason"] == "exit_nonzero"
    assert {
        "id",
        "name",
        "owner",
        "state",
        "node",
        "uptime_s",
        "exit_code",
        "reason",
        "events",
        "command",
        "env",
    } <= set(done)

    rows = tour.json("ps", "-a")
    row = next(r for r in rows if r["id"] == task_id)
    assert (row["name"], row["owner"], row["state"]) == ("hello", "admin", "failed")
    table = tour.cli("ps", "-a").stdout
    assert task_id in table and "exit_nonzero" in table

    assert tour.cli("logs", "hello").stdout == "hi\n"
    followed = tour.cli("logs", "-f", task_id, check=False)
    # logs -f exits with the task's code, like docker attach: the job exits 3.
    assert (followed.stdout, followed.returncode) == ("hi\n", 3)

    nodes = tour.json("nodes")
    assert len(nodes) == 1 and nodes[0]["state"] == "ready"
    assert nodes[0]["cpu"] > 0 and nodes[0]["memory_bytes"] > 0
    assert nodes[0]["heartbeat_age_s"] < 5

    long_id = tour.cli(
        "run", "--name", "long", "--kill-grace", "2", image, "--", "sleep", "300"
    ).stdout.strip()
    wait_for(lambda: tour.json("inspect", long_id)["state"] == "running", timeout=60)
    assert tour.json("kill", long_id)["desired_state"] == "stop"
    wait_for(lambda: tour.json("inspect", long_id)["state"] == "killed", timeout=30)
    reasons = [e["reason"] for e in tour.json("events", "--task", long_id)]
    assert "kill_requested" in reasons and "killed" in reasons


def test_cli_errors_are_clear(tour: Tour, image: str) -> None:
    bad = tour.cli("run", "--memory", "lots", image, check=False)
    assert bad.returncode == 1
    assert "memory" in bad.stderr
    bad_image = tour.cli("run", "--", "--privileged", check=False)
    assert bad_image.returncode != 0
    missing = tour.cli("inspect", "nope", check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr
    anonymous = {**tour.env, "DOCKYARD_TOKEN": "dy_wrong"}
    denied = subprocess.run(
        [sys.executable, "-m", "dockyard", "ps"],
        env=anonymous,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert denied.returncode == 1 and "invalid token" in denied.stderr


def test_users_from_the_cli(tour: Tour, image: str) -> None:
    token = tour.cli("user", "add", "bob").stdout.strip()
    assert token.startswith("dy_")
    bob = Tour(tour.root)
    bob.port = tour.port
    bob.env = {**tour.env, "DOCKYARD_TOKEN": token}
    # who, on which server, with which token (docs/cli.md, Contexts)
    assert bob.cli("whoami").stdout.splitlines()[0] == f"bob on http://127.0.0.1:{tour.port}"
    assert bob.json("ps") == []
    denied = bob.cli("user", "add", "eve", check=False)
    assert denied.returncode == 1 and "admin only" in denied.stderr


HTTPD = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"


def test_services_from_the_cli(tour: Tour, image: str) -> None:
    """The README's services tour: create (waits until ready), curl the route, update with
    progress, scale, ls/inspect, template + launch + instances + kill, rm; bad input."""
    created = tour.cli(
        "service",
        "create",
        "web",
        "--image",
        image,
        "--replicas",
        "2",
        "--port",
        "8080",
        "--health-http",
        "/",
        "--health-interval",
        "0.3",
        "--",
        "sh",
        "-c",
        HTTPD,
    )
    assert "2/2 ready" in created.stdout and "/svc/web/" in created.stdout
    url = f"{tour.env['DOCKYARD_URL']}/svc/web/"
    import httpx

    assert httpx.get(url, timeout=5).status_code == 200
    updated = tour.cli("service", "update", "web", "--env", "A=1")
    assert "completed" in updated.stderr and "version 2" in updated.stdout
    assert tour.json("service", "scale", "web", "3")["change"] == "scaled"
    wait_for(lambda: tour.json("service", "inspect", "web")["ready"] == 3, timeout=60)
    listed = tour.json("service", "ls")
    assert [(s["name"], s["version"], s["replicas"]) for s in listed] == [("web", 2, 3)]
    assert "web" in tour.cli("service", "ls").stdout

    tour.cli(
        "template",
        "create",
        "chal",
        "--image",
        image,
        "--port",
        "8080",
        "--health-tcp",
        "--lifetime",
        "600",
        "--",
        "sh",
        "-c",
        HTTPD,
    )
    inst_url = tour.cli("launch", "chal").stdout.strip()
    assert inst_url.startswith(tour.env["DOCKYARD_URL"] + "/svc/chal-")
    assert httpx.get(inst_url, timeout=5).status_code == 200
    (inst,) = tour.json("instances")
    again = tour.cli("launch", "chal", check=False)
    assert again.returncode == 1 and "limit" in again.stderr
    assert "removed" in tour.cli("kill", inst["name"]).stdout
    assert tour.json("instances") == []

    bad = tour.cli("service", "create", "oops", "--image", image, "--replicas", "-2", check=False)
    assert bad.returncode == 1 and "replicas" in bad.stderr
    both = tour.cli(
        "service",
        "create",
        "oops",
        "--image",
        image,
        "--health-tcp",
        "--health-http",
        "/",
        check=False,
    )
    assert both.returncode == 1 and "at most one" in both.stderr
    missing = tour.cli("service", "inspect", "nope", check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr
    tour.cli("service", "rm", "web")
    assert tour.json("service", "ls") == []

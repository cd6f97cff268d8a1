"""``dockyard deploy -f compose.yaml`` against an in-process cluster: the services
appear with the stack label, re-running updates them, and a refused file (by the
converter, or by the server's policy or name check) leaves nothing created."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from dockyard.cli.main import app
from dockyard.client import Client
from dockyard.testing.cluster import LocalCluster

runner = CliRunner()

COMPOSE = """
services:
  web:
    image: busybox
    command: httpd -f -p 8080
    ports: ["80:8080"]
    deploy: {replicas: 2}
  cache:
    image: redis:7
    depends_on: [web]
"""


def deploy(local: LocalCluster, path: Path, token: str, *extra: str) -> tuple[int, str]:
    result = runner.invoke(
        app,
        ["deploy", "-f", str(path), "--json", "--url", local.url, "--token", token, *extra],
    )
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def stack_services(api: Client, stack: str) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in api.services() if s["labels"].get("dockyard.stack") == stack}


def test_deploy_lists_services_with_the_stack_label_and_redeploy_updates(
    local: LocalCluster, tmp_path: Path
) -> None:
    project = tmp_path / "demo"
    project.mkdir()
    (project / "compose.yaml").write_text(COMPOSE)
    code, out = deploy(local, project / "compose.yaml", local.admin_token)
    assert code == 0, out
    result = json.loads(out)
    assert result["stack"] == "demo"
    assert sorted((s["name"], s["action"]) for s in result["services"]) == [
        ("demo_cache", "created"),
        ("demo_web", "created"),
    ]
    assert {(w["service"], w["key"]) for w in result["warnings"]} >= {
        ("web", "ports"),
    }
    with local.client() as api:
        services = stack_services(api, "demo")
        assert set(services) == {"demo_web", "demo_cache"}
        assert (services["demo_web"]["replicas"], services["demo_web"]["ports"]) == (2, [8080])
    (project / "compose.yaml").write_text(COMPOSE.replace("replicas: 2", "replicas: 3"))
    code, out = deploy(local, project / "compose.yaml", local.admin_token)
    assert code == 0, out
    actions = {s["name"]: s["action"] for s in json.loads(out)["services"]}
    assert actions == {"demo_web": "scaled", "demo_cache": "unchanged"}
    with local.client() as api:
        assert stack_services(api, "demo")["demo_web"]["replicas"] == 3
        for name in ("demo_web", "demo_cache"):
            api.remove_service(name)


def test_refused_files_create_nothing(local: LocalCluster, tmp_path: Path) -> None:
    with local.client() as admin:
        token = admin.add_user("carol", home=str(tmp_path))["token"]
        admin.create_service({"name": "taken_b", "image": "busybox"})
    try:
        # The converter refuses: nothing reaches the server.
        path = tmp_path / "compose.yaml"
        path.write_text(
            "services:\n  a:\n    image: busybox\n  b:\n    build: https://example.com/b.git\n"
        )
        code, out = deploy(local, path, token, "--name", "conv")
        assert code == 1
        assert "only a local directory can be built" in " ".join(out.split())
        # A build context that is not there: the build fails before anything is created.
        path.write_text("services:\n  a:\n    image: busybox\n  b:\n    build: ./b\n")
        code, out = deploy(local, path, token, "--name", "conv")
        assert code == 1 and "does not exist" in " ".join(out.split())
        # The server's container policy refuses a privileged service (tried first).
        path.write_text(
            "services:\n  a:\n    image: busybox\n  b:\n    image: busybox\n    privileged: true\n"
        )
        code, out = deploy(local, path, token, "--name", "pol")
        assert code == 1
        assert "refused by your container policy: privileged" in " ".join(out.split())
        # The server refuses the second service (its name is taken): the first is removed.
        path.write_text("services:\n  a:\n    image: busybox\n  b:\n    image: busybox\n")
        code, out = deploy(local, path, token, "--name", "taken")
        assert code == 1
        flat = " ".join(out.split())
        assert "removed taken_a (created by this run)" in flat
        assert "a service named taken_b exists" in flat
        with Client(url=local.url, token=token) as carol:
            assert carol.services() == []
        with local.client() as admin:
            names = {s["name"] for s in admin.services()}
            assert names & {"conv_a", "pol_a", "pol_b", "taken_a"} == set()
    finally:
        with local.client() as admin:
            admin.remove_service("taken_b")


def test_images_from_other_registries_are_refused_and_nothing_stays(
    local: LocalCluster, tmp_path: Path
) -> None:
    """A compose file naming an image on a registry the admin did not allow (here a
    port on the node's loopback) is refused by the server; the run leaves nothing."""
    with local.client() as admin:
        token = admin.add_user("dave", home=str(tmp_path))["token"]
    path = tmp_path / "compose.yaml"
    path.write_text(
        "services:\n  a:\n    image: busybox\n  b:\n    image: 127.0.0.1:2375/probe:1\n"
    )
    code, out = deploy(local, path, token, "--name", "reg")
    assert code == 1
    flat = " ".join(out.split())
    assert "refused by your container policy: image: registry 127.0.0.1:2375" in flat
    with Client(url=local.url, token=token) as dave:
        assert dave.services() == []

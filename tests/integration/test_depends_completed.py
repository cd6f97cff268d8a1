"""``depends_on: {condition: service_completed_successfully}`` (issue 18, hollow node):
the service waited for runs once (``run_once``: a replica that ends is not replaced);
the dependant is created only after it exited 0; when it exits non-zero the deploy
fails naming the state, exit code and reason (``dependency_failed``), the dependant
is not created and the run's changes are undone."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dockyard.cli.main import app
from dockyard.client import Client
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for

runner = CliRunner()

COMPOSE = """
name: {stack}
services:
  migrate:
    image: busybox
    command: exit {code}
  web:
    image: busybox
    command: sleep 3600
    depends_on:
      migrate: {{condition: service_completed_successfully}}
"""


def deploy(local: LocalCluster, tmp_path: Path, stack: str, code: int) -> tuple[int, str]:
    path = tmp_path / f"{stack}.yaml"
    path.write_text(COMPOSE.format(stack=stack, code=code))
    args = ["deploy", "-f", str(path), "--json", "--wait-timeout", "30"]
    result = runner.invoke(app, [*args, "--url", local.url, "--token", local.admin_token])
    return result.exit_code, result.output


def tasks_of(api: Client, name: str) -> list[dict[str, object]]:
    return [t for t in api.tasks(q=name) if t["name"] == name]


def test_dependant_waits_for_exit_0_and_a_failure_stops_it(
    local: LocalCluster, tmp_path: Path
) -> None:
    code, out = deploy(local, tmp_path, "ok", 0)
    assert code == 0, out
    assert {s["name"] for s in json.loads(out)["services"]} == {"ok_migrate", "ok_web"}
    with local.client() as api:
        done = tasks_of(api, "ok_migrate")
        assert [t["state"] for t in done] == ["succeeded"], done
        # web was created after migrate's replica exited 0.
        web = api.service("ok_web")
        assert web["created_at"] >= float(done[0]["finished_at"] or 0)  # type: ignore[arg-type]
        wait_for(lambda: api.service("ok_web")["running"] == 1, timeout=20)
        # It ran once: no other replica is started for it, the service stays.
        assert api.service("ok_migrate")["spec"]["run_once"] is True
        assert len(tasks_of(api, "ok_migrate")) == 1
        assert api.service("ok_migrate")["replicas_detail"] == []

        code, out = deploy(local, tmp_path, "bad", 3)
        assert code == 1, out
        assert "bad_migrate did not complete successfully: failed (exit 3" in out, out
        names = {s["name"] for s in api.services()}
        assert "bad_web" not in names and "bad_migrate" not in names  # undone
        failed = tasks_of(api, "bad_migrate")
        assert [(t["state"], t["exit_code"]) for t in failed] == [("failed", 3)], failed
        for name in ("ok_web", "ok_migrate"):
            api.remove_service(name)

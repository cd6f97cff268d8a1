"""Stacks (issue 18): ``deploy -f base -f override --profile P`` merges the files as
Compose does and starts services after what they depend on; ``stack ls`` lists the
stack, ``stack rm`` removes it (hollow node)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dockyard.cli.main import app
from dockyard.testing.cluster import LocalCluster

runner = CliRunner()

BASE = """
name: shop
services:
  db:
    image: busybox
    command: sleep 3600
    environment: {ROLE: db}
  api:
    image: busybox
    command: sleep 3600
    depends_on:
      db: {condition: service_healthy}
    networks: [back]
  debug:
    image: busybox
    profiles: [debug]
networks:
  back: {internal: true}
"""
OVERRIDE = """
services:
  db:
    environment: {EXTRA: "1"}
    ports: ["5432"]
  api:
    deploy: {replicas: 2}
"""


def cli(local: LocalCluster, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--url", local.url, "--token", local.admin_token])
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_override_profiles_depends_on_stack_ls_and_rm(local: LocalCluster, tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(BASE)
    (tmp_path / "override.yaml").write_text(OVERRIDE)
    files = ["-f", str(tmp_path / "compose.yaml"), "-f", str(tmp_path / "override.yaml")]
    code, out = cli(local, "stack", "deploy", *files, "--dry-run")
    assert code == 0, out
    planned = {s["name"]: s for s in json.loads(out)["services"]}
    assert set(planned) == {"shop_db", "shop_api"}  # debug's profile is not active
    assert planned["shop_db"]["env"] == {"ROLE": "db", "EXTRA": "1"}
    assert planned["shop_db"]["ports"] == [5432]
    assert planned["shop_api"]["replicas"] == 2
    assert planned["shop_api"]["networks"] == [
        {"name": "back", "internal": True, "aliases": ["api"]}
    ]
    code, out = cli(local, "deploy", *files, "--profile", "debug", "--json")
    assert code == 0, out
    order = [s["name"] for s in json.loads(out)["services"]]
    assert set(order) == {"shop_db", "shop_api", "shop_debug"}
    assert order.index("shop_db") < order.index("shop_api")  # after db was healthy
    code, out = cli(local, "stack", "ls", "--json")
    assert code == 0, out
    (shop,) = [s for s in json.loads(out) if s["stack"] == "shop"]
    assert sorted(shop["services"]) == ["shop_api", "shop_db", "shop_debug"]
    code, out = cli(local, "stack", "rm", "shop", "--json")
    assert code == 0, out
    assert sorted(json.loads(out)["removed"]) == ["shop_api", "shop_db", "shop_debug"]
    code, out = cli(local, "stack", "ls", "--json")
    assert code == 0 and not [s for s in json.loads(out) if s["stack"] == "shop"], out
    code, out = cli(local, "stack", "rm", "shop")
    assert code != 0 and "no stack" in out


def test_build_goes_through_the_cluster_builder_then_deploys(
    local: LocalCluster, tmp_path: Path
) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (tmp_path / "compose.yaml").write_text(
        "name: built\nservices:\n  app:\n    build: ./app\n    command: serve\n"
    )
    code, out = cli(local, "stack", "deploy", "-f", str(tmp_path / "compose.yaml"), "--dry-run")
    assert code == 0, out
    assert json.loads(out)["builds"]["built_app"]["context"] == str(tmp_path / "app")
    code, out = cli(local, "deploy", "-f", str(tmp_path / "compose.yaml"), "--json")
    assert code == 0, out
    with local.client() as api:
        image = api.service("built_app")["spec"]["image"]
        assert image.endswith("/built_app:latest") and image != "built_app:latest"  # yours
        assert any(b["image"] == image and b["state"] == "succeeded" for b in api.builds())
        api.remove_service("built_app")


def test_dry_run_makes_the_servers_policy_checks(local: LocalCluster, tmp_path: Path) -> None:
    with local.client() as api:
        api.add_user("dryrunner")
        token = api.create_token("dryrunner")["token"]
    (tmp_path / "compose.yaml").write_text(
        "name: risky\nservices:\n  ok:\n    image: busybox\n"
        "  root:\n    image: busybox\n    privileged: true\n"
    )
    args = ["stack", "deploy", "-f", str(tmp_path / "compose.yaml"), "--dry-run", "--json"]
    result = runner.invoke(app, [*args, "--url", local.url, "--token", token])
    assert result.exit_code == 1, result.output
    refusal = json.loads(result.stdout)["refusals"]
    assert [(r["service"], r["key"]) for r in refusal] == [("root", "privileged")]
    code, out = cli(local, *args)  # an admin may
    assert code == 0 and json.loads(out)["server_checked"] is True, out
    with local.client() as api:
        assert not [s for s in api.services() if s["name"].startswith("risky_")]

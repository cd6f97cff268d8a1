"""Multi-container templates on hollow nodes (SQLite and PostgreSQL): an instance's
services are created in one transaction, share one network of their own (internal
unless the template allows egress) where each answers to its name, and are removed
and expire together. The isolation itself is proven on real Docker
(tests/e2e/test_instances_docker.py)."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.client import Client, ClientError
from dockyard.core.networks import network_id, scope_of
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.wait import wait_for

WEB = {"image": "busybox", "ports": [80], "health": {"kind": "tcp", "interval_s": 0.2}}
DB = {"image": "busybox", "ports": [5432], "memory": "32m"}


def mine(api: Client, prefix: str) -> list[dict[str, Any]]:
    return sorted(
        (s for s in api.services() if s["name"].startswith(prefix)), key=lambda s: s["name"]
    )


def test_multi_container_instance_launches_shares_a_network_and_goes_together(
    two: LocalCluster,
) -> None:
    with two.client() as admin:
        admin.add_user("duo-player")
        token = admin.create_token("duo-player")["token"]
        for bad, field in (
            ({"components": {"bad key": DB}}, "components.bad key"),
            ({"components": {"db": {**DB, "replicas": -1}}}, "components.db"),
            ({"components": {"db": {**DB, "memory": "lots"}}}, "memory"),
        ):
            with pytest.raises(ClientError) as refused:
                admin.create_template({"name": "duo", "service": WEB, **bad})
            assert refused.value.status == 422 and refused.value.field == field, refused.value
        assert admin.templates() == []  # nothing was registered
        out = admin.create_template(
            {"name": "duo", "service": WEB, "components": {"db": DB}, "max_per_user": 1}
        )
        assert out["components"] == ["db"] and out["egress"] is False
        with two.client(token) as player:
            inst = player.launch("duo")
            name = inst["name"]
            parts = mine(player, name)
            assert [p["name"] for p in parts] == [name, f"{name}_db"]
            # Each answers to its name on the one network of the instance, internal.
            assert [p["spec"]["networks"] for p in parts] == [
                [{"name": "default", "internal": True, "aliases": ["duo"]}],
                [{"name": "default", "internal": True, "aliases": ["db"]}],
            ]
            assert {p["labels"]["dockyard.instance"] for p in parts} == {name}
            assert parts[1]["labels"]["dockyard.component"] == "db"
            assert {p["expires_at"] for p in parts} == {inst["expires_at"]}
            scopes = {scope_of(p["name"], p["labels"]) for p in parts}
            assert scopes == {f"instance:{name}"}
            # The limit counts instances, not their services.
            with pytest.raises(ClientError) as limit:
                player.launch("duo")
            assert limit.value.code == "instance_limit"
            assert len(mine(player, "duo-")) == 2
            wait_for(lambda: all(p["ready"] >= 1 for p in mine(player, name)), timeout=20)
            # The instance labels are the server's; a component is capped like the main.
            with pytest.raises(ClientError) as label:
                player.create_service(
                    {"name": "sneak", "image": "busybox", "labels": {"dockyard.instance": name}}
                )
            assert label.value.status == 422 and label.value.field == "labels.dockyard.instance"
            with pytest.raises(ClientError) as capped:
                player.scale_service(f"{name}_db", 5)
            assert capped.value.code == "instance_limit"
            # Removing any part of it removes the whole instance.
            player.remove_service(f"{name}_db")
            assert mine(player, name) == []
            # And they expire together.
            admin.remove_template("duo")
            admin.create_template(
                {"name": "duo", "service": WEB, "components": {"db": DB}, "lifetime_s": 2}
            )
            again = player.launch("duo")["name"]
            assert len(mine(player, again)) == 2
            wait_for(lambda: mine(player, again) == [], timeout=20)
            expired = [e["message"] for e in admin.events() if e["reason"] == "service_expired"]
            assert {f"service {again} expired", f"service {again}_db expired"} <= set(expired)
        admin.remove_template("duo")


def test_egress_template_instances_are_not_internal(two: LocalCluster) -> None:
    with two.client() as admin:
        admin.create_template(
            {
                "name": "open-chal",
                "service": {"image": "busybox", "ports": [80]},
                "network": {"egress": True},
                "max_per_user": 2,
            }
        )
        try:
            assert [t["egress"] for t in admin.templates() if t["name"] == "open-chal"] == [True]
            inst = admin.launch("open-chal")
            assert inst["spec"]["networks"] == [
                {"name": "default", "internal": False, "aliases": ["open-chal"]}
            ]
            # Two instances of one template never share a network (scope: the instance).
            other = admin.launch("open-chal")
            ids = {
                network_id("x", scope_of(s["name"], s["labels"]), "default") for s in (inst, other)
            }
            assert len(ids) == 2
            admin.remove_service(inst["name"])
            admin.remove_service(other["name"])
        finally:
            admin.remove_template("open-chal")


def test_cli_template_create_with_components_and_egress(two: LocalCluster, tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from dockyard.cli.main import app

    parts = tmp_path / "parts.yaml"
    parts.write_text("db:\n  image: busybox\n  ports: [5432]\n")
    args = ["template", "create", "cli-duo", "--image", "busybox", "--port", "80"]
    args += ["--components", str(parts), "--egress", "--json"]
    result = CliRunner().invoke(app, [*args, "--url", two.url, "--token", two.admin_token])
    assert result.exit_code == 0, result.output
    with two.client() as admin:
        (out,) = [t for t in admin.templates() if t["name"] == "cli-duo"]
        assert out["components"] == ["db"] and out["egress"] is True
        admin.remove_template("cli-duo")
    parts.write_text("- not a mapping\n")
    result = CliRunner().invoke(app, [*args, "--url", two.url, "--token", two.admin_token])
    assert result.exit_code != 0 and "expected one mapping" in result.output, result.output

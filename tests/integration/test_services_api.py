"""Services through the API on hollow nodes, on SQLite and PostgreSQL: replicas spread and
get host ports, scale, rolling update, automatic revert, crash back-off, removal,
templates and instances (limit, expiry), ownership and bad input."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.client import Client, ClientError
from dockyard.scheduler.placement import DYNAMIC_PORTS
from dockyard.testing.cluster import LocalCluster
from dockyard.testing.services import service_body as body
from dockyard.testing.wait import wait_for


def settled(api: Client, name: str, replicas: int, version: int) -> dict[str, Any] | None:
    svc = api.service(name)
    detail = svc["replicas_detail"]
    ok = (
        svc["ready"] == replicas
        and len(detail) == replicas
        and all(r["version"] == version and r["ready"] for r in detail)
    )
    return svc if ok else None


def test_replicas_spread_with_allocated_ports_and_scale(two: LocalCluster) -> None:
    with two.client() as api:
        created = api.create_service(body("web"))
        assert created["change"] == "created" and created["url"].endswith("/svc/web/")
        svc = wait_for(lambda: settled(api, "web", 3, 1), timeout=20)
        nodes = {r["node"] for r in svc["replicas_detail"]}
        assert nodes == {"sim-0", "sim-1"}, nodes  # spread over both nodes
        ports = [e for r in svc["replicas_detail"] for e in r["endpoints"]]
        assert len(ports) == 3
        assert all(e["container_port"] == 8080 for e in ports)
        assert all(DYNAMIC_PORTS[0] <= e["host_port"] <= DYNAMIC_PORTS[1] for e in ports)
        assert all(r["health"] == "healthy" for r in svc["replicas_detail"])
        # The replica tasks say the same (the task API shows health and endpoints).
        task = api.task(svc["replicas_detail"][0]["task_id"])
        assert task["health"] == "healthy"

        assert api.scale_service("web", 1)["change"] == "scaled"
        wait_for(lambda: settled(api, "web", 1, 1), timeout=20)
        assert api.service("web")["version"] == 1  # a scale is not a new version
        api.remove_service("web")
        with pytest.raises(ClientError) as gone:
            api.service("web")
        assert gone.value.status == 404


def test_rolling_update_and_automatic_revert(two: LocalCluster) -> None:
    with two.client() as api:
        api.create_service(body("roll", update={"max_parallel": 1, "deadline_s": 20}))
        wait_for(lambda: settled(api, "roll", 3, 1), timeout=20)
        updated = api.update_service("roll", body("roll", image="busybox:2"))
        assert updated["change"] == "rolling" and updated["rollout"]["status"] == "updating"
        svc = wait_for(
            lambda: (
                (s := settled(api, "roll", 3, 2)) and s["rollout"]["status"] == "completed" and s
            ),
            timeout=30,
        )
        assert svc["image"] == "busybox:2"

        # A version whose replicas exit at once fails and comes back as version 4 = v2's spec.
        bad = body("roll", image="busybox:3", env={"DOCKYARD_SIM_RUN_FOR": "0"})
        assert api.update_service("roll", bad)["change"] == "rolling"
        svc = wait_for(
            lambda: (
                (s := settled(api, "roll", 3, 4)) and s["rollout"]["status"] == "reverted" and s
            ),
            timeout=30,
        )
        assert svc["image"] == "busybox:2"
        reasons = [e["reason"] for e in api.events()]
        assert "rollout_reverting" in reasons and "rollout_reverted" in reasons
        api.remove_service("roll")


def test_unhealthy_replica_is_replaced(two: LocalCluster) -> None:
    with two.client() as api:
        check = {"kind": "cmd", "command": ["exit", "1"], "interval_s": 0.2, "retries": 2}
        api.create_service(body("sick", replicas=1, health=check, ports=[]))

        def replaced() -> list[Any] | None:
            ended = [
                t
                for t in api.tasks()
                if t["name"] == "sick"
                and t["stop_reason"] == "unhealthy"
                and t["state"] in ("killed", "failed")
            ]
            return ended or None

        ended = wait_for(replaced, timeout=30)
        assert ended[0]["health"] == "unhealthy"
        # The service keeps one active replica (pending under back-off or starting).
        svc = api.service("sick")
        assert len(svc["replicas_detail"]) == 1
        api.remove_service("sick")


def test_templates_instances_limit_and_expiry(two: LocalCluster) -> None:
    with two.client() as admin:
        admin.add_user("ctf-player")
        player_token = admin.create_token("ctf-player")["token"]
        admin.create_template(
            {
                "name": "chal",
                "service": {"image": "busybox", "ports": [80], "health": {"kind": "tcp"}},
                "lifetime_s": 4,
                "max_per_user": 1,
            }
        )
        with two.client(player_token) as player:
            with pytest.raises(ClientError) as refused:
                player.create_template({"name": "mine", "service": {"image": "busybox"}})
            assert refused.value.status == 403
            assert [t["name"] for t in player.templates()] == ["chal"]
            inst = player.launch("chal")
            assert inst["name"].startswith("chal-") and inst["template"] == "chal"
            assert inst["expires_at"] is not None
            with pytest.raises(ClientError) as limit:
                player.launch("chal")
            assert limit.value.status == 409 and limit.value.code == "instance_limit"
            wait_for(lambda: player.service(inst["name"])["ready"] == 1, timeout=20)
            assert [i["name"] for i in player.instances()] == [inst["name"]]
            # Other users neither see nor touch it.
            admin.add_user("other")
            with two.client(admin.create_token("other")["token"]) as other:
                assert other.instances() == []
                with pytest.raises(ClientError) as hidden:
                    other.remove_service(inst["name"])
                assert hidden.value.status == 404
            # It expires at its lifetime: removed, replicas stopped, a new launch allowed.
            wait_for(lambda: player.instances() == [], timeout=20)
            events = [e["reason"] for e in admin.events()]
            assert "service_expired" in events
            again = player.launch("chal")
            player.remove_service(again["name"])


def test_an_instance_cannot_be_scaled_past_its_template(two: LocalCluster) -> None:
    """``max_per_user`` bounds the copies of a template a user runs: scaling (or
    updating) an instance to more replicas than the template's is a 409, so one
    instance cannot become a hundred; down and back up to the template's is fine."""
    with two.client() as admin:
        admin.add_user("scaler")
        token = admin.create_token("scaler")["token"]
        admin.create_template(
            {"name": "chal2", "service": {"image": "busybox", "ports": [80]}, "max_per_user": 1}
        )
        try:
            with two.client(token) as player:
                inst = player.launch("chal2")
                name = inst["name"]
                for attempt in (
                    lambda: player.scale_service(name, 50),
                    lambda: player.update_service(name, {**inst["spec"], "replicas": 2}),
                    lambda: player.apply_service({**inst["spec"], "name": name, "replicas": 9}),
                ):
                    with pytest.raises(ClientError) as refused:
                        attempt()
                    assert refused.value.status == 409, refused.value
                    assert refused.value.code == "instance_limit"
                    assert player.service(name)["replicas"] == 1
                assert player.scale_service(name, 0)["replicas"] == 0
                assert player.scale_service(name, 1)["replicas"] == 1
                # Gone with its template: the instance may not grow past what it runs.
                admin.remove_template("chal2")
                with pytest.raises(ClientError) as gone:
                    player.scale_service(name, 3)
                assert gone.value.status == 409
                # Admins are not limited.
                assert admin.scale_service(name, 2)["replicas"] == 2
                player.remove_service(name)
        finally:
            if any(t["name"] == "chal2" for t in admin.templates()):
                admin.remove_template("chal2")


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"replicas": -1}, "replicas"),
        ({"ports": [0]}, "ports[0]"),
        ({"health": {"kind": "smoke"}}, "health.kind"),
        ({"health": {"kind": "http"}, "ports": []}, "health"),
        ({"update": {"order": "sideways"}}, "update.order"),
        ({"restart": "never"}, "restart"),
        ({"name": "bad name"}, "name"),
    ],
)
def test_bad_input_names_the_field_and_creates_nothing(
    two: LocalCluster, patch: dict[str, Any], field: str
) -> None:
    with two.client() as api:
        with pytest.raises(ClientError) as err:
            api.create_service({**body("bad"), **patch})
        assert err.value.status == 422 and err.value.field == field
        assert [s for s in api.services() if s["name"] == "bad"] == []


def test_names_are_unique_among_live_services(two: LocalCluster) -> None:
    with two.client() as api:
        api.create_service(body("dup", replicas=0))
        with pytest.raises(ClientError) as err:
            api.create_service(body("dup", replicas=0))
        assert err.value.status == 409 and err.value.code == "name_taken"
        api.remove_service("dup")
        api.create_service(body("dup", replicas=0))  # free again once removed
        api.remove_service("dup")

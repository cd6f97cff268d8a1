"""Container policy: what non-admins may never get (test matrix rows 15, 16, 18)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from dockyard.client import Client, ClientError
from dockyard.testing.cluster import LocalCluster


def counts(local: LocalCluster) -> tuple[int, ...]:
    with local.server.db.read() as session:
        return tuple(
            int(session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
            for table in ("workloads", "tasks")
        )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("alice-home")
    (root / "data").mkdir()
    (root / "etc-link").symlink_to("/etc")
    (root / "sock-link").symlink_to("/var/run/docker.sock")
    return root


@pytest.fixture(scope="module")
def alice(local: LocalCluster, home: Path) -> Iterator[Client]:
    with local.client() as admin:
        token = admin.add_user("alice", home=str(home))["token"]
    with Client(url=local.url, token=token) as api:
        yield api


def refuse(local: LocalCluster, api: Client, body: dict[str, Any]) -> dict[str, Any]:
    before = counts(local)
    response = httpx.post(
        local.url + "/api/v1/jobs",
        json={"name": "x", "image": "busybox", **body},
        headers={"Authorization": f"Bearer {api.token}"},
    )
    assert response.status_code == 403, response.text
    assert counts(local) == before
    payload: dict[str, Any] = response.json()
    assert payload["error"] == "policy" and payload["rule"] and payload["message"]
    return payload


@pytest.mark.parametrize(
    ("mount", "rule"),
    [
        ("/:/host", "no_docker_socket"),
        ("/etc:/x", "mount_outside_allowed_roots"),
        ("/var/run/docker.sock:/var/run/docker.sock", "no_docker_socket"),
        ("/run:/x", "no_docker_socket"),
        ("{home}/../../etc:/x", "mount_outside_allowed_roots"),
        ("{home}/data/../../..:/x", "mount_outside_allowed_roots"),
        ("{home}/etc-link:/x", "mount_outside_allowed_roots"),
        ("{home}/sock-link:/x", "no_docker_socket"),
        ("{home}-sibling:/x", "mount_outside_allowed_roots"),
    ],
)
def test_bind_mounts_outside_home_are_refused(
    local: LocalCluster, alice: Client, home: Path, mount: str, rule: str
) -> None:
    payload = refuse(local, alice, {"mounts": [mount.format(home=home)]})
    assert payload["rule"] == rule and payload["field"] == "mounts"


@pytest.mark.parametrize(
    ("option", "field"),
    [
        ({"privileged": True}, "privileged"),
        ({"cap_add": ["SYS_ADMIN"]}, "cap_add"),
        ({"cap_add": ["ALL"]}, "cap_add"),
        ({"network_mode": "host"}, "network_mode"),
        ({"pid_mode": "host"}, "pid_mode"),
        ({"ipc_mode": "host"}, "ipc_mode"),
        ({"uts_mode": "host"}, "uts_mode"),
        ({"userns_mode": "host"}, "userns_mode"),
        ({"devices": ["/dev/sda"]}, "devices"),
        ({"security_opt": ["seccomp=unconfined"]}, "security_opt"),
        ({"security_opt": ["apparmor=unconfined"]}, "security_opt"),
        ({"sysctls": {"net.ipv4.ip_forward": "1"}}, "sysctls"),
    ],
)
def test_dangerous_options_are_refused(
    local: LocalCluster, alice: Client, option: dict[str, Any], field: str
) -> None:
    assert refuse(local, alice, option)["field"] == field


@pytest.mark.parametrize("image", ["-v", "--privileged", "busybox@sha256:12", "a b", "x;id"])
def test_image_names_that_look_like_flags_are_invalid(alice: Client, image: str) -> None:
    with pytest.raises(ClientError) as err:
        alice.run_job("x", image)
    assert err.value.status == 422 and err.value.field == "image"


def test_mount_inside_home_is_accepted_resolved(alice: Client, home: Path) -> None:
    task = alice.run_job(
        "ok",
        "busybox",
        ["sleep", "0.1"],
        mounts=[f"{home}/data/../data:/data:ro", "scratch:/scratch"],
    )
    spec = alice.task(task["id"])
    assert spec["state"] in {"pending", "assigned", "starting", "running", "succeeded"}


def test_admin_policy_can_allow_one_specific_thing(local: LocalCluster, alice: Client) -> None:
    with local.client() as admin:
        updated = admin.update_user("alice", policy={"allow_cap_add": ["NET_ADMIN"]})
        assert updated["policy"] == {"allow_cap_add": ["NET_ADMIN"]}
        try:
            assert alice.run_job("netadm", "busybox", ["sleep", "0.1"], cap_add=["NET_ADMIN"])
            refuse(local, alice, {"cap_add": ["SYS_ADMIN"]})
            refuse(local, alice, {"privileged": True})
        finally:
            admin.update_user("alice", policy={})
    refuse(local, alice, {"cap_add": ["NET_ADMIN"]})


def test_malformed_policy_is_rejected(local: LocalCluster) -> None:
    with local.client() as admin:
        with pytest.raises(ClientError) as err:
            admin.update_user("alice", policy={"allow_everything": True})
        assert err.value.status == 422 and err.value.field == "policy"


def test_admins_are_not_limited(local: LocalCluster) -> None:
    with local.client() as admin:
        task = admin.run_job(
            "root-job", "busybox", ["sleep", "0.1"], privileged=True, mounts=["/etc:/host-etc:ro"]
        )
        assert task["id"]


def test_users_cannot_change_policies(alice: Client) -> None:
    with pytest.raises(ClientError) as err:
        alice.update_user("alice", policy={"allow_privileged": True})
    assert err.value.status == 403


def test_cluster_wide_policy_from_config_and_per_user_override(tmp_path: Path) -> None:
    """The config file's ``[server] policy`` relaxes every user; a user's own policy wins."""
    local = LocalCluster(tmp_path, policy={"allow_cap_add": ["NET_ADMIN"]}).start()
    try:
        with local.client() as admin:
            token = admin.add_user("bob")["token"]
            with Client(url=local.url, token=token) as bob:
                assert bob.run_job("netadm", "busybox", ["true"], cap_add=["NET_ADMIN"])["id"]
                refuse(local, bob, {"cap_add": ["SYS_ADMIN"]})
                admin.update_user("bob", policy={"allow_cap_add": []})
                refuse(local, bob, {"cap_add": ["NET_ADMIN"]})
    finally:
        local.close()

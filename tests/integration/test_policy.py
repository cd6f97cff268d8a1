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
from dockyard.testing.wait import wait_for


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


@pytest.mark.parametrize(
    "image",
    ["-v", "--privileged", "busybox@sha256:12", "a b", "x;id", "busybox\n", "busybox:t\u00e9st"],
)
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
    cluster_policy = {"allow_cap_add": ["NET_ADMIN"], "allowed_registries": ["registry.example"]}
    local = LocalCluster(tmp_path, policy=cluster_policy).start()
    try:
        with local.client() as admin:
            token = admin.add_user("bob")["token"]
            with Client(url=local.url, token=token) as bob:
                assert bob.run_job("netadm", "busybox", ["true"], cap_add=["NET_ADMIN"])["id"]
                assert bob.plan("reg", "registry.example/team/app:1")
                image = {"image": "registry.example:5000/team/app:1"}  # another port
                assert refuse(local, bob, image)["rule"] == "registry"
                refuse(local, bob, {"cap_add": ["SYS_ADMIN"]})
                admin.update_user("bob", policy={"allow_cap_add": []})
                refuse(local, bob, {"cap_add": ["NET_ADMIN"]})
    finally:
        local.close()


def post(local: LocalCluster, api: Client, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(local.url + path, json=body, headers={"Authorization": f"Bearer {api.token}"})


def refused_by(response: httpx.Response, rule: str, field: str) -> None:
    assert response.status_code == 403, response.text
    payload = response.json()
    assert (payload["error"], payload["rule"], payload["field"]) == ("policy", rule, field)


@pytest.mark.parametrize(
    "image", ["127.0.0.1:5000/probe", "localhost:2375/x:1", "[::1]:22/x", "ghcr.io/acme/app:1"]
)
def test_images_from_other_registries_are_refused(
    local: LocalCluster, alice: Client, image: str
) -> None:
    """A node's Docker Engine fetches whatever host a reference names (an SSRF and
    port-scan oracle): users get Docker Hub only, on every submit path."""
    before = counts(local)
    job = {"name": "reg", "image": image}
    refused_by(post(local, alice, "/api/v1/jobs", job), "registry", "image")
    refused_by(post(local, alice, "/api/v1/jobs/batch", {"jobs": [job]}), "registry", "image")
    refused_by(post(local, alice, "/api/v1/services", job), "registry", "image")
    refused_by(post(local, alice, "/api/v1/plan", job), "registry", "image")
    assert counts(local) == before
    with local.client() as admin:  # admins are not limited
        assert admin.plan("reg", image)


def test_an_admin_allows_a_registry_per_user(local: LocalCluster, alice: Client) -> None:
    with local.client() as admin:
        admin.update_user("alice", policy={"allowed_registries": ["registry.example:5000"]})
        try:
            task = alice.run_job("reg-ok", "registry.example:5000/team/app:2", ["true"])
            assert task["id"]
            refused_by(
                post(local, alice, "/api/v1/jobs", {"name": "x", "image": "127.0.0.1:5000/x"}),
                "registry",
                "image",
            )
            alice.kill(task["id"])
        finally:
            admin.update_user("alice", policy={})


def test_an_instance_updated_by_its_owner_is_checked_for_its_registry(
    local: LocalCluster, alice: Client
) -> None:
    """Templates are registered by admins (their images are the admin's choice); an
    owner's update of an instance is checked under the owner's policy."""
    with local.client() as admin:
        admin.create_template(
            {"name": "reg-ctf", "service": {"image": "registry.example:5000/ctf/chal:1"}}
        )
    try:
        instance = alice.launch("reg-ctf")
        body = {**instance["spec"], "image": "127.0.0.1:5000/probe"}
        response = httpx.put(
            f"{local.url}/api/v1/services/{instance['name']}",
            json=body,
            headers={"Authorization": f"Bearer {alice.token}"},
        )
        refused_by(response, "registry", "image")
        alice.remove_service(instance["name"])
    finally:
        with local.client() as admin:
            admin.remove_template("reg-ctf")


@pytest.mark.parametrize("port", [22, 80, 443, 1023])
def test_privileged_host_ports_are_refused(local: LocalCluster, alice: Client, port: int) -> None:
    before = counts(local)
    job = {"name": "port", "image": "busybox", "ports": [8080, port]}
    refused_by(post(local, alice, "/api/v1/jobs", job), "privileged_port", "ports")
    refused_by(
        post(local, alice, "/api/v1/jobs/batch", {"jobs": [job]}), "privileged_port", "ports"
    )
    assert counts(local) == before


def test_privileged_ports_when_the_policy_allows_or_for_admins(
    local: LocalCluster, alice: Client
) -> None:
    assert alice.plan("port-ok", "busybox", ports=[1024])
    with local.client() as admin:
        assert admin.plan("port-admin", "busybox", ports=[80])
        admin.update_user("alice", policy={"allow_privileged_ports": True})
        try:
            assert alice.plan("port-allowed", "busybox", ports=[80])
        finally:
            admin.update_user("alice", policy={})
    refused_by(
        post(local, alice, "/api/v1/plan", {"name": "x", "image": "busybox", "ports": [80]}),
        "privileged_port",
        "ports",
    )


def test_service_replicas_never_publish_on_privileged_host_ports(
    local: LocalCluster, alice: Client
) -> None:
    """Services name container ports; their host ports come from the scheduler's
    dynamic range, and a body cannot ask for host ports."""
    service = alice.create_service({"name": "web80", "image": "busybox", "ports": [80]})
    try:
        assert service["ports"] == [80]
        placed = wait_for(
            lambda: [e for r in alice.service("web80")["replicas_detail"] for e in r["endpoints"]],
            timeout=20,
            message="an allocated host port",
        )
        assert all(e["host_port"] >= 1024 for e in placed), placed
    finally:
        alice.remove_service("web80")

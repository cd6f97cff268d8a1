"""The container policy's registry allow-list and privileged host ports (red-team
findings c and e), and the volume name grammar. Pure: ``core/security.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.core.errors import ValidationError
from dockyard.core.security import (
    ContainerPolicy,
    Mount,
    PolicyViolation,
    SecurityOptions,
    check,
    registry_host,
    validate_mount,
)
from dockyard.server.config import ServerConfig
from dockyard.settings import ConfigError

DIGEST = "sha256:" + "a" * 64
USER = ContainerPolicy(allowed_roots=("/home/alice",))


def refused(policy: ContainerPolicy, **what: object) -> PolicyViolation:
    with pytest.raises(PolicyViolation) as err:
        check(SecurityOptions(), [], policy, lambda p: p, **what)  # type: ignore[arg-type]
    return err.value


@pytest.mark.parametrize(
    ("image", "host"),
    [
        ("busybox", ""),
        ("library/busybox:1.36", ""),
        ("alice/tools:v1", ""),
        (f"busybox@{DIGEST}", ""),
        ("docker.io/library/busybox", ""),
        ("index.docker.io/library/busybox", ""),
        ("127.0.0.1:5000/x", "127.0.0.1:5000"),
        ("127.0.0.1/x", "127.0.0.1"),
        ("localhost/x:1", "localhost"),
        ("localhost:2375/x", "localhost:2375"),
        ("[::1]:5000/x", "[::1]:5000"),
        ("Registry/x", "registry"),  # uppercase: Docker reads it as a host
        ("ghcr.io/acme/app:1", "ghcr.io"),
        (f"registry.example:5000/team/app@{DIGEST}", "registry.example:5000"),
    ],
)
def test_registry_host_reads_references_like_docker(image: str, host: str) -> None:
    assert registry_host(image) == host


@pytest.mark.parametrize(
    "image",
    ["127.0.0.1:5000/x", "localhost/x", "localhost:2375/probe", "[::1]:22/x", "ghcr.io/a/b"],
)
def test_registries_are_refused_by_default(image: str) -> None:
    error = refused(USER, image=image)
    assert (error.rule, error.field) == ("registry", "image")
    assert registry_host(image) in error.message


@pytest.mark.parametrize("image", ["busybox", "alice/tools:v1", "docker.io/library/busybox"])
def test_docker_hub_is_allowed_by_default(image: str) -> None:
    assert check(SecurityOptions(), [], USER, lambda p: p, image=image) == []


def test_an_admin_lists_the_registries_allowed() -> None:
    policy = ContainerPolicy.from_dict({"allowed_registries": ["Registry.Example:5000"]})
    assert policy.allowed_registries == ("registry.example:5000",)
    check(SecurityOptions(), [], policy, lambda p: p, image="registry.example:5000/team/app:2")
    # exactly that host and port
    assert refused(policy, image="registry.example/team/app").rule == "registry"
    assert refused(policy, image="registry.example:5001/team/app").rule == "registry"
    anything = ContainerPolicy.from_dict({"allowed_registries": ["*"]})
    check(SecurityOptions(), [], anything, lambda p: p, image="127.0.0.1:5000/x")


@pytest.mark.parametrize(
    "value", ["registry.example", ["http://registry.example"], ["a/b"], [""], [5], ["reg istry"]]
)
def test_malformed_registry_lists_are_rejected(value: object) -> None:
    with pytest.raises(ValidationError) as err:
        ContainerPolicy.from_dict({"allowed_registries": value})
    assert err.value.field == "policy"


def test_the_policy_round_trips_its_new_keys() -> None:
    policy = ContainerPolicy.from_dict(
        {"allowed_registries": ["ghcr.io"], "allow_privileged_ports": True}
    )
    assert ContainerPolicy.from_dict(policy.to_dict()) == policy


@pytest.mark.parametrize("port", [1, 22, 80, 443, 1023])
def test_privileged_host_ports_are_refused(port: int) -> None:
    error = refused(USER, host_ports=[8080, port])
    assert (error.rule, error.field) == ("privileged_port", "ports")
    assert str(port) in error.message


def test_unprivileged_ports_and_an_allowing_policy_pass() -> None:
    check(SecurityOptions(), [], USER, lambda p: p, host_ports=[1024, 8080, 65535])
    allowing = ContainerPolicy.from_dict({"allow_privileged_ports": True})
    check(SecurityOptions(), [], allowing, lambda p: p, host_ports=[80, 443])


@pytest.mark.parametrize("name", ["data\n", "d\u00e4ta", "data\r"])
def test_volume_names_match_whole_and_ascii(name: str) -> None:
    with pytest.raises(ValidationError):
        validate_mount(Mount(name, "/data", kind="volume"))


def test_a_bad_cluster_registry_list_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        ServerConfig(data_dir=tmp_path, policy={"allowed_registries": "registry.example"})
    assert err.value.key == "server.policy"

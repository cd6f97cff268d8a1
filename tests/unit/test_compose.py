"""The Compose converter (core/compose.py) against real-world-shaped files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dockyard.cli.specfile import load_documents
from dockyard.core.compose import (
    ComposeError,
    ComposeResult,
    Note,
    convert,
    default_stack,
    policy_keys,
)
from dockyard.core.compose_text import Interpolator, parse_duration, parse_ports
from dockyard.core.errors import ValidationError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "compose"


def _read(path: str) -> str:
    return Path(path).read_text()


def load(
    name: str, environ: dict[str, str] | None = None, stack: str | None = None
) -> ComposeResult:
    directory = FIXTURES / name
    (doc,) = load_documents(directory / "compose.yaml")
    return convert(
        doc,
        stack=stack or default_stack(doc, directory.name),
        base_dir=str(directory),
        environ=environ or {},
        read_file=_read,
    )


def refusals(name: str, environ: dict[str, str] | None = None) -> list[Note]:
    with pytest.raises(ComposeError) as info:
        load(name, environ)
    return list(info.value.refusals)


def by_name(result: ComposeResult) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in result.payloads}


def keys(notes: list[Note], service: str) -> set[str]:
    return {n.key for n in notes if n.service == service}


def test_wordpress_mysql_env_and_named_volumes() -> None:
    result = load("wordpress")
    services = by_name(result)
    assert list(services) == ["wordpress_db", "wordpress_wordpress"]
    db = services["wordpress_db"]
    assert db == {
        "name": "wordpress_db",
        "image": "mysql:8.0",
        "command": ["--default-authentication-plugin=mysql_native_password"],
        "env": {
            "MYSQL_ROOT_PASSWORD": "somewordpress",
            "MYSQL_DATABASE": "wordpress",
            "MYSQL_USER": "wordpress",
            "MYSQL_PASSWORD": "wordpress",
        },
        "mounts": [
            {
                "source": "wordpress_db_data",
                "target": "/var/lib/mysql",
                "read_only": False,
                "kind": "volume",
            }
        ],
        "ports": [3306, 33060],  # expose: reachable by name (published on the node address)
        "networks": [{"name": "default", "internal": False, "aliases": ["db"]}],
        "replicas": 1,
        "labels": {"dockyard.stack": "wordpress"},
    }
    wp = services["wordpress_wordpress"]
    assert wp["ports"] == [80]
    assert wp["env"]["WORDPRESS_DEBUG"] == "0"  # numbers become strings
    assert wp["mounts"][0]["source"] == "wordpress_wp_data"
    assert keys(result.warnings, "db") == {"deploy.resources"}
    assert keys(result.warnings, "wordpress") == {"ports", "deploy.resources"}
    assert result.depends == {"wordpress_wordpress": [("wordpress_db", "service_started")]}
    ports = [n.message for n in result.warnings if n.key == "ports"]
    assert ports == ["80: host side 80 not honoured: dockyard allocates the host port"]
    assert not [n for n in result.warnings if n.key == "networks"]  # they share one now
    assert policy_keys(db) == []


def test_redis_web_healthchecks_scale_update_and_top_level_name() -> None:
    result = load("redis-web")
    services = by_name(result)
    assert set(services) == {"shop_redis", "shop_web"}  # the file's name: wins
    redis = services["shop_redis"]
    assert redis["command"] == ["redis-server", "--appendonly", "yes", "--maxmemory", "256mb"]
    assert redis["health"] == {
        "kind": "cmd",
        "command": ["sh", "-c", "redis-cli ping | grep PONG"],
        "interval_s": 10.0,
        "timeout_s": 3.0,
        "retries": 5,
        "start_period_s": 90.0,
    }
    assert (redis["cpu"], redis["memory"]) == (0.5, "300M")
    web = services["shop_web"]
    assert web["image"] == "shop_web:latest"  # built by the cluster (not pulled)
    assert web["command"] == ["gunicorn", "-b", "0.0.0.0:8000", "app:app"]
    assert web["ports"] == [8000]
    assert web["replicas"] == 3
    assert web["health"]["command"] == ["sh", "-c", "curl -fsS http://localhost:8000/healthz"]
    assert (web["health"]["interval_s"], web["health"]["timeout_s"]) == (30.0, 30.0)
    assert web["update"] == {"max_parallel": 2, "order": "stop-first", "auto_revert": True}
    assert keys(result.warnings, "web") == {
        "build",
        "restart",
        "deploy.update_config.delay",
        "deploy.resources",
    }
    assert Note("", "version", "obsolete, ignored") in result.warnings


def test_nginx_published_ports_labels_placement_and_mounts() -> None:
    result = load("nginx")
    (proxy,) = result.payloads
    assert proxy["name"] == "nginx_proxy"
    assert proxy["ports"] == [80, 443, 9113]
    assert proxy["replicas"] == 2
    assert proxy["labels"] == {
        "com.example.team": "web",
        "com.example.tier": "frontend",  # deploy.labels win over labels
        "dockyard.stack": "nginx",
    }
    assert proxy["constraints"] == ["zone=eu-1"]
    assert (proxy["cpu"], proxy["memory"], proxy["kill_grace_s"]) == (1.0, "256m", 60.0)
    assert proxy["mounts"] == [
        {
            "source": str(FIXTURES / "nginx" / "nginx.conf"),
            "target": "/etc/nginx/nginx.conf",
            "read_only": True,
            "kind": "bind",
        },
        {
            "source": "shared-static",  # external volume: its own name
            "target": "/usr/share/nginx/html",
            "read_only": True,
            "kind": "volume",
        },
    ]
    messages = [n.message for n in result.warnings if n.key == "ports"]
    assert (
        messages[0] == "80: host side 127.0.0.1:8080 not honoured: dockyard allocates the host port"
    )
    assert len(messages) == 3
    assert keys(result.warnings, "proxy") >= {
        "container_name",
        "logging",
        "volumes[1]",
        "deploy.placement.constraints",
        "deploy.resources.reservations.memory",
    }
    assert policy_keys(proxy) == ["mounts"]  # a bind mount: the server checks the roots
    assert proxy["networks"] == [{"name": "front", "internal": False, "aliases": ["proxy"]}]


def test_gpu_service_reservations_entrypoint_and_profiles() -> None:
    result = load("gpu", environ={"HOME": "/home/ada"})
    (trainer,) = result.payloads  # notebook has a profile: skipped
    assert trainer["name"] == "ml_trainer"
    assert trainer["gpus"] == 2
    assert (trainer["cpu"], trainer["memory"]) == (8.0, "32G")
    assert trainer["command"] == ["python", "-u", "train.py", "--epochs", "10"]
    assert trainer["mounts"] == [
        {
            "source": "ml_checkpoints",
            "target": "/workspace/checkpoints",
            "read_only": False,
            "kind": "volume",
        },
        {
            "source": "/home/ada/datasets/imagenet",
            "target": "/data",
            "read_only": True,
            "kind": "bind",
        },
    ]
    assert keys(result.warnings, "trainer") == {
        "working_dir",
        "shm_size",
        "entrypoint",
        "deploy.restart_policy.condition",
        "deploy.restart_policy.max_attempts",
    }
    assert keys(result.warnings, "notebook") == {"profiles"}
    assert (
        Note("", "volumes.checkpoints.driver", "ignored: local volumes on the node")
        in result.warnings
    )
    assert not [n for n in result.warnings if n.key == "networks"]  # one service deployed


def test_build_contexts_are_built_by_the_cluster_then_deployed() -> None:
    result = load("build")
    directory = str(FIXTURES / "build")
    assert result.builds == {
        "build_api": {
            "context": f"{directory}/api",
            "dockerfile": "Dockerfile",
            "tag": "build_api:latest",
        },
        "build_worker": {
            "context": f"{directory}/worker",
            "dockerfile": "Dockerfile",
            "tag": "build_worker:latest",
        },
        "build_docs": {
            "context": f"{directory}/docs",
            "dockerfile": "Dockerfile",
            "tag": "build_docs:latest",
        },
    }
    assert by_name(result)["build_docs"]["image"] == "build_docs:latest"  # replaced once built
    assert ("docs", "build") in {(n.service, n.key) for n in result.warnings}
    doc = {
        "services": {
            "a": {"build": "https://github.com/x/y.git"},
            "b": {"build": {"dockerfile_inline": "FROM x"}},
        }
    }
    with pytest.raises(ComposeError) as info:
        convert(doc, stack="s", base_dir="/p")
    assert {n.key for n in info.value.refusals} == {"build.context", "build.dockerfile_inline"}


def test_dangerous_keys_pass_through_for_the_server_policy() -> None:
    result = load("dangerous")
    monitor = by_name(result)["dangerous_monitor"]
    assert monitor["privileged"] is True
    assert (monitor["network_mode"], monitor["pid_mode"]) == ("host", "host")
    assert monitor["cap_add"] == ["SYS_ADMIN"]
    assert monitor["devices"] == ["/dev/kmsg"]
    assert monitor["mounts"][0]["source"] == "/var/run/docker.sock"
    assert policy_keys(monitor) == [
        "privileged",
        "cap_add",
        "devices",
        "network_mode",
        "pid_mode",
        "mounts",
    ]
    assert policy_keys(by_name(result)["dangerous_app"]) == []


def test_env_file_and_interpolation() -> None:
    result = load("envfile", environ={"DB_PASSWORD": "s3cret", "FROM_SHELL": "x", "TAG": ""})
    (api,) = result.payloads
    assert api["image"] == "ghcr.io/example/api:latest"  # ${TAG:-latest}: empty counts as unset
    assert api["env"] == {
        "APP_ENV": "production",
        "WORKERS": "4",
        "GREETING": "hello world",
        "LITERAL": "${NOT_EXPANDED}",  # single quotes: literal
        "LOG_LEVEL": "info",  # environment: wins over env_file
        "PRICE": "$5",  # $$ is a literal $
        "DATABASE_URL": "postgres://app:s3cret@db:5432/app",
        "FROM_SHELL": "x",
    }
    assert api["ports"] == [8080]
    assert api["replicas"] == 2  # "${REPLICAS:-2}" is a number after interpolation


def test_unset_variables_are_blank_with_a_warning() -> None:
    result = load("envfile", environ={"REPLICAS": "4"})
    (api,) = result.payloads
    assert api["env"]["DATABASE_URL"] == "postgres://app:@db:5432/app"
    assert "FROM_SHELL" not in api["env"]
    assert api["replicas"] == 4
    assert Note("", "${DB_PASSWORD}", "is not set: a blank string is used") in result.warnings


def test_missing_required_env_file_is_refused(tmp_path: Path) -> None:
    doc = {"services": {"api": {"image": "api:1", "env_file": "missing.env"}}}
    with pytest.raises(ComposeError) as info:
        convert(doc, stack="s", base_dir=str(tmp_path), read_file=_read)
    (note,) = info.value.refusals
    assert (note.service, note.key) == ("api", "env_file")
    assert str(tmp_path / "missing.env") in note.message


def test_every_problem_of_every_service_is_listed_at_once() -> None:
    doc = {
        "services": {
            "a": {"image": "x:1", "ports": ["53:53/sctp"], "network_mode": "service:b"},
            "b": {"image": "x:1", "secrets": ["pw"], "enviroment": {"A": "1"}},
            "c": {"image": "x:1", "deploy": {"mode": "global"}, "gpus": "all"},
            "d": {
                "image": "x:1",
                "volumes": ["undeclared:/data"],
                "healthcheck": {"test": ["BAD"]},
            },
            "e": {"command": "true"},
        },
        "include": ["other.yaml"],
    }
    with pytest.raises(ComposeError) as info:
        convert(doc, stack="s", base_dir="/p")
    found = {(n.service, n.key) for n in info.value.refusals}
    assert found == {
        ("", "include"),
        ("a", "ports"),
        ("a", "network_mode"),
        ("b", "secrets"),
        ("b", "enviroment"),  # a typo is not silently ignored
        ("c", "deploy.mode"),
        ("c", "gpus"),
        ("d", "volumes"),
        ("d", "healthcheck"),
        ("e", "image"),
    }
    assert "a: ports: 53/sctp: TCP or UDP only" in str(info.value)


def test_health_disable_restart_no_and_limits_are_checked() -> None:
    doc = {
        "services": {
            "a": {"image": "x:1", "healthcheck": {"disable": True}, "restart": "no"},
            "b": {"image": "x:1", "healthcheck": {"test": ["NONE"]}, "scale": 0},
        }
    }
    result = convert(doc, stack="s", base_dir="/p")
    a, b = result.payloads
    assert "health" not in a and "health" not in b
    assert b["replicas"] == 0
    assert Note("a", "restart", "no: services always restart") in result.warnings
    too_slow = {
        "services": {"a": {"image": "x:1", "healthcheck": {"test": "true", "interval": "2h"}}}
    }
    with pytest.raises(ComposeError, match=r"health\.interval_s"):
        convert(too_slow, stack="s", base_dir="/p")


def test_stack_names() -> None:
    assert default_stack({}, "My Project!") == "myproject"
    assert default_stack({"name": "shop"}, "dir") == "shop"
    assert default_stack({"name": "shop"}, "dir", "prod") == "prod"
    with pytest.raises(ValidationError, match="stack"):
        default_stack({}, "dir", "bad/name")
    long = {"services": {"x" * 60: {"image": "x:1"}}}
    with pytest.raises(ComposeError, match=r"\(name\)"):
        convert(long, stack="stack", base_dir="/p")


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "1"}, "1"),
        ("$A-$B", {"A": "1", "B": "2"}, "1-2"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A:-${B:-x}}", {}, "x"),
        ("${A:+set}", {"A": "1"}, "set"),
        ("${A+set}", {}, ""),
        ("$$HOME and $$", {"HOME": "/h"}, "$HOME and $"),
        ("cost: 5$", {}, "cost: 5$"),
    ],
)
def test_interpolation(text: str, env: dict[str, str], expected: str) -> None:
    assert Interpolator(env).text(text, "x") == expected


def test_interpolation_errors() -> None:
    with pytest.raises(ValidationError, match="required variable A: give A"):
        Interpolator({}).text("${A:?give A}", "x")
    with pytest.raises(ValidationError, match="unterminated"):
        Interpolator({}).text("${A", "x")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (10, 10.0),
        ("0", 0.0),
    ],
)
def test_durations(value: Any, seconds: float) -> None:
    assert parse_duration(value, "x") == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["30", "1x", "s", "", "1m 30s"])
def test_bad_durations(value: str) -> None:
    with pytest.raises(ValidationError):
        parse_duration(value, "x")


def test_ports_grammar() -> None:
    assert [p.target for p in parse_ports("3000-3002", "p")] == [3000, 3001, 3002]
    (port,) = parse_ports("[::1]:8080:80/tcp", "p")
    assert (port.host_ip, port.published, port.target) == ("::1", "8080", 80)
    assert parse_ports(9090, "p")[0].published == ""
    with pytest.raises(ValidationError):
        parse_ports("80:99999", "p")


# -- networks, UDP, depends_on conditions, profiles (issue 18) -----------------------------
def test_networks_internal_aliases_udp_expose_depends_on_and_profiles() -> None:
    doc = {
        "services": {
            "web": {
                "image": "web:1",
                "ports": ["8080:80"],
                "networks": ["front", "back"],
                "depends_on": {
                    "api": {"condition": "service_healthy"},
                    "migrate": {"condition": "service_completed_successfully"},
                },
            },
            "api": {
                "image": "api:1",
                "expose": ["9000", "53/udp"],
                "networks": {"back": {"aliases": ["backend", "rpc"]}},
            },
            "migrate": {"image": "api:1", "command": "migrate"},
            "debug": {"image": "busybox", "profiles": ["debug"], "depends_on": ["api"]},
        },
        "networks": {"front": {}, "back": {"internal": True, "driver": "bridge"}},
    }
    result = convert(doc, stack="s", base_dir="/p")
    bodies = by_name(result)
    assert set(bodies) == {"s_web", "s_api", "s_migrate"}
    assert bodies["s_web"]["networks"] == [
        {"name": "front", "internal": False, "aliases": ["web"]},
        {"name": "back", "internal": True, "aliases": ["web"]},
    ]
    assert bodies["s_api"]["networks"] == [
        {"name": "back", "internal": True, "aliases": ["api", "backend", "rpc"]}
    ]
    assert (bodies["s_api"]["ports"], bodies["s_api"]["udp_ports"]) == ([9000, 53], [53])
    assert bodies["s_migrate"]["networks"][0]["name"] == "default"
    assert result.depends == {
        "s_web": [("s_api", "service_healthy"), ("s_migrate", "service_completed_successfully")]
    }
    # What another waits for to complete runs once; the others are services as usual.
    assert bodies["s_migrate"]["run_once"] is True
    assert "run_once" not in bodies["s_api"] and "run_once" not in bodies["s_web"]
    assert ("debug", "profiles") in {(n.service, n.key) for n in result.warnings}
    assert ("web", "depends_on.migrate") not in {(n.service, n.key) for n in result.warnings}
    with_debug = convert(doc, stack="s", base_dir="/p", profiles=["debug"])
    assert "s_debug" in by_name(with_debug)
    assert with_debug.depends["s_debug"] == [("s_api", "service_started")]
    from_env = convert(doc, stack="s", base_dir="/p", environ={"COMPOSE_PROFILES": "debug"})
    assert "s_debug" in by_name(from_env)


def test_network_and_dependency_mistakes_are_refusals() -> None:
    doc = {
        "services": {
            "a": {"image": "x", "networks": ["nowhere"], "depends_on": ["ghost"]},
            "b": {"image": "x", "depends_on": {"a": {"condition": "service_ready"}}},
            "c": {"image": "x", "depends_on": ["d"]},
            "d": {"image": "x", "profiles": ["off"]},
        },
    }
    with pytest.raises(ComposeError) as info:
        convert(doc, stack="s", base_dir="/p")
    assert {(n.service, n.key) for n in info.value.refusals} == {
        ("a", "networks.nowhere"),
        ("a", "depends_on.ghost"),
        ("b", "depends_on.a"),
        ("c", "depends_on.d"),
    }


def test_environment_names_with_dots_as_docker_takes_them() -> None:
    doc = {"services": {"es": {"image": "elasticsearch:7", "environment": {"discovery.type": "x"}}}}
    (body,) = convert(doc, stack="s", base_dir="/p").payloads
    assert body["env"] == {"discovery.type": "x"}

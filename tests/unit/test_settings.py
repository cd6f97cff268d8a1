"""The config file: precedence (default < file < env < flag), validation, names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dockyard.agent.main import AgentConfig
from dockyard.server.config import ServerConfig
from dockyard.settings import ConfigError, config_path, load, read_file

EXAMPLE = """
[server]
port = 8799
node_grace = 5
max_runtime_cap_s = 3600
policy = { allow_privileged = true, allowed_roots = ["/srv/data"] }

[agent]
driver = "sim"
labels = { zone = "a" }
"""


@pytest.fixture
def cfg_file(tmp_path: Path) -> Path:
    path = tmp_path / "dockyard.toml"
    path.write_text(EXAMPLE)
    return path


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("DOCKYARD_CONFIG", raising=False)
    assert config_path(None) is None
    cfg = load(ServerConfig, "server", None)
    assert (cfg.port, cfg.store, cfg.auth, cfg.node_grace) == (8700, "sqlite", "token", 3.0)


def test_file_then_env_then_flag(monkeypatch: pytest.MonkeyPatch, cfg_file: Path) -> None:
    cfg = load(ServerConfig, "server", cfg_file)
    assert (cfg.port, cfg.node_grace, cfg.max_runtime_cap_s) == (8799, 5.0, 3600.0)
    assert cfg.policy == {"allow_privileged": True, "allowed_roots": ["/srv/data"]}
    monkeypatch.setenv("DOCKYARD_SERVER_PORT", "9001")
    monkeypatch.setenv("DOCKYARD_SERVER_POLICY", '{"allow_sysctls": true}')
    cfg = load(ServerConfig, "server", cfg_file)
    assert cfg.port == 9001 and cfg.policy == {"allow_sysctls": True}
    cfg = load(ServerConfig, "server", cfg_file, overrides={"port": 9002, "node_grace": None})
    assert cfg.port == 9002 and cfg.node_grace == 5.0  # None: flag not given


def test_agent_section(cfg_file: Path) -> None:
    cfg = load(AgentConfig, "agent", cfg_file)
    assert cfg.driver == "sim" and cfg.labels == {"zone": "a"}


def test_env_var_file(monkeypatch: pytest.MonkeyPatch, cfg_file: Path) -> None:
    monkeypatch.setenv("DOCKYARD_CONFIG", str(cfg_file))
    assert config_path(None) == cfg_file


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[server]\nprot = 1\n", "server.prot"),
        ("[server]\nport = 'x'\n", "server.port"),
        ("[server]\nstore = 'mongo'\n", "server.store"),
        ("[server]\nstore = 'postgresql'\n", "server.db_url"),
        ("[server]\nauth = 'ldap'\n", "server.auth"),
        ("[server]\npolicy = { allow_everything = true }\n", "server.policy"),
        ("[agent]\ndriver = 'podman'\n", "agent.driver"),
        ("[nodes]\nx = 1\n", "nodes"),
        ("[server\n", "dockyard.toml"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "dockyard.toml"
    path.write_text(text)
    section = "agent" if text.startswith("[agent]") else "server"
    cls = AgentConfig if section == "agent" else ServerConfig
    with pytest.raises(ConfigError) as info:
        load(cls, section, path)  # type: ignore[type-var]
    assert info.value.key.endswith(key)


def test_max_body_bytes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dockyard.server.http.limits import DEFAULT_MAX_BODY_BYTES

    assert load(ServerConfig, "server", None, file_data={}).max_body_bytes == DEFAULT_MAX_BODY_BYTES
    monkeypatch.setenv("DOCKYARD_SERVER_MAX_BODY_BYTES", "65536")
    assert load(ServerConfig, "server", None, file_data={}).max_body_bytes == 65536
    monkeypatch.setenv("DOCKYARD_SERVER_MAX_BODY_BYTES", "10")
    with pytest.raises(ConfigError) as info:
        load(ServerConfig, "server", None, file_data={})
    assert info.value.key == "server.max_body_bytes"


def test_unknown_env_option_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKYARD_SERVER_PROT", "1")
    with pytest.raises(ConfigError) as info:
        load(ServerConfig, "server", None, file_data={})
    assert info.value.key == "DOCKYARD_SERVER_PROT"


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        config_path(tmp_path / "nope.toml")
    with pytest.raises(ConfigError):
        read_file(tmp_path)  # a directory is not a config file


def test_cli_prints_effective_config_and_refuses_bad_files(cfg_file: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "dockyard", "config", "--config"]
    ok = subprocess.run([*cmd, str(cfg_file)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["server"]["port"] == 8799 and data["agent"]["driver"] == "sim"
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nstore = 'mongo'\n")
    res = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "server.store" in res.stderr

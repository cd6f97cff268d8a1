"""An agent-only install (``pip install dockyard``, no ``[server]`` extra): the agent
and the CLI run without FastAPI, uvicorn, SQLAlchemy, Alembic or psycopg; the server
commands say which extra to install."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

from dockyard.testing.installs import SERVER_STACK, agent_only_cli, without_server_stack

ROOT = Path(__file__).resolve().parents[2]

AGENT = """
import sys
from pathlib import Path
from dockyard.agent.main import Agent, AgentConfig
import dockyard.cli.main, dockyard.client, dockyard.agent.hollow, dockyard.drivers.docker
agent = Agent(AgentConfig(server="tcp://127.0.0.1:9", data_dir=Path(sys.argv[1]), driver="sim"))
loaded = sorted(m for m in sys.modules if m.startswith(("dockyard.server", "dockyard.store")))
print("loaded:", ",".join(loaded))
"""


def run(cmd: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60)


def test_the_agent_builds_without_the_server_stack(tmp_path: Path) -> None:
    result = run(without_server_stack(AGENT), str(tmp_path / "agent"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded:"  # no server or store module


def test_the_block_is_real() -> None:
    result = run(without_server_stack("import fastapi"))
    assert result.returncode == 1 and "No module named 'fastapi'" in result.stderr


def test_cli_commands_run_and_server_commands_name_the_extra(tmp_path: Path) -> None:
    assert run(agent_only_cli("agent", "--help")).returncode == 0
    for command in (["up", "--data-dir", str(tmp_path / "d")], ["server"], ["config"]):
        result = run(agent_only_cli(*command))
        assert result.returncode == 2, (command, result.stderr)
        assert "pip install 'dockyard[server]'" in " ".join(result.stderr.split())
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()  # nothing written


def test_pyproject_keeps_the_server_stack_in_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(deps: list[str]) -> set[str]:
        return {d.split(">")[0].split("[")[0].split("<")[0].strip().lower() for d in deps}

    base = names(project["dependencies"])
    extras = project["optional-dependencies"]
    stack = {name.replace("_", "-") for name in SERVER_STACK} - {"starlette", "psycopg-binary"}
    assert not base & (stack | {"psycopg"}), base & stack
    assert stack - {"psycopg"} <= names(extras["server"])
    assert any(d.startswith("psycopg[binary]") for d in extras["postgres"])

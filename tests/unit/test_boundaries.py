"""Import boundaries from docs/architecture.md, checked on the source tree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "dockyard"

FORBIDDEN = {
    "core": {
        "sqlalchemy",
        "zmq",
        "docker",
        "fastapi",
        "asyncio",
        "httpx",
        "dockyard.server",
        "dockyard.agent",
        "dockyard.store",
        "dockyard.drivers",
    },
    "scheduler": {
        "sqlalchemy",
        "zmq",
        "docker",
        "fastapi",
        "asyncio",
        "httpx",
        "dockyard.server",
        "dockyard.agent",
        "dockyard.store",
        "dockyard.drivers",
    },
    "server": {"dockyard.agent"},
    "agent": {"dockyard.server"},
    "protocol": {"dockyard.server", "dockyard.agent", "sqlalchemy"},
    "drivers": {"dockyard.server", "dockyard.agent", "sqlalchemy", "fastapi"},
}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_boundaries(package: str) -> None:
    files = list((SRC / package).rglob("*.py"))
    assert files
    for path in files:
        for name in imports(path):
            for banned in FORBIDDEN[package]:
                assert not (name == banned or name.startswith(banned + ".")), (
                    f"{path.relative_to(SRC)} imports {name}"
                )


def test_client_does_not_import_server_or_agent() -> None:
    for name in imports(SRC / "client.py"):
        assert not name.startswith(("dockyard.server", "dockyard.agent", "dockyard.store"))

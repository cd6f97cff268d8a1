"""Run dockyard as an agent-only install would (``pip install dockyard`` without the
``server`` extra): the server's web and store stack cannot be imported."""

from __future__ import annotations

import sys

#: Top-level packages only ``dockyard[server]`` / ``dockyard[postgres]`` bring.
SERVER_STACK: tuple[str, ...] = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic")
SERVER_STACK += ("fastapi_offline", "psycopg", "psycopg_binary")

_BLOCK = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, NotInstalled())
"""


def without_server_stack(code: str) -> list[str]:
    """A command running ``code`` in a Python where the server stack is not installed."""
    return [sys.executable, "-c", _BLOCK.format(blocked=set(SERVER_STACK)) + code]


def agent_only_cli(*args: str) -> list[str]:
    """``dockyard ARGS`` in such a Python."""
    code = f"import sys; sys.argv = ['dockyard', *{list(args)!r}]\n"
    code += "from dockyard.cli.main import main; main()\n"
    return without_server_stack(code)

"""Run dockyard as an agent-only install would (``pip install dockyard`` without the
``server`` extra): the server's web and store stack cannot be imported."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

#: Top-level packages only ``dockyard[server]`` / ``dockyard[postgres]`` bring.
SERVER_STACK: tuple[str, ...] = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic")
SERVER_STACK += ("fastapi_offline", "psycopg", "psycopg_binary", "cryptography")

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


def build_wheel(root: Path, out: Path) -> Path:
    """A wheel of the checkout at ``root``, built offline (``--no-build-isolation``,
    the test venv's setuptools) from a copy in ``out`` (the checkout gets no build/)."""
    source = out / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(root / "src", source / "src", ignore=ignore)
    cmd = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", "wheel"]
    cmd += ["--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(source)]
    subprocess.run(cmd, check=True, timeout=180, capture_output=True)
    (wheel,) = out.glob("dockyard-*.whl")
    return wheel

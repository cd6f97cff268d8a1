"""Import boundaries from docs/architecture.md, checked on the source tree.

An allow-list per package: what each may import at run time besides the standard
library and itself. ``from dockyard import x`` and relative imports are resolved
to the module they name; imports under ``if TYPE_CHECKING:`` are type-only and
not counted (they cannot run a query or open a socket).
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "dockyard"

#: Shared leaves every package may use: the base exception and small helpers.
LEAVES = {"dockyard.errors", "dockyard.files", "dockyard.config"}

#: Package (or module) -> what it may import, as module prefixes. The most
#: specific entry that contains a file applies.
ALLOWED: dict[str, set[str]] = {
    "dockyard.core": set(),  # pure domain: stdlib only
    "dockyard.scheduler": {"dockyard.core"},  # pure: filters, scoring, queue order
    "dockyard.protocol": {"dockyard.core", "msgpack", "zmq"},  # wire messages, CURVE keys
    "dockyard.store": {"dockyard.core", "sqlalchemy", "alembic"},
    "dockyard.drivers": {"dockyard.core", "docker", "requests", "tenacity"},
    # -- the server, by role, top to bottom ------------------------------------
    "dockyard.server.main": {"dockyard.server", "dockyard.core", "dockyard.protocol"}
    | {"dockyard.store.db", "dockyard.settings", "dockyard", "uvicorn"},
    "dockyard.server.config": {"dockyard.server.state", "dockyard.core", "dockyard.settings"}
    | {"dockyard.store.db"},
    # HTTP: routes, dashboard, ingress. Store operations only through state/.
    "dockyard.server.http": {
        "dockyard",  # __version__
        "dockyard.core",
        "dockyard.scheduler",
        "dockyard.protocol",
        "dockyard.server.control",
        "dockyard.server.gateway",
        "dockyard.server.state",
        "dockyard.server.errors",
        "dockyard.server.metrics",
        "dockyard.server.loop",
        "dockyard.store.db",
        "dockyard.store.errors",
        "fastapi",
        "starlette",
        "pydantic",
        "httpx",
        "anyio",
        "prometheus_client",
        "websockets",
        "fastapi_offline",  # its copy of Swagger UI's files (http/docs.py)
    },
    # The leader's control plane: loops, scheduling shell, election, services.
    "dockyard.server.control": {
        "dockyard.core",
        "dockyard.scheduler",
        "dockyard.protocol",
        "dockyard.server.gateway",
        "dockyard.server.state",
        "dockyard.server.errors",
        "dockyard.server.metrics",
        "dockyard.server.loop",
        "dockyard.store",
        "sqlalchemy",
        "yaml",
    },
    # The ZeroMQ gateway and its relays. Store operations only through state/.
    "dockyard.server.gateway": {
        "dockyard.core",
        "dockyard.protocol",
        "dockyard.server.state",
        "dockyard.server.errors",
        "dockyard.server.metrics",
        "dockyard.store.db",
        "dockyard.store.errors",
        "zmq",
    },
    # Store operations: the only server code (with control/) that writes SQL.
    "dockyard.server.state": {
        "dockyard.core",
        "dockyard.scheduler",
        "dockyard.protocol",
        "dockyard.server.errors",
        "dockyard.store",
        "sqlalchemy",
    },
    # The server key of secrets and configs (Fernet): the one user of cryptography.
    "dockyard.server.state.keyring": {"dockyard.server.errors", "cryptography"},
    "dockyard.server.metrics": {"dockyard.store", "prometheus_client", "sqlalchemy", "starlette"}
    | {"dockyard", "dockyard.core", "dockyard.server.state"},
    "dockyard.server.loop": set(),
    "dockyard.server.errors": set(),
    "dockyard.server": set(),  # the package itself (__init__)
    # -- the agent ---------------------------------------------------------------
    "dockyard.agent": {
        "dockyard",
        "dockyard.core",
        "dockyard.protocol",
        "dockyard.drivers",
        "dockyard.settings",
        "zmq",
        "psutil",
        "prometheus_client",
        "tenacity",
        "docker",
        "httpx",  # http health checks
        "pynvml",  # GPU discovery
    },
    # -- clients -------------------------------------------------------------------
    "dockyard.client": {"dockyard", "dockyard.core", "httpx", "websockets"},
    "dockyard.cli": {
        "dockyard",
        "dockyard.client",
        "dockyard.core",
        "dockyard.scheduler.constraints",  # parsing --label / --constraint (pure)
        "dockyard.settings",
        "typer",
        "rich",
        "click",
        "httpx",
        "yaml",
        "websockets",
        # only to launch daemons (`server`, `agent`, `up`), imported inside those commands
        "dockyard.server.main",
        "dockyard.server.config",
        "dockyard.agent.main",
        "dockyard.agent.gpus",
        "dockyard.agent.hollow",
        "dockyard.drivers.sim",
        "dockyard.drivers.errors",
        "dockyard.drivers.demo",  # `up` builds the demo image
        "dockyard.systemd",  # sd_notify readiness of the daemons
    },
    "dockyard.settings": {"dockyard.core", "pydantic"},
    "dockyard.testing": {"*"},  # test support may use everything
    "dockyard.__main__": {"dockyard.cli"},
    "dockyard": set(),  # __init__: the version only
    "dockyard.config": {"platformdirs"},
    "dockyard.files": set(),
    "dockyard.errors": set(),
    "dockyard.systemd": set(),  # sd_notify: stdlib only
}

#: Names no package may import at run time, whatever its allow-list says.
FORBIDDEN_IN: dict[str, set[str]] = {
    "dockyard.server.http": {"sqlalchemy", "dockyard.store.tables"},
    "dockyard.server.gateway": {"sqlalchemy", "dockyard.store.tables"},
    "dockyard.server": {"dockyard.agent"},
    "dockyard.agent": {"dockyard.server"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_module(name: str) -> bool:
    base = SRC / name.replace(".", "/")
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


@cache
def runtime_imports(path: Path) -> frozenset[str]:
    """Modules ``path`` imports at run time (``from a import b`` is ``a.b`` when b is a
    module, else ``a``), with relative imports resolved."""
    tree = ast.parse(path.read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(n) for n in ast.walk(node))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if is_module(full) else base)
    return frozenset(found)


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def allows(entry: str, name: str) -> bool:
    """``"*"`` allows anything, ``"dockyard"`` only the package itself (its version),
    any other entry the module and what lies under it."""
    if entry == "*":
        return True
    if entry == "dockyard":
        return name == "dockyard"
    return within(name, entry)


def rule_for(module: str) -> str:
    matches = [key for key in ALLOWED if within(module, key)]
    assert matches, f"{module} has no entry in ALLOWED: add one (and to docs/architecture.md)"
    return max(matches, key=len)


def files() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "migrations" not in p.parts)


def third_party_or_own(name: str) -> bool:
    return name.split(".")[0] not in sys.stdlib_module_names and name != "__future__"


@pytest.mark.parametrize("path", files(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_are_allowed(path: Path) -> None:
    module = module_name(path)
    rule = rule_for(module)
    allowed = ALLOWED[rule] | LEAVES | {rule}
    for name in runtime_imports(path):
        if not third_party_or_own(name):
            continue
        assert any(allows(ok, name) for ok in allowed), (
            f"{module} imports {name}: not in the allow-list of {rule}"
        )
        for scope, banned in FORBIDDEN_IN.items():
            if within(module, scope):
                hit = [b for b in banned if within(name, b)]
                assert not hit, f"{module} imports {name}: {scope} must not import {hit[0]}"


def test_migrations_import_only_the_store() -> None:
    for path in (PKG / "store" / "migrations").rglob("*.py"):
        for name in runtime_imports(path):
            if within(name, "dockyard"):
                assert within(name, "dockyard.store"), f"{path.name} imports {name}"
            else:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in {
                    "__future__",
                    "alembic",
                    "sqlalchemy",
                }


def test_server_roles_have_no_upward_arrows() -> None:
    """Within the server, roles import only roles below them:
    http > control > gateway > config > state (main above all)."""
    floors = ["dockyard.server.state", "dockyard.server.config", "dockyard.server.gateway"]
    floors += ["dockyard.server.control", "dockyard.server.http"]
    for path in files():
        module = module_name(path)
        mine = [i for i, f in enumerate(floors) if within(module, f)]
        if not mine:
            continue
        for name in runtime_imports(path):
            theirs = [i for i, f in enumerate(floors) if within(name, f)]
            if theirs and theirs[0] != mine[0]:
                assert theirs[0] < mine[0], f"{module} imports {name}: an upward arrow"


def import_graph(prefix: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in files():
        module = module_name(path)
        if within(module, prefix):
            graph[module] = {n for n in runtime_imports(path) if within(n, prefix) and n != module}
    return graph


@pytest.mark.parametrize("prefix", ["dockyard.server", "dockyard.cli", "dockyard.agent"])
def test_no_import_circles(prefix: str) -> None:
    graph = import_graph(prefix)
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue  # a package __init__ or a name, not a file of this tree
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_only_the_task_gate_writes_task_state() -> None:
    """``state/tasks.py`` is the only server code that assigns ``Task.state``."""
    gate = PKG / "server" / "state" / "tasks.py"
    for path in (PKG / "server").rglob("*.py"):
        if path == gate:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "state":
                    owner = ast.unparse(target.value)
                    assert "node" in owner.lower() or "build" in owner.lower(), (
                        f"{path.relative_to(PKG)}:{getattr(node, 'lineno', 0)} sets {owner}.state"
                    )
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(".values"):
                keys = {k.arg for k in node.keywords}
                text = ast.unparse(node)
                assert "state" not in keys or "Node" in text or "nodes" in text, (
                    f"{path.relative_to(PKG)}:{getattr(node, 'lineno', 0)} writes: {text[:80]}"
                )


def test_the_checker_sees_from_imports() -> None:
    """The allow-list resolves ``from dockyard import x`` and relative imports."""
    cli = runtime_imports(PKG / "cli" / "main.py")
    assert any(within(n, "dockyard.cli") for n in cli)
    gate = runtime_imports(PKG / "server" / "state" / "tasks.py")
    assert "dockyard.core.states" in gate and "sqlalchemy" in gate

"""docs/test-matrix.md names real tests: every row 1-22 is there, and every pytest
node id it cites is a test function (or a class's test) in the file it names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "test-matrix.md"
NODE_ID = re.compile(r"`(tests/[\w/]+\.py)((?:::\w+)*)`")


def _defined(path: Path) -> set[str]:
    """``name`` and ``Class::name`` for every function and class in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(f"{node.name}::{item.name}")
        elif isinstance(node, ast.Assign):  # e.g. TestX = Machine.TestCase
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.add(target.id)
    return names


def _rows() -> dict[int, str]:
    rows = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|", line)
        if match:
            rows[int(match.group(1))] = line
    return rows


def test_every_row_of_the_matrix_cites_tests() -> None:
    rows = _rows()
    assert sorted(rows) == list(range(1, 23))
    for number, line in rows.items():
        assert NODE_ID.search(line), f"row {number} cites no test"


def test_every_cited_node_id_exists() -> None:
    missing = []
    for number, line in _rows().items():
        for path_text, parts in NODE_ID.findall(line):
            path = ROOT / path_text
            if not path.is_file():
                missing.append(f"row {number}: {path_text}")
                continue
            name = parts.removeprefix("::")
            if not name:
                continue
            defined = _defined(path)
            # A hypothesis state machine's TestCase exposes runTest through its class.
            if name not in defined and name.split("::")[0] not in defined:
                missing.append(f"row {number}: {path_text}{parts}")
            elif "::" in name and name not in defined and not name.endswith("::runTest"):
                missing.append(f"row {number}: {path_text}{parts}")
    assert not missing, missing

"""Reading YAML/JSON spec and Compose files for ``dockyard deploy`` and ``apply``.

YAML is read with YAML 1.2 scalars, as Compose reads it: only ``true``/``false``
are booleans (``restart: no`` stays the string ``no``) and ``22:22`` is a
string, not the base-60 number 1342 YAML 1.1 makes of it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from dockyard.errors import DockyardError

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"


class SpecFileError(DockyardError):
    """A file that cannot be read or parsed; the message says where."""


class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and integers."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
Yaml12Loader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+|0o[0-7]+)$"), list("-+0123456789")
)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecFileError(f"cannot read {path}: {exc}") from None


def load_documents(path: Path) -> list[Any]:
    """Every document of a YAML stream (or the one of a ``.json`` file); empty
    documents are skipped."""
    text = read_text(path)
    if path.suffix.lower() == ".json":
        try:
            return [json.loads(text)]
        except json.JSONDecodeError as exc:
            raise SpecFileError(
                f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    try:
        docs = list(yaml.load_all(text, Loader=Yaml12Loader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecFileError(f"{path}: invalid YAML{where}: {problem}") from None
    return [d for d in docs if d is not None]

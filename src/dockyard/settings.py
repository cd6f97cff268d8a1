"""One TOML config file for server and agent; every option also an env var and a flag.

Precedence, lowest to highest: built-in default < config file < environment <
command-line flag. The file has a ``[server]`` and an ``[agent]`` table whose keys
are the fields of :class:`~dockyard.server.config.ServerConfig` and
:class:`~dockyard.agent.main.AgentConfig`; ``DOCKYARD_SERVER_<KEY>`` /
``DOCKYARD_AGENT_<KEY>`` set one key from the environment (tables and lists as
JSON). The file is ``--config PATH``, else ``$DOCKYARD_CONFIG``, else
``config.toml`` in the user's config directory when it exists.

Values are validated by pydantic against the config dataclass itself, so an
unknown key, a wrong type or a bad name (driver, store, auth backend) is one
clear error naming the key, before anything starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from dockyard import config
from dockyard.errors import DockyardError

T = TypeVar("T")

CONFIG_ENV = "DOCKYARD_CONFIG"
SECTIONS = ("server", "agent")


class ConfigError(DockyardError):
    """The config file, an env var or a flag has a bad value; ``key`` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config {key}: {message}")
        self.key = key


def config_path(explicit: Path | None = None) -> Path | None:
    """The config file in force: the flag, ``$DOCKYARD_CONFIG``, or the default if present."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError("--config", f"{explicit} does not exist")
        return explicit
    env = os.environ.get(CONFIG_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(CONFIG_ENV, f"{path} does not exist")
        return path
    default = config.default_config_dir() / "config.toml"
    return default if default.is_file() else None


def read_file(path: Path | None) -> dict[str, Any]:
    """The parsed config file (``{}`` without one); only known tables are allowed."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path), str(exc)) from exc
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(", ".join(sorted(unknown)), f"unknown table (known: {SECTIONS})")
    return data


def _from_env(section: str, names: set[str]) -> dict[str, Any]:
    prefix = f"DOCKYARD_{section.upper()}_"
    values: dict[str, Any] = {}
    for key, raw in os.environ.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :].lower()
        if name not in names:
            raise ConfigError(key, f"unknown option (known: {', '.join(sorted(names))})")
        if raw.strip().startswith(("{", "[")):
            try:
                values[name] = json.loads(raw)
            except ValueError as exc:
                raise ConfigError(key, f"not valid JSON: {exc}") from exc
        else:
            values[name] = raw
    return values


def load(
    cls: type[T],
    section: str,
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    file_data: Mapping[str, Any] | None = None,
) -> T:
    """Build the ``section`` config dataclass from defaults, file, env and flags.

    ``overrides`` are flags; ``None`` values mean "not given" and are ignored.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    names = {f.name for f in dataclasses.fields(cls)}
    data = dict(file_data if file_data is not None else read_file(path)).get(section) or {}
    if not isinstance(data, dict):
        raise ConfigError(section, "must be a table")
    merged: dict[str, Any] = {}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(
            f"{section}.{sorted(unknown)[0]}",
            f"unknown option (known: {', '.join(sorted(names))})",
        )
    merged.update(data)
    merged.update(_from_env(section, names))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    adapter: TypeAdapter[T] = TypeAdapter(cls)
    try:
        return adapter.validate_python(merged)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "?"
        raise ConfigError(f"{section}.{where}", first["msg"]) from exc


def effective(obj: object) -> dict[str, Any]:
    """A config dataclass as plain, JSON/TOML-friendly values (for ``dockyard config``)."""
    adapter: TypeAdapter[Any] = TypeAdapter(type(obj))
    return dict(adapter.dump_python(obj, mode="json"))

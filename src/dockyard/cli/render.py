"""Turning API objects into tables and JSON for the terminal."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

T = TypeVar("T")

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def reset_consoles() -> None:
    """New consoles for a new command: they read the terminal and ``COLUMNS`` as it is
    now, not as it was when this module was first imported (in-process runs)."""
    global console, err_console
    console = Console(highlight=False)
    err_console = Console(stderr=True, highlight=False)


STATE_STYLE = {
    "pending": "yellow",
    "assigned": "cyan",
    "pulling": "cyan",
    "starting": "cyan",
    "running": "green",
    "succeeded": "bold green",
    "failed": "red",
    "killed": "magenta",
    "lost": "red",
    "expired": "magenta",
    "ready": "green",
    "down": "red",
}


#: ``-o/--output`` of the command being run: json, yaml, name, wide or None (the table).
OUTPUTS = ("json", "yaml", "name", "wide")
output: str | None = None
#: ``-o wide``: tables show every column they have.
wide = False


def print_json(data: Any) -> None:
    """Print machine-readable output: stable keys, no colour, one document."""
    print(json.dumps(data, indent=2, sort_keys=True))


def names(data: Any) -> list[str]:
    """``-o name``: each object's name (or id), one a line."""
    items = data if isinstance(data, list) else [data]
    out = []
    for item in items:
        if isinstance(item, dict):
            key = next((k for k in ("name", "id", "image", "user") if item.get(k)), None)
            out.append(str(item[key]) if key else json.dumps(item, sort_keys=True))
        else:
            out.append(str(item))
    return out


def emit(data: T, json_out: bool, human: Callable[[T], str | None]) -> None:
    """A command's result: with ``--json`` (or ``-o json``) as one JSON document,
    ``-o yaml`` as YAML, ``-o name`` as names, else as ``human`` shows it (``human``
    prints it, or returns a line for this to print)."""
    if json_out or output == "json":
        print_json(data)
        return
    if output == "yaml":
        import yaml

        print(yaml.safe_dump(data, sort_keys=True, default_flow_style=False), end="")
        return
    if output == "name":
        for line in names(data):
            print(line)
        return
    text = human(data)
    if text is not None:
        print(text)


def machine() -> bool:
    """The output is for programs (``-o json|yaml|name``): no progress, no colour."""
    return output in ("json", "yaml", "name")


def counts(result: dict[str, Any]) -> str:
    """A map of counts on one line: ``tasks: 3, logs: 10``."""
    return ", ".join(f"{k}: {v}" for k, v in result.items())


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600:02d}h"


def size(amount: int) -> str:
    for unit, factor in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if amount >= factor:
            return f"{amount / factor:.1f}{unit}".replace(f".0{unit}", unit)
    return f"{amount}B"


def state(value: str) -> str:
    style = STATE_STYLE.get(value, "")
    return f"[{style}]{value}[/]" if style else value


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    grid = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold", no_wrap=column in ("ID", "NAME", "STATE"))
    for row in rows:
        grid.add_row(*row)
    console.print(grid)


def timestamp(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def task_reason(task: dict[str, Any]) -> str:
    reason = str(task.get("reason") or "")
    message = str(task.get("message") or "")
    if task.get("state") == "pending" and message:
        return f"{reason}: {message}"
    return reason

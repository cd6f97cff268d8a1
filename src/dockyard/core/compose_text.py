"""The small text grammars of Compose files. Pure.

Variable interpolation (``${VAR}``, ``${VAR:-default}``, ``$$`` ...), ``.env`` /
``env_file`` lines, Go-style durations (``1m30s``) and port strings
(``127.0.0.1:8080:80/tcp``). Used by :mod:`dockyard.core.compose`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dockyard.core.errors import ValidationError

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


class Interpolator:
    """Substitutes variables the way Compose does; remembers names that were unset."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.unset: set[str] = set()

    def tree(self, value: Any, where: str) -> Any:
        """Interpolate every string value (not the keys) of a parsed document."""
        if isinstance(value, str):
            return self.text(value, where)
        if isinstance(value, Mapping):
            return {k: self.tree(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.tree(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    def text(self, text: str, where: str) -> str:
        out: list[str] = []
        i = 0
        while i < len(text):
            char = text[i]
            if char != "$" or i + 1 >= len(text):
                out.append(char)
                i += 1
                continue
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
            elif nxt == "{":
                end = _closing_brace(text, i + 2)
                if end < 0:
                    raise ValidationError(where, f"unterminated ${{ in {text!r}")
                out.append(self._braced(text[i + 2 : end], where))
                i = end + 1
            else:
                match = _NAME_RE.match(text, i + 1)
                if match is None:
                    out.append("$")
                    i += 1
                else:
                    out.append(self._lookup(match.group(0)))
                    i = match.end()
        return "".join(out)

    def _lookup(self, name: str) -> str:
        if name in self.environ:
            return self.environ[name]
        self.unset.add(name)
        return ""

    def _braced(self, inner: str, where: str) -> str:
        match = _NAME_RE.match(inner)
        if match is None:
            raise ValidationError(where, f"invalid variable ${{{inner}}}")
        name, rest = match.group(0), inner[match.end() :]
        if not rest:
            return self._lookup(name)
        value = self.environ.get(name)
        for op in (":-", ":?", ":+", "-", "?", "+"):
            if rest.startswith(op):
                arg = rest[len(op) :]
                break
        else:
            raise ValidationError(where, f"invalid variable ${{{inner}}}")
        present = value is not None and (value != "" or ":" not in op)
        if op.endswith("-"):
            return value if present and value is not None else self.text(arg, where)
        if op.endswith("+"):
            return self.text(arg, where) if present else ""
        if not present or value is None:
            detail = self.text(arg, where) or "is not set"
            raise ValidationError(where, f"required variable {name}: {detail}")
        return value


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing a ``${`` whose body starts at ``start`` (nesting aware)."""
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def parse_env_lines(text: str, interpolator: Interpolator, where: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, ``export`` prefix, quotes); a bare ``KEY``
    takes the value from the environment, or is skipped when unset there."""
    result: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not _NAME_RE.fullmatch(key):
            raise ValidationError(f"{where}:{number}", f"invalid variable name {key!r}")
        if not sep:
            if key in interpolator.environ:
                result[key] = interpolator.environ[key]
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            result[key] = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            unescaped = value[1:-1].replace("\\n", "\n").replace('\\"', '"')
            result[key] = interpolator.text(unescaped, f"{where}:{number}")
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
            result[key] = interpolator.text(value, f"{where}:{number}")
    return result


def parse_duration(value: Any, where: str) -> float:
    """Seconds from a Go duration (``30s``, ``1m30s``, ``500ms``) or a number of seconds."""
    if isinstance(value, bool):
        raise ValidationError(where, "must be a duration such as 30s or 1m30s")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text == "0":
        return 0.0
    total = 0.0
    position = 0
    for match in _DURATION_PART_RE.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise ValidationError(where, f"cannot parse duration {value!r} (use e.g. 30s, 1m30s)")
    return total


@dataclass(frozen=True, slots=True)
class PortSpec:
    """One container port of a Compose ``ports`` entry, with what it asked to publish."""

    target: int
    published: str = ""
    host_ip: str = ""
    protocol: str = "tcp"


def parse_ports(entry: Any, where: str) -> list[PortSpec]:
    """The short (``[IP:][HOST:]CONTAINER[/PROTO]``, ranges allowed) or long syntax."""
    if isinstance(entry, Mapping):
        target = _port_number(entry.get("target"), f"{where}.target")
        published = entry.get("published")
        return [
            PortSpec(
                target=target,
                published="" if published is None else str(published),
                host_ip=str(entry.get("host_ip") or ""),
                protocol=str(entry.get("protocol") or "tcp").lower(),
            )
        ]
    if isinstance(entry, bool) or not isinstance(entry, int | str):
        raise ValidationError(where, f"cannot parse port {entry!r}")
    text = str(entry).strip()
    text, _, protocol = text.partition("/")
    parts = text.rsplit(":", 2)
    host_ip = parts[0].strip("[]") if len(parts) == 3 else ""
    published = parts[-2] if len(parts) >= 2 else ""
    targets = _port_range(parts[-1], where)
    return [
        PortSpec(target=t, published=published, host_ip=host_ip, protocol=(protocol or "tcp"))
        for t in targets
    ]


def _port_range(text: str, where: str) -> list[int]:
    low, dash, high = text.partition("-")
    first = _port_number(low, where)
    last = _port_number(high, where) if dash else first
    if last < first or last - first >= 64:
        raise ValidationError(where, f"invalid port range {text!r}")
    return list(range(first, last + 1))


def _port_number(value: Any, where: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValidationError(where, f"cannot parse port {value!r}") from None
    if not 1 <= number <= 65535:
        raise ValidationError(where, f"port {number} is not between 1 and 65535")
    return number

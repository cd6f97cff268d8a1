"""Secrets and configs: named values a user stores on the server and a service
mounts as files (Compose's and Swarm's ``secrets:`` / ``configs:``). Pure.

A service references them by name in its owner's namespace (:class:`FileRef`):
a secret is mounted at ``/run/secrets/TARGET`` (TARGET defaults to the name; an
absolute target is used as it is), a config at its absolute ``target`` (default
``/NAME``), each read-only with the ``mode`` asked (default 0444). The values
themselves never appear in a spec: the server stores them encrypted
(``server/state/secrets.py``) and sends them to a node only in the start entry of
a replica (``docs/security.md``, *Secrets and configs*).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dockyard.core.errors import ValidationError
from dockyard.core.specs import validate_name

#: Largest value (as Docker Swarm: 500 KB for a secret; configs the same here).
MAX_VALUE_BYTES = 512 * 1024
#: References per service (secrets and configs together).
MAX_REFS = 32
SECRETS_DIR = "/run/secrets"
DEFAULT_MODE = 0o444
#: Container paths a config or secret may not be mounted on.
_RESERVED = ("/", "/proc", "/sys", "/dev", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname")


class FileKind(StrEnum):
    SECRET = "secret"
    CONFIG = "config"

    @property
    def plural(self) -> str:
        return f"{self.value}s"


@dataclass(frozen=True, slots=True)
class FileRef:
    """One secret or config a service mounts: ``source`` (the stored value's name),
    the absolute container path ``target``, the file's ``mode``, ``uid``/``gid``
    (None: the agent's, root on a node)."""

    kind: FileKind
    source: str
    target: str
    mode: int = DEFAULT_MODE
    uid: int | None = None
    gid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "source": self.source,
            "target": self.target,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileRef:
        """Read back a stored reference (already validated)."""
        return cls(
            FileKind(str(data["kind"])),
            str(data["source"]),
            str(data["target"]),
            int(data.get("mode", DEFAULT_MODE)),
            None if data.get("uid") is None else int(data["uid"]),
            None if data.get("gid") is None else int(data["gid"]),
        )


def validate_value_name(name: Any, field: str = "name") -> str:
    """A secret's or config's name: the usual name rule."""
    return validate_name(name, field)


def validate_value(data: bytes, field: str = "data") -> bytes:
    if not isinstance(data, bytes):
        raise ValidationError(field, "must be bytes")
    if len(data) > MAX_VALUE_BYTES:
        raise ValidationError(field, f"is {len(data)} bytes; at most {MAX_VALUE_BYTES}")
    return data


def parse_mode(value: Any, field: str) -> int:
    """A file mode: an integer, or a string of octal digits (``"0440"``)."""
    if isinstance(value, str):
        try:
            value = int(value, 8)
        except ValueError:
            raise ValidationError(field, f"{value!r} is not an octal mode like 0440") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
        raise ValidationError(field, "must be a file mode from 0 to 0777")
    return value


def parse_file_refs(kind: FileKind, items: Any, field: str | None = None) -> tuple[FileRef, ...]:
    """Validate a service's ``secrets`` or ``configs`` list: names (a string) or maps
    ``{source, target, mode, uid, gid}``. Raises :class:`ValidationError` naming the
    field (``secrets[1].target``)."""
    field = field or kind.plural
    if items is None:
        return ()
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        raise ValidationError(field, "must be a list")
    refs: list[FileRef] = []
    for index, item in enumerate(items):
        where = f"{field}[{index}]"
        if isinstance(item, str):
            item = {"source": item}
        if not isinstance(item, Mapping):
            raise ValidationError(where, "must be a name or {source, target, mode, uid, gid}")
        unknown = sorted(set(item) - {"source", "target", "mode", "uid", "gid"})
        if unknown:
            raise ValidationError(f"{where}.{unknown[0]}", "is not a field of a reference")
        source = validate_value_name(item.get("source"), f"{where}.source")
        target = _target(kind, source, item.get("target"), f"{where}.target")
        mode = parse_mode(item.get("mode", DEFAULT_MODE), f"{where}.mode")
        ids: list[int | None] = []
        for key in ("uid", "gid"):
            value = item.get(key)
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31
            ):
                raise ValidationError(f"{where}.{key}", "must be a numeric id")
            ids.append(value)
        refs.append(FileRef(kind, source, target, mode, ids[0], ids[1]))
    return tuple(refs)


def check_refs(refs: Sequence[FileRef], field: str = "secrets") -> tuple[FileRef, ...]:
    """All of a service's references together: at most :data:`MAX_REFS`, no target twice."""
    if len(refs) > MAX_REFS:
        raise ValidationError(field, f"at most {MAX_REFS} secrets and configs per service")
    seen: set[str] = set()
    for ref in refs:
        if ref.target in seen:
            raise ValidationError(ref.kind.plural, f"two files are mounted at {ref.target}")
        seen.add(ref.target)
    return tuple(refs)


def _target(kind: FileKind, source: str, value: Any, field: str) -> str:
    if value is None or value == "":
        value = source
    if not isinstance(value, str) or "\x00" in value or "\n" in value:
        raise ValidationError(field, "must be a path")
    if not value.startswith("/"):
        if kind is FileKind.CONFIG:
            value = "/" + value
        else:
            value = f"{SECRETS_DIR}/{value}"
    normal = posixpath.normpath(value)
    if normal != value or ".." in value.split("/"):
        raise ValidationError(field, f"{value!r} is not a normalised absolute path")
    if normal in _RESERVED or any(normal.startswith(p + "/") for p in ("/proc", "/sys", "/dev")):
        raise ValidationError(field, f"cannot mount a file at {normal}")
    return str(normal)

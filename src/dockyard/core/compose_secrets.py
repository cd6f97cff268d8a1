"""Compose ``secrets:`` and ``configs:`` (top level and per service). Pure.

Top level: ``file:`` (relative to the compose file), ``environment:`` (a variable
of the deploy's environment) or, for configs, ``content:``: the deploy stores the
value as your secret/config ``STACK_KEY`` (or ``name:``) before creating the
services; ``external: true`` names one you stored already (``name:`` or the key).
A service's short (``- KEY``) or long (``{source, target, uid, gid, mode}``)
reference becomes an API reference to the stored name, mounted at
``/run/secrets/KEY`` (secrets) or ``/KEY`` (configs) unless ``target`` says
otherwise. ``docs/compose.md`` has the table.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dockyard.core.errors import ValidationError
from dockyard.core.secrets import FileKind, validate_value_name


@dataclass(frozen=True, slots=True)
class ValueSource:
    """A value the deploy stores first: read from ``path`` (absolute), or ``text``
    (from the environment or inline ``content``). Never printed."""

    kind: FileKind
    name: str  # the stored name
    path: str = ""
    text: str | None = field(default=None, repr=False)


@dataclass
class Definitions:
    """The file's top-level definitions: Compose key -> stored name, per kind, and the
    values to store; ``notes``: (key, message, refused?)."""

    names: dict[FileKind, dict[str, str]] = field(default_factory=dict)
    values: list[ValueSource] = field(default_factory=list)
    notes: list[tuple[str, str, bool]] = field(default_factory=list)


def definitions(
    doc: Mapping[str, Any], stack: str, base_dir: str, environ: Mapping[str, str]
) -> Definitions:
    out = Definitions()
    for kind in FileKind:
        section = doc.get(kind.plural)
        out.names[kind] = {}
        if section is None:
            continue
        if not isinstance(section, Mapping):
            out.notes.append((kind.plural, "must be a mapping of names", True))
            continue
        for key, spec in section.items():
            key = str(key)
            where = f"{kind.plural}.{key}"
            spec = spec if isinstance(spec, Mapping) else {}
            external = spec.get("external")
            if isinstance(external, Mapping):  # the old {name: ...} form
                external = True
                spec = {**spec, "name": spec.get("name") or spec["external"].get("name")}
            stored = str(spec.get("name") or (key if external else f"{stack}_{key}"))
            try:
                validate_value_name(stored, f"{where}.name")
            except ValidationError as exc:
                out.notes.append((exc.field, f"{stored!r} {exc.message}", True))
                continue
            for opt in ("driver", "driver_opts", "template_driver", "labels"):
                if spec.get(opt):
                    out.notes.append((f"{where}.{opt}", "ignored: stored by the server", False))
            sources = [k for k in ("file", "environment", "content") if spec.get(k) is not None]
            if external:
                if sources:
                    out.notes.append((where, "external and a value: choose one", True))
                    continue
            elif len(sources) != 1:
                out.notes.append(
                    (
                        where,
                        "needs one of file, environment"
                        + (", content" * (kind is FileKind.CONFIG))
                        + " or external",
                        True,
                    )
                )
                continue
            elif sources[0] == "file":
                path = str(spec["file"])
                out.values.append(
                    ValueSource(
                        kind, stored, path=posixpath.normpath(posixpath.join(base_dir, path))
                    )
                )
            elif sources[0] == "environment":
                var = str(spec["environment"])
                if var not in environ:
                    out.notes.append((f"{where}.environment", f"${var} is not set", True))
                    continue
                out.values.append(ValueSource(kind, stored, text=environ[var]))
            elif kind is FileKind.CONFIG:
                out.values.append(ValueSource(kind, stored, text=str(spec["content"])))
            else:
                out.notes.append((f"{where}.content", "only configs take content", True))
                continue
            out.names[kind][key] = stored
    return out


def service_refs(kind: FileKind, items: Any, defs: Definitions) -> list[dict[str, Any]]:
    """A service's ``secrets``/``configs`` as API references (raises ValidationError
    naming the entry: an undeclared name is refused, as Compose does)."""
    if not isinstance(items, list):
        raise ValidationError(kind.plural, "must be a list")
    refs: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            item = {"source": item}
        if not isinstance(item, Mapping) or "source" not in item:
            raise ValidationError(f"{kind.plural}[{index}]", "needs a source")
        key = str(item["source"])
        stored = defs.names.get(kind, {}).get(key)
        if stored is None:
            raise ValidationError(
                f"{kind.plural}[{index}]", f"{key!r} is not declared in the top-level {kind.plural}"
            )
        ref: dict[str, Any] = {"source": stored, "target": str(item.get("target") or key)}
        for opt in ("mode", "uid", "gid"):
            if item.get(opt) is not None:
                ref[opt] = item[opt]
        refs.append(ref)
    return refs

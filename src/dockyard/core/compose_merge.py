"""Several Compose files as one (``deploy -f compose.yaml -f override.yaml``). Pure.

Later files override earlier ones as Compose merges them: mappings merge key by
key; a service's ``command``, ``entrypoint`` and healthcheck ``test`` are
replaced; ``environment``, ``labels``, ``extra_hosts``, ``sysctls``,
``annotations`` merge as mappings (list forms first become mappings);
``ports``, ``expose``, ``dns``, ``cap_add`` and the other sequences of
:data:`APPENDED` are appended (duplicates dropped); ``volumes`` and ``secrets``
of a service merge by target; any other value is replaced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Service sequences the later file appends to.
APPENDED = frozenset(
    {
        "ports",
        "expose",
        "external_links",
        "dns",
        "dns_search",
        "dns_opt",
        "tmpfs",
        "cap_add",
        "cap_drop",
        "devices",
        "security_opt",
        "env_file",
        "profiles",
        "group_add",
        "links",
    }
)
#: Service values that may be lists of KEY=VALUE and merge as mappings.
MAPPINGS = frozenset({"environment", "labels", "extra_hosts", "sysctls", "annotations"})
#: Service values a later file replaces whole.
REPLACED = frozenset({"command", "entrypoint"})
#: Service sequences merged by their target (mount path).
BY_TARGET = frozenset({"volumes", "secrets", "configs"})


def merge_files(docs: Sequence[Any]) -> Any:
    """The documents merged in order (the first when there is one)."""
    if not docs:
        return {}
    merged: Any = docs[0]
    for doc in docs[1:]:
        if not isinstance(doc, Mapping) or not isinstance(merged, Mapping):
            merged = doc
            continue
        out = dict(merged)
        for key, value in doc.items():
            if key == "services" and isinstance(value, Mapping):
                services = dict(out.get("services") or {})
                for name, service in value.items():
                    base = services.get(name)
                    services[name] = (
                        _service(base, service)
                        if isinstance(base, Mapping) and isinstance(service, Mapping)
                        else service
                    )
                out["services"] = services
            else:
                out[key] = _deep(out.get(key), value)
        merged = out
    return merged


def _deep(base: Any, over: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = dict(base)
        for key, value in over.items():
            out[key] = _deep(base.get(key), value)
        return out
    return over


def _service(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        old = base.get(key)
        if old is None or key in REPLACED:
            out[key] = value
        elif key in MAPPINGS:
            out[key] = {**_as_map(old), **_as_map(value)}
        elif key in APPENDED and isinstance(old, list) and isinstance(value, list):
            out[key] = old + [v for v in value if v not in old]
        elif key in BY_TARGET and isinstance(old, list) and isinstance(value, list):
            by_target = {_target(v): v for v in old}
            by_target.update({_target(v): v for v in value})
            out[key] = list(by_target.values())
        elif key == "healthcheck" and isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = {**old, **value}
        else:
            out[key] = _deep(old, value)
    return out


def _as_map(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    out: dict[str, Any] = {}
    for item in value or ():
        key, sep, val = str(item).partition("=")
        if not sep and ":" in key and key.count(":") == 1:  # extra_hosts HOST:IP
            key, val = key.split(":")
            sep = ":"
        out[key] = val if sep else None
    return out


def _target(entry: Any) -> str:
    if isinstance(entry, Mapping):
        return str(entry.get("target") or entry.get("source") or entry)
    parts = str(entry).split(":")
    return parts[1] if len(parts) > 1 else parts[0]

"""Placement constraints on node labels: ``zone=a``, ``zone!=a``, ``zone in a,b``.

A workload lists constraints; a node is eligible only when every one holds for
its labels. A missing label never equals anything, so ``zone!=a`` holds on a
node without a ``zone`` label and ``zone=a`` does not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dockyard.core.errors import ValidationError

_KEY = r"[A-Za-z0-9_.\-/]{1,63}"
_VALUE = r"[A-Za-z0-9_.\-/:]{0,63}"
_IN_RE = re.compile(rf"^\s*({_KEY})\s+(not\s+in|notin|in)\s+\(?\s*([^()]*?)\s*\)?\s*$")
_CMP_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*({_VALUE})\s*$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")
MAX_CONSTRAINTS = 32


@dataclass(frozen=True, slots=True)
class Constraint:
    """``key op values``; ``op`` is ``in`` or ``notin`` (``=`` and ``!=`` are one-value forms)."""

    key: str
    op: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        inside = value is not None and value in self.values
        return inside if self.op == "in" else not inside

    def __str__(self) -> str:
        values = sorted(self.values)
        if len(values) == 1:
            return f"{self.key}{'=' if self.op == 'in' else '!='}{values[0]}"
        return f"{self.key} {'in' if self.op == 'in' else 'not in'} {','.join(values)}"


def parse_constraint(text: str, field: str = "constraints") -> Constraint:
    """Parse ``zone=a``, ``zone!=a``, ``zone in a,b`` or ``zone not in (a,b)``."""
    if not isinstance(text, str):
        raise ValidationError(field, "must be a string such as zone=a")
    match = _IN_RE.match(text)
    if match:
        key, op, raw = match.groups()
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not values or not all(_VALUE_RE.match(v) for v in values):
            raise ValidationError(field, f"cannot parse constraint {text!r}")
        return Constraint(key, "in" if op == "in" else "notin", frozenset(values))
    match = _CMP_RE.match(text)
    if match:
        key, op, value = match.groups()
        return Constraint(key, "notin" if op == "!=" else "in", frozenset([value]))
    raise ValidationError(
        field, f"cannot parse constraint {text!r} (use key=value, key!=value or key in a,b)"
    )


def parse_constraints(items: Iterable[str], field: str = "constraints") -> tuple[Constraint, ...]:
    parsed = tuple(parse_constraint(item, f"{field}[{i}]") for i, item in enumerate(items))
    if len(parsed) > MAX_CONSTRAINTS:
        raise ValidationError(field, f"at most {MAX_CONSTRAINTS} constraints")
    return parsed


def first_violated(
    constraints: Iterable[Constraint], labels: Mapping[str, str]
) -> Constraint | None:
    for constraint in constraints:
        if not constraint.matches(labels):
            return constraint
    return None


def parse_label(text: str, field: str = "labels") -> tuple[str, str]:
    """``key=value`` as a node label."""
    key, sep, value = text.partition("=")
    if not sep or not re.match(rf"^{_KEY}$", key) or not _VALUE_RE.match(value):
        raise ValidationError(field, f"label {text!r} must be key=value")
    return key, value

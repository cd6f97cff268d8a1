"""Job dependencies: Slurm's ``afterok``/``afterany``/``afternotok``. Pure.

``--after ok:ID,any:ID2`` (or several ``--after``): the job may start only once
job ``ID`` ended successfully (``ok``), ended at all (``any``), or ended without
success (``notok``). A bare ``ID`` means ``ok:ID``. ``ID`` is a job (workload) id
or a task id of that job; the server resolves it at submit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from dockyard.core.errors import ValidationError

KINDS = ("ok", "any", "notok")
MAX_DEPENDENCIES = 64
_REF_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)


@dataclass(frozen=True, slots=True)
class Dependency:
    kind: str  # ok, any, notok
    ref: str

    def text(self) -> str:
        return f"{self.kind}:{self.ref}"


def parse_after(items: Iterable[str], field: str = "after") -> tuple[Dependency, ...]:
    """``["ok:a,any:b", "c"]`` -> dependencies; :class:`ValidationError` naming ``field``."""
    out: list[Dependency] = []
    for item in items:
        if not isinstance(item, str):
            raise ValidationError(field, "each dependency must be a string such as ok:ID")
        for part in item.split(","):
            text = part.strip()
            if not text:
                continue
            kind, colon, ref = text.partition(":")
            if not colon:
                kind, ref = "ok", text
            kind = kind.strip().lower().removeprefix("after")
            if kind not in KINDS:
                raise ValidationError(field, f"{text!r}: the kind must be one of ok, any, notok")
            if not _REF_RE.fullmatch(ref.strip()):
                raise ValidationError(field, f"{text!r}: the job id is missing or invalid")
            dep = Dependency(kind, ref.strip())
            if dep not in out:
                out.append(dep)
    if len(out) > MAX_DEPENDENCIES:
        raise ValidationError(field, f"at most {MAX_DEPENDENCIES} dependencies")
    return tuple(out)

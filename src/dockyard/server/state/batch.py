"""Reading rows for many ids at once.

:func:`chunks` is the one way the server splits an ``IN (...)`` list to stay under
SQLite's bound-parameter limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session


def chunks(ids: list[str], size: int = 900) -> Iterator[list[str]]:
    """Slices that stay under SQLite's bound-parameter limit."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def rows_by_id(session: Session, entity: Any, ids: Iterable[str]) -> list[Any]:
    """Rows of ``entity`` with these ids, read in chunks."""
    return [
        row
        for chunk in chunks(list(set(ids)))
        for row in session.scalars(select(entity).where(entity.id.in_(chunk)))
    ]

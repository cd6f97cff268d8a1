"""Many rows through one UPDATE or INSERT, compiled once, straight to the DBAPI's
executemany.

``session.execute(stmt, [dict, ...])`` builds every parameter set through the
compiled statement's full machinery (``construct_params`` and a processor list
per row), which cost more than the SQL itself for the scheduler's 1,000s of
assignments and events per pass. :func:`executemany` compiles the statement once
per dialect, keeps its literal values and each bind's type processor (e.g.
JSON's ``dumps``), and hands the driver plain tuples (positional styles, SQLite)
or dicts (named styles, psycopg). Plain ``bindparam``s and literal values only.
Python-side column defaults (and ``onupdate``) are filled in per row by
SQLAlchemy's execution context, which this path skips: a statement that leaves
such a column to them is refused (name it: ``.values(col=bindparam("col"))``),
and a row that lacks a bind is an error, never a default.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Insert, Update
from sqlalchemy.sql.compiler import SQLCompiler

_Processor = Callable[[Any], Any] | None


class _Prepared:
    __slots__ = ("_active", "_pick", "literals", "names", "positional", "processors", "sql")

    def __init__(self, compiled: SQLCompiler, dialect: Any) -> None:
        self.sql = compiled.string
        self.positional = bool(compiled.positional)
        self.names: list[str] = (
            list(compiled.positiontup or ()) if self.positional else list(compiled.binds)
        )
        self.literals: dict[str, Any] = {
            name: bp.effective_value for name, bp in compiled.binds.items() if not bp.required
        }
        self.processors: list[_Processor] = [
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in self.names
        ]
        self._active = [(i, p) for i, p in enumerate(self.processors) if p is not None]
        # itemgetter of one name returns the value itself, of several a tuple
        names = self.names
        self._pick: Callable[[Mapping[str, Any]], Sequence[Any]] = (
            (lambda d: (d[names[0]],)) if len(names) == 1 else operator.itemgetter(*names)
        )

    def row(self, values: Mapping[str, Any]) -> Any:
        out = list(self._pick({**self.literals, **values}))
        for i, proc in self._active:
            out[i] = proc(out[i])
        return tuple(out) if self.positional else dict(zip(self.names, out, strict=True))


_cache: dict[tuple[int, str], tuple[Update | Insert, _Prepared]] = {}
_lock = threading.Lock()


def _prepare(conn: Connection, stmt: Update | Insert) -> _Prepared:
    key = (id(stmt), conn.dialect.name)
    with _lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] is stmt:
        return hit[1]
    compiled = stmt.compile(dialect=conn.dialect)
    assert isinstance(compiled, SQLCompiler)
    prepared = _Prepared(compiled, conn.dialect)
    # Columns whose Python-side defaults SQLAlchemy would compute per row.
    unnamed = [c.key for c in (*compiled.insert_prefetch, *compiled.update_prefetch)]
    if unnamed:
        raise TypeError(f"a statement through store.bulk must name {', '.join(unnamed)}")
    with _lock:
        if len(_cache) >= 256:  # meant for module-level statements; bounded anyway
            _cache.clear()
        _cache[key] = (stmt, prepared)  # holds stmt: its id stays its own
    return prepared


def executemany(conn: Connection, stmt: Update | Insert, rows: Sequence[Mapping[str, Any]]) -> None:
    """Execute ``stmt`` (module-level, reused: it is compiled once) for each of ``rows``
    (bind name -> value; absent names take the statement's literal values)."""
    if not isinstance(stmt, Update | Insert):
        raise TypeError("store.bulk.executemany runs UPDATE and INSERT statements only")
    if not rows:
        return
    prepared = _prepare(conn, stmt)
    try:
        params = [prepared.row(r) for r in rows]
    except KeyError as exc:  # loud, never a default silently skipped
        raise TypeError(f"a row through store.bulk lacks the bind {exc.args[0]!r}") from None
    conn.exec_driver_sql(prepared.sql, params)

"""Many rows through one UPDATE, compiled once, straight to the DBAPI's executemany.

``session.execute(stmt, [dict, ...])`` builds every parameter set through the
compiled statement's full machinery (``construct_params`` and a processor list
per row), which cost more than the SQL itself for the scheduler's 1,000s of
assignments and events per pass. :func:`executemany` compiles the statement once
per dialect, keeps its literal values and each bind's type processor (e.g.
JSON's ``dumps``), and hands the driver plain tuples (positional styles, SQLite)
or dicts (named styles, psycopg). UPDATEs only, of tables without Python-side
``onupdate`` defaults (an INSERT's column defaults are filled in per row by the
execution context, which this path skips): plain ``bindparam``s and literal values.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Update
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


_cache: dict[tuple[int, str], tuple[Update, _Prepared]] = {}
_lock = threading.Lock()


def _prepare(conn: Connection, stmt: Update) -> _Prepared:
    key = (id(stmt), conn.dialect.name)
    with _lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] is stmt:
        return hit[1]
    compiled = stmt.compile(dialect=conn.dialect)
    assert isinstance(compiled, SQLCompiler)
    prepared = _Prepared(compiled, conn.dialect)
    with _lock:
        _cache[key] = (stmt, prepared)  # holds stmt: its id stays its own
    return prepared


def executemany(conn: Connection, stmt: Update, rows: Sequence[Mapping[str, Any]]) -> None:
    """Execute ``stmt`` (module-level, reused: it is compiled once) for each of ``rows``
    (bind name -> value; absent names take the statement's literal values)."""
    if not isinstance(stmt, Update):
        raise TypeError("store.bulk.executemany runs UPDATE statements only")
    if any(c.onupdate is not None for c in stmt.table.c):  # type: ignore[attr-defined]
        conn.execute(stmt, list(rows))
        return
    if not rows:
        return
    prepared = _prepare(conn, stmt)
    conn.exec_driver_sql(prepared.sql, [prepared.row(r) for r in rows])

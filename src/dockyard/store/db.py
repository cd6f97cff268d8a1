"""Database engine, sessions and migrations.

SQLite (the embedded default) runs in WAL mode; write transactions start with
``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout instead of
failing on a lock upgrade. PostgreSQL URLs are used as they are; a server that
leads through the lease (HA) bounds its sessions with :class:`SessionTimeouts`
(``lock_timeout``, ``statement_timeout``, ``idle_in_transaction_session_timeout``,
sent as connection options), so a stopped or stuck instance cannot hold a lock
other instances wait on for longer than a fraction of the lease.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dockyard.store.errors import StoreError

MIGRATIONS = Path(__file__).parent / "migrations"


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'dockyard.db'}"


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@dataclass(frozen=True)
class SessionTimeouts:
    """Limits PostgreSQL enforces on each of the server's sessions, in seconds.

    * ``idle_in_transaction_s``: a session that sits inside a transaction without
      sending anything for this long is terminated, its transaction rolled back and
      its locks released. A leader frozen (SIGSTOP, a VM pause, a debugger) while it
      holds the lease row's ``FOR SHARE`` (a fenced write) or ``FOR UPDATE`` (its
      lease tick) would otherwise block every follower's lease attempt forever.
    * ``lock_s``: the longest any statement waits for a lock; past it the statement
      fails (SQLSTATE 55P03) and the caller retries on its next round.
    * ``statement_s``: the longest one statement may run (57014).
    """

    lock_s: float
    statement_s: float
    idle_in_transaction_s: float

    @classmethod
    def for_lease(cls, lease_s: float) -> SessionTimeouts:
        """Tied to the lease: a frozen holder is cut off after half a lease, before the
        lease it holds expires, so a follower's takeover is not delayed by it; a waiter
        gives up after one lease (past which the holder's lease would be gone anyway);
        a statement may run two leases."""
        return cls(lock_s=lease_s, statement_s=2 * lease_s, idle_in_transaction_s=lease_s / 2)

    def options(self, idle: bool = True) -> str:
        """The libpq ``options`` that set them (milliseconds). ``idle=False`` leaves out
        the idle-in-transaction limit (read sessions: they hold no row locks, so a
        frozen reader blocks nobody's failover, and a reader starved of CPU for half a
        lease must not have its transaction killed under it)."""
        settings = {
            "lock_timeout": self.lock_s,
            "statement_timeout": self.statement_s,
        }
        if idle:
            settings["idle_in_transaction_session_timeout"] = self.idle_in_transaction_s
        return " ".join(f"-c {k}={max(1, round(v * 1000))}" for k, v in settings.items())


class Database:
    """Engines and session factories for one store."""

    def __init__(self, url: str) -> None:
        if url.startswith(("postgresql://", "postgres://")):  # the driver we ship: psycopg 3
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.read_engine = _sqlite_engine(url, immediate=False)
            self.write_engine = _sqlite_engine(url, immediate=True)
        else:
            # Two engines: the read sessions' options leave out the idle-in-transaction
            # limit (SessionTimeouts.options).
            self.write_engine = create_engine(url, pool_pre_ping=True)
            self.read_engine = create_engine(url, pool_pre_ping=True)
            event.listen(self.write_engine, "do_connect", self._connect_options)
            event.listen(self.read_engine, "do_connect", self._read_connect_options)
            event.listen(self.write_engine, "do_executemany", self._executemany)
        self.session_timeouts: SessionTimeouts | None = None
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.is_sqlite else contextlib.nullcontext()
        )

    def set_session_timeouts(self, timeouts: SessionTimeouts) -> None:
        """Bound every PostgreSQL session from now on (no-op on SQLite). Connections
        already pooled are closed, so none is left without the limits. Migrations
        (:meth:`migrate`) run on their own connection, without them."""
        if self.is_sqlite:
            return
        self.session_timeouts = timeouts
        self.write_engine.dispose()
        self.read_engine.dispose()

    def _connect_options(self, _dialect: Any, _record: Any, _args: Any, params: Any) -> None:
        if self.session_timeouts is not None:
            # Ours first: options given in the URL come later and win.
            theirs = params.get("options", "")
            params["options"] = f"{self.session_timeouts.options()} {theirs}".strip()

    def _read_connect_options(self, _dialect: Any, _record: Any, _args: Any, params: Any) -> None:
        if self.session_timeouts is not None:
            theirs = params.get("options", "")
            params["options"] = f"{self.session_timeouts.options(idle=False)} {theirs}".strip()

    def _executemany(self, cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        """Under session timeouts, one ``execute`` per parameter set instead of
        psycopg's pipelined ``executemany``: that one ends with a Sync followed by a
        Flush whenever results are still due, and PostgreSQL (15) disarms the
        idle-in-transaction timer on any message after the Sync and re-arms it only at
        the next one, so a client frozen there (or anywhere before its next statement)
        would hold its transaction, and the lease row's lock, forever. Costs about
        1.3-1.8x on large batches (2,000 rows: ~57 -> ~104 ms on 127.0.0.1)."""
        if self.session_timeouts is None:
            return False  # the dialect's own executemany
        rows = 0
        for params in parameters:
            cursor.execute(statement, params)
            rows += max(cursor.rowcount, 0)
        if context is not None:  # the ORM checks a bulk UPDATE's count (sane_multi_rowcount)
            context._rowcount = rows
        return True

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        # DDL may wait for locks and run long: not under the session timeouts.
        engine = self.write_engine if self.is_sqlite else create_engine(self.url)
        try:
            with engine.connect() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except SQLAlchemyError as exc:
            raise StoreError(f"migration failed: {exc}") from exc
        finally:
            if engine is not self.write_engine:
                engine.dispose()

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads; rolled back at the end."""
        with self._read() as session:
            yield session

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction for writes: committed on success, rolled back on error.

        On SQLite, this process's writers queue on a lock first: SQLite's own busy
        handler sleeps up to 100 ms between retries, which under many concurrent
        writers (API, gateway, loops) costs far more than the writes themselves."""
        with self._write_lock, self._write() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.read_engine.dispose()
        self.write_engine.dispose()

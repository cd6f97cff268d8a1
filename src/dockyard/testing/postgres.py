"""Throw-away PostgreSQL databases for tests and benchmarks.

The setup script starts a local cluster and a ``dockyard`` login role; tests
create a fresh database each (``CREATE DATABASE dy_<random>``) and drop it after.
``$DOCKYARD_TEST_PG`` overrides the maintenance URL.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dockyard.core.ids import new_id

DEFAULT_ADMIN_URL = "postgresql+psycopg://dockyard:dockyard@127.0.0.1:5432/postgres"


def admin_url() -> str:
    return os.environ.get("DOCKYARD_TEST_PG", DEFAULT_ADMIN_URL)


def available() -> bool:
    """Whether the maintenance database answers (for a clear skip/fail message)."""
    try:
        engine = create_engine(admin_url(), connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


def _run(sql: str) -> None:
    engine = create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


@contextlib.contextmanager
def fresh_database(prefix: str = "dy") -> Iterator[str]:
    """A new, empty database; yields its URL and drops it afterwards."""
    name = f"{prefix}_{new_id()}".lower()
    _run(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        _run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def store_for(backend: str, prefix: str = "dy") -> contextlib.AbstractContextManager[str | None]:
    """For a test parametrised over stores: ``None`` (SQLite, the server's default)
    or a fresh PostgreSQL database's URL. Without a reachable PostgreSQL the test
    fails in CI (the setup script starts one) and is skipped elsewhere, saying why."""
    import pytest  # test support only: the package itself never needs pytest

    if backend == "sqlite":
        return contextlib.nullcontext(None)
    if not available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL not reachable at {admin_url()} (scripts/setup.sh)")
        pytest.skip("PostgreSQL not reachable here (scripts/setup.sh starts one)")
    return fresh_database(prefix)

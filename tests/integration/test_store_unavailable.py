"""A store that does not answer in time is a 503 the client may retry, never a 500:
on PostgreSQL an API write blocked on a row lock past ``lock_timeout`` (the
server's sessions run under timeouts tied to the lease, docs/ha.md)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy

from dockyard.testing import postgres
from dockyard.testing.cluster import LocalCluster


@pytest.fixture(scope="module")
def on_postgres() -> Iterator[tuple[LocalCluster, str]]:
    with postgres.store_for("postgresql", "dy_unavail") as url:
        assert url is not None
        cluster = LocalCluster(db_url=url).start()
        try:
            yield cluster, url
        finally:
            cluster.close()


def test_a_write_blocked_past_the_lock_timeout_is_503(
    on_postgres: tuple[LocalCluster, str],
) -> None:
    cluster, url = on_postgres
    with cluster.client() as admin:
        admin.add_user("locked")
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as holder, holder.begin():
            holder.execute(sqlalchemy.text("SELECT 1 FROM users WHERE name = 'locked' FOR UPDATE"))
            auth = {"Authorization": f"Bearer {cluster.admin_token}"}
            with httpx.Client(base_url=cluster.url, headers=auth, timeout=30) as http:
                blocked = http.patch("/api/v1/users/locked", json={"share": 2})
                assert blocked.status_code == 503, blocked.text
                assert blocked.json()["error"] == "store_unavailable"
                assert blocked.headers["Retry-After"] == "1"
                assert http.get("/healthz").status_code == 200
        with httpx.Client(base_url=cluster.url, headers=auth, timeout=30) as http:
            assert http.patch("/api/v1/users/locked", json={"share": 2}).status_code == 200
    finally:
        engine.dispose()

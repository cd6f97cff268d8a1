"""The API's fast paths (issue 19) give what the slow ones gave.

* ``GET /api/v1/tasks`` serialises plain rows without the response model
  (``schemas.task_list_json``): the JSON must equal what validating each item as a
  ``TaskOut`` gives, keys in the model's order.
* The task detail and the name-or-id lookup read rows in two indexed queries: same
  task, same names, newest of a name, others' tasks hidden.
* Verified bearer tokens are cached briefly (``auth.TokenCache``): a revoked token
  stops working once its entry expires, a wrong token is never cached.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from dockyard.core.specs import build_job_spec
from dockyard.server.errors import Unauthorized
from dockyard.server.http.schemas import TaskOut, task_list_json
from dockyard.server.state import auth, reads
from dockyard.server.state.jobs import find_task, insert_jobs, new_jobs
from dockyard.store.db import Database, sqlite_url
from dockyard.store.errors import NotFound
from dockyard.store.tables import Node, Task, Token, User


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Database, auth.Principal, auth.Principal, str]]:
    db = Database(sqlite_url(tmp_path))
    db.migrate()
    with db.write() as session:
        admin = auth.create_user(session, "root", is_admin=True)
        alice = auth.create_user(session, "alice")
        token = auth.issue_token(session, alice)
        root = auth.Principal(admin.id, admin.name, True)
        who = auth.Principal(alice.id, alice.name, False)
        session.add(
            Node(
                id="n1",
                name="node-one",
                address="127.0.0.9",
                driver="sim",
                cpu_millis=4000,
                memory_bytes=8 << 30,
                state="ready",
                registered_at=time.time(),
                last_heartbeat_at=time.time(),
            )
        )
    yield db, root, who, token
    db.dispose()


def _submit(db: Database, who: auth.Principal, name: str, count: int = 1) -> list[str]:
    spec = build_job_spec(name=name, image="busybox", command=["true"], cpu="100m", memory="8m")
    with db.write() as session:
        return insert_jobs(session, new_jobs(who, [spec] * count))


def test_task_list_json_equals_the_response_model(
    store: tuple[Database, auth.Principal, auth.Principal, str],
) -> None:
    db, root, who, _ = store
    pending, placed, ended = _submit(db, who, "web", 3)
    with db.write() as session:
        session.execute(
            update(Task)
            .where(Task.id == pending)
            .values(pending_detail={"total": 1, "fit": 0, "reasons": {"memory": 1}})
        )
        session.execute(
            update(Task)
            .where(Task.id == placed)
            .values(
                state="running",
                node_id="n1",
                started_at=time.time() - 5,
                ports="8080",
                port_map=[[80, 8080]],
                gpu_indices="0,1",
                constraints=["zone=a"],
            )
        )
        session.execute(
            update(Task)
            .where(Task.id == ended)
            .values(
                state="succeeded",
                node_id="n1",
                started_at=10.0,
                finished_at=12.5,
                exit_code=0,
                cpu_seconds=1.25,
            )
        )
    with db.read() as session:
        total, views = reads.list_tasks(session, root, limit=10)
    assert total == 3
    fields = [TaskOut.fields(v.task, v.owner, v.node, v.address) for v in views]
    fast = json.loads(task_list_json(fields))
    model = [TaskOut.model_validate(f).model_dump(mode="json") for f in fields]
    assert fast == model
    assert [list(item) for item in fast] == [list(TaskOut.model_fields)] * 3
    by_id = {item["id"]: item for item in fast}
    assert by_id[placed]["node"] == "node-one"
    assert by_id[placed]["endpoints"] == [{"container": 80, "host": 8080, "address": "127.0.0.9"}]
    assert by_id[pending]["pending_detail"] == {"total": 1, "fit": 0, "reasons": {"memory": 1}}
    assert by_id[ended]["uptime_s"] == 2.5 and by_id[ended]["owner"] == "alice"


def test_detail_and_name_lookup(
    store: tuple[Database, auth.Principal, auth.Principal, str],
) -> None:
    db, root, who, _ = store
    (older,) = _submit(db, who, "batch")
    (newer,) = _submit(db, who, "batch")
    (named_like_an_id,) = _submit(db, root, older)  # named as alice's task's id
    with db.write() as session:
        session.execute(update(Task).where(Task.id == older).values(created_at=1.0))
        session.execute(update(Task).where(Task.id == newer).values(node_id="n1"))
    with db.read() as session:
        assert find_task(session, who, "batch").id == newer  # newest of the name
        assert find_task(session, who, older).id == older  # an id wins
        detail = reads.task_detail(session, who, "batch")
        assert detail.view.task.id == newer
        assert (detail.view.owner, detail.view.node, detail.view.address) == (
            "alice",
            "node-one",
            "127.0.0.9",
        )
        assert [e.reason for e in detail.events] == ["submitted"]
        assert detail.spec.image == "busybox"
        assert reads.task_detail(session, root, older).view.task.id == older  # the id wins
        assert find_task(session, root, "batch").id == newer
        for ref in (named_like_an_id, "nothing"):  # root's task: hidden from alice
            with pytest.raises(NotFound):
                reads.task_detail(session, who, ref)
            with pytest.raises(NotFound):
                find_task(session, who, ref)


def test_token_cache_trusts_briefly_and_never_caches_failures(
    store: tuple[Database, auth.Principal, auth.Principal, str],
) -> None:
    db, _, who, token = store
    now = [100.0]
    lookups = [0]

    def read() -> object:
        lookups[0] += 1
        return db.read()

    cache = auth.TokenCache(ttl_s=2.0, clock=lambda: now[0])
    assert cache.authenticate(read, token) == who  # type: ignore[arg-type]
    assert cache.authenticate(read, token) == who  # type: ignore[arg-type]
    assert lookups[0] == 1
    for wrong in (token + "x", "dy_nope", "no-prefix"):
        for _ in range(2):
            with pytest.raises(Unauthorized):
                cache.authenticate(read, wrong)  # type: ignore[arg-type]
    assert lookups[0] == 1 + 4  # both wrong-with-prefix guesses asked the store twice
    with db.write() as session:
        session.execute(update(Token).values(revoked=True))
    now[0] += 1.9
    assert cache.authenticate(read, token) == who  # type: ignore[arg-type]
    now[0] += 0.2  # past the TTL: the store says revoked
    with pytest.raises(Unauthorized):
        cache.authenticate(read, token)  # type: ignore[arg-type]
    with pytest.raises(Unauthorized):
        cache.authenticate(read, token)  # type: ignore[arg-type]


def test_token_cache_is_bounded(
    store: tuple[Database, auth.Principal, auth.Principal, str],
) -> None:
    db, _, who, _ = store
    with db.write() as session:
        user = session.get(User, who.user_id)
        assert user is not None
        tokens = [auth.issue_token(session, user) for _ in range(5)]
    cache = auth.TokenCache(max_entries=3)
    for token in tokens:
        assert cache.authenticate(db.read, token) == who
    assert len(cache._entries) == 3
    cache.clear()
    assert not cache._entries

"""Which checkpoints an agent holds are over for good (answers ``checkpoints``).

The store reads for :func:`dockyard.core.checkpoints.over`: the keys' workloads,
their owners, and their tasks not yet ended. Three indexed queries for at most
``MAX_KEYS`` keys.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.checkpoints import CheckpointKey, JobFacts, over, parse_key
from dockyard.core.states import ACTIVE_STATES
from dockyard.server.state.workload_specs import workload_specs
from dockyard.store.tables import Task, User, Workload

#: Keys judged per question (the agent asks about at most this many).
MAX_KEYS = 100


def over_for_good(session: Session, raw_keys: Iterable[str]) -> list[str]:
    """The keys (``<owner>/ckpt-<job>[-<index>]``) no attempt can need any more;
    malformed ones and any past the first MAX_KEYS are left out."""
    keys: list[CheckpointKey] = []
    for raw in raw_keys:
        parsed = parse_key(raw)
        if parsed is not None:
            keys.append(parsed)
        if len(keys) >= MAX_KEYS:
            break
    if not keys:
        return []
    ids = {k.workload_id for k in keys}
    rows = session.execute(
        select(Workload.id, Workload.owner_id, Workload.kind, Workload.deleted_at).where(
            Workload.id.in_(ids)
        )
    ).all()
    specs = workload_specs(session, [str(r[0]) for r in rows])
    workloads = {
        str(w): JobFacts(
            owner=str(owner),
            kind=str(kind),
            gang=w in specs and specs[w].spec.gang_size > 1,
            deleted=deleted is not None,
        )
        for w, owner, kind, deleted in rows
    }
    owners = {k.owner for k in keys if k.workload_id not in workloads}
    users = set(session.scalars(select(User.id).where(User.id.in_(owners)))) if owners else set()
    live = (
        {
            (str(w), None if i is None else int(i))
            for w, i in session.execute(
                select(Task.workload_id, Task.array_index)
                .where(
                    Task.workload_id.in_(list(workloads)),
                    Task.state.in_([s.value for s in ACTIVE_STATES]),
                )
                .distinct()
            ).all()
        }
        if workloads
        else set()
    )
    return [k.key for k in over(keys, workloads, users, live)]

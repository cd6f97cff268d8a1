"""Secrets and configs in the store: per-owner named values, encrypted at rest.

A row holds the value only as a Fernet token under the server key
(:mod:`dockyard.server.state.keyring`); nothing here logs a value, and no API
object carries one (names, sizes, dates and owners only). Services reference
values by name in their owner's namespace (:func:`check_refs`); the gateway
decrypts them only for the start entry of a replica (:func:`start_files`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.errors import ValidationError
from dockyard.core.ids import new_id
from dockyard.core.secrets import FileKind, FileRef, validate_value, validate_value_name
from dockyard.core.states import DesiredState
from dockyard.protocol.messages import Desired, DesiredEntry
from dockyard.server.errors import Conflict
from dockyard.server.state.auth import Principal
from dockyard.server.state.batch import chunks
from dockyard.server.state.keyring import Keyring, SecretKeyError
from dockyard.server.state.services import live_services
from dockyard.store.errors import NotFound
from dockyard.store.tables import SecretValue, User, Workload


@dataclass(frozen=True, slots=True)
class ValueInfo:
    """What the API shows of a stored value: never the value."""

    kind: str
    name: str
    owner: str
    size: int
    labels: dict[str, str]
    created_at: float
    updated_at: float


def info(row: SecretValue, owner: str) -> ValueInfo:
    return ValueInfo(
        row.kind,
        row.name,
        owner,
        row.size,
        dict(row.labels or {}),
        row.created_at,
        row.updated_at,
    )


def put(
    session: Session,
    who: Principal,
    kind: FileKind,
    name: str,
    data: bytes,
    keyring: Keyring,
    *,
    replace: bool = False,
    labels: dict[str, str] | None = None,
) -> tuple[SecretValue, bool]:
    """Store ``data`` under ``name`` for the caller: (row, created). An existing
    name is a 409 unless ``replace`` (then its value is replaced; replicas already
    running keep the file they were started with)."""
    validate_value_name(name)
    validate_value(data)
    row = _mine(session, who.user_id, kind, name)
    now = time.time()
    if row is not None and not replace:
        raise Conflict(f"you have a {kind.value} named {name} already", code="exists")
    token = keyring.encrypt(data)
    created = row is None
    if row is None:
        row = SecretValue(
            id=new_id(),
            owner_id=who.user_id,
            kind=kind.value,
            name=name,
            created_at=now,
            labels=dict(labels or {}),
            ciphertext=token,
            size=len(data),
            updated_at=now,
        )
        session.add(row)
    else:
        row.ciphertext = token
        row.size = len(data)
        row.updated_at = now
        if labels is not None:
            row.labels = dict(labels)
    session.flush()
    return row, created


def list_values(session: Session, who: Principal, kind: FileKind) -> list[ValueInfo]:
    """The caller's values of this kind (an admin: everyone's), by owner and name."""
    query = select(SecretValue, User.name).join(User, User.id == SecretValue.owner_id)
    query = query.where(SecretValue.kind == kind.value)
    if not who.is_admin:
        query = query.where(SecretValue.owner_id == who.user_id)
    rows = session.execute(query.order_by(User.name, SecretValue.name)).all()
    return [info(row, str(owner)) for row, owner in rows]


def find(
    session: Session, who: Principal, kind: FileKind, name: str, owner: str | None = None
) -> tuple[SecretValue, str]:
    """(row, owner name) of the caller's value ``name``; an admin may name another
    ``owner``. Another user's is a 404, as if it did not exist."""
    owner_id, owner_name = who.user_id, who.name
    if owner is not None and owner != who.name:
        user = session.scalar(select(User).where(User.name == owner)) if who.is_admin else None
        if user is None:
            raise NotFound(kind.value, name)
        owner_id, owner_name = user.id, user.name
    row = _mine(session, owner_id, kind, name)
    if row is None:
        raise NotFound(kind.value, name)
    return row, owner_name


def delete(session: Session, row: SecretValue) -> None:
    """Remove it; refused (409 naming them) while a live service of its owner uses it."""
    users = services_using(session, row.owner_id, FileKind(row.kind), row.name)
    if users:
        raise Conflict(
            f"{row.kind} {row.name} is used by service(s) {', '.join(users)}: "
            "remove them or change their spec first",
            code="in_use",
        )
    session.delete(row)
    session.flush()


def services_using(session: Session, owner_id: str, kind: FileKind, name: str) -> list[str]:
    """Names of the owner's live services whose spec mounts this value."""
    found = []
    for workload in session.scalars(live_services().where(Workload.owner_id == owner_id)):
        for ref in (workload.spec or {}).get("files") or ():
            if ref.get("kind") == kind.value and ref.get("source") == name:
                found.append(workload.name)
                break
    return sorted(found)


def check_refs(
    session: Session,
    owner_id: str,
    refs: Sequence[FileRef],
    defined: Collection[tuple[str, str]] = (),
) -> None:
    """Every reference names a value the owner has (or one in ``defined``: (kind,
    name) pairs a Compose deploy is about to store): else a 422 naming the field."""
    if not refs:
        return
    have = {
        (str(kind), str(name))
        for kind, name in session.execute(
            select(SecretValue.kind, SecretValue.name).where(SecretValue.owner_id == owner_id)
        )
    }
    counters: dict[FileKind, int] = {}
    for ref in refs:
        index = counters.get(ref.kind, 0)
        counters[ref.kind] = index + 1
        key = (ref.kind.value, ref.source)
        if key not in have and key not in set(defined):
            raise ValidationError(
                f"{ref.kind.plural}[{index}].source",
                f"you have no {ref.kind.value} named {ref.source!r} "
                f"(dockyard {ref.kind.value} create {ref.source} FILE)",
            )


def start_files(
    session: Session,
    keyring: Keyring | None,
    wanted: Iterable[tuple[str, Sequence[dict[str, Any]]]],
) -> list[tuple[dict[str, Any], ...]]:
    """For each (owner id, stored references) the files a start entry carries:
    ``{target, mode, uid, gid, data}`` each, or one ``{error}`` map when a value is
    missing or cannot be decrypted (the agent fails the task with that message)."""
    wanted = list(wanted)
    needed = {
        (owner, str(ref["kind"]), str(ref["source"])) for owner, refs in wanted for ref in refs
    }
    rows: dict[tuple[str, str, str], bytes] = {}
    owners = {owner for owner, _, _ in needed}
    if needed:
        for owner_id, kind, name, token in session.execute(
            select(
                SecretValue.owner_id, SecretValue.kind, SecretValue.name, SecretValue.ciphertext
            ).where(SecretValue.owner_id.in_(owners))
        ):
            if (owner_id, kind, name) in needed:
                rows[(owner_id, kind, name)] = token
    out: list[tuple[dict[str, Any], ...]] = []
    for owner, refs in wanted:
        files: list[dict[str, Any]] = []
        try:
            for ref in refs:
                found = rows.get((owner, str(ref["kind"]), str(ref["source"])))
                if found is None:
                    raise SecretKeyError(f"the {ref['kind']} {ref['source']!r} no longer exists")
                if keyring is None:
                    raise SecretKeyError("this server has no secrets key")
                files.append(
                    {
                        "target": ref["target"],
                        "mode": int(ref.get("mode", 0o444)),
                        "uid": ref.get("uid"),
                        "gid": ref.get("gid"),
                        "data": keyring.decrypt(found),
                    }
                )
        except SecretKeyError as exc:
            files = [{"error": str(exc)}]
        out.append(tuple(files))
    return out


def _mine(session: Session, owner_id: str, kind: FileKind, name: str) -> SecretValue | None:
    return session.scalar(
        select(SecretValue).where(
            SecretValue.owner_id == owner_id,
            SecretValue.kind == kind.value,
            SecretValue.name == name,
        )
    )


def add_start_files(
    session: Session, keyring: Keyring | None, sets: dict[str, Desired]
) -> dict[str, Desired]:
    """The desired sets with the files of each start entry (a ``run`` entry with no
    container yet) whose service mounts secrets or configs: the only messages that
    carry the values. Entries of running replicas carry none."""
    starting = {
        e.workload_id for d in sets.values() for e in d.tasks if _starts(e) and e.workload_id
    }
    if not starting:
        return sets
    refs: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    for chunk in chunks(list(starting)):
        for workload_id, owner_id, spec in session.execute(
            select(Workload.id, Workload.owner_id, Workload.spec).where(
                Workload.id.in_(chunk), Workload.kind == "service"
            )
        ):
            files = (spec or {}).get("files")
            if files:
                refs[workload_id] = (owner_id, list(files))
    if not refs:
        return sets
    out: dict[str, Desired] = {}
    for node_id, desired in sets.items():
        entries = [e for e in desired.tasks if _starts(e) and e.workload_id in refs]
        if not entries:
            out[node_id] = desired
            continue
        files = start_files(session, keyring, [refs[e.workload_id] for e in entries])
        by_task = {e.task_id: f for e, f in zip(entries, files, strict=True)}
        out[node_id] = dataclasses.replace(
            desired,
            tasks=tuple(
                dataclasses.replace(e, files=by_task[e.task_id]) if e.task_id in by_task else e
                for e in desired.tasks
            ),
        )
    return out


def _starts(entry: DesiredEntry) -> bool:
    """A service replica's entry before its container exists (every service entry
    has networks, a job's none: the job hot path costs no query here)."""
    return (
        not entry.container_id
        and entry.desired == DesiredState.RUN
        and bool(entry.template.networks)
    )

"""Checkpoint names and when a checkpoint is no longer needed (pure).

A checkpointing job's attempts share one checkpoint per job, one per element of an
array or rank of a gang (docs/scheduler.md, Cooperative checkpoints), named
``ckpt-<job id>[-<index>]`` and owned by the job's owner. An agent names what it
holds by *key*, ``<owner id>/<name>`` (the layout of a shared ``checkpoint_root``);
the server answers which keys are over for good, and only those are removed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

PREFIX = "ckpt-"
_KEY = re.compile(r"([A-Za-z0-9_]{1,64})/ckpt-([A-Za-z0-9_]{1,32})(?:-(\d{1,9}))?", re.ASCII)


def checkpoint_name(workload_id: str, index: int | None) -> str:
    """The checkpoint of a job (``index`` None) or of one element / rank."""
    return f"{PREFIX}{workload_id}" if index is None else f"{PREFIX}{workload_id}-{index}"


@dataclass(frozen=True, slots=True)
class CheckpointKey:
    owner: str
    workload_id: str
    index: int | None

    @property
    def name(self) -> str:
        return checkpoint_name(self.workload_id, self.index)

    @property
    def key(self) -> str:
        return f"{self.owner}/{self.name}"


def parse_key(key: str) -> CheckpointKey | None:
    """``<owner>/ckpt-<job>[-<index>]`` as a key; None for anything else."""
    found = _KEY.fullmatch(key)
    if found is None:
        return None
    owner, workload_id, index = found.groups()
    return CheckpointKey(owner, workload_id, None if index is None else int(index))


@dataclass(frozen=True, slots=True)
class JobFacts:
    """What deciding needs of a checkpoint's workload, as the store has it."""

    owner: str
    kind: str = "job"
    #: A gang restarts every rank when one ends: its ranks' checkpoints live as one.
    gang: bool = False
    #: A service that was removed (``deleted_at`` set).
    deleted: bool = False


def over(
    keys: Iterable[CheckpointKey],
    workloads: Mapping[str, JobFacts],
    users: Collection[str],
    live: Collection[tuple[str, int | None]],
) -> list[CheckpointKey]:
    """The checkpoints no attempt can need any more.

    ``workloads``: the keys' workloads the store has; ``users``: which of the keys'
    owners it has; ``live``: ``(workload id, array index)`` of every task not yet
    ended (pending ones included: a restart in its back-off is pending).

    A job's (element's) checkpoint is over once it has no live task: a next attempt
    is created in the same transaction as the end of the one before, so none is
    coming. A gang's ranks wait for the whole gang (a rank that succeeded is started
    again when another rank's end restarts the gang). A workload the store no
    longer has was removed (``dockyard rm``, gc) if its owner is a user of this
    store; an owner it never had may be another cluster's sharing the Engine or the
    directory: never judged. A removed service's checkpoint goes once its replicas
    ended; one of another owner than its workload's is left alone.
    """
    jobs_live = {workload_id for workload_id, _ in live}
    out = []
    for key in keys:
        facts = workloads.get(key.workload_id)
        if facts is None:
            if key.owner in users:
                out.append(key)
            continue
        if facts.owner != key.owner:
            continue
        if facts.kind != "job":
            done = facts.deleted and key.workload_id not in jobs_live
        elif facts.gang:
            done = key.workload_id not in jobs_live
        else:
            done = (key.workload_id, key.index) not in live
        if done:
            out.append(key)
    return out

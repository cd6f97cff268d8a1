"""Refusing at submit a request no registered node could ever fit (as Slurm does).

A job asking for more CPU, memory or GPUs than any node of the cluster has would
wait forever; it is refused with a 422 naming the field, unless the caller asks
to ``hold`` it (a bigger node may join later). With no node registered yet
nothing is refused (a cluster still starting). The nodes' sizes are read with
one aggregate query, kept for :data:`CACHE_S` per database.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dockyard.core.errors import ValidationError
from dockyard.core.specs import JobSpec
from dockyard.store.tables import Node

#: How long the nodes' sizes are trusted (a node joining is seen within this).
CACHE_S = 2.0
HINT = "give hold=true (dockyard run --hold) to queue it anyway"


@dataclass(frozen=True, slots=True)
class Sizes:
    """The registered nodes' sizes: count, smallest and largest CPU and memory."""

    nodes: int
    min_cpu: int
    max_cpu: int
    min_memory: int
    max_memory: int


_cache: dict[str, tuple[float, Sizes]] = {}
_lock = threading.Lock()


def node_sizes(session: Session, fresh: bool = False) -> Sizes:
    """The nodes' sizes, from the cache unless ``fresh``."""
    key = str(session.get_bind().engine.url)
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] > now and not fresh:
        return hit[1]
    row = session.execute(
        select(
            func.count(),
            func.min(Node.cpu_millis),
            func.max(Node.cpu_millis),
            func.min(Node.memory_bytes),
            func.max(Node.memory_bytes),
        )
    ).one()
    sizes = Sizes(int(row[0]), *(int(x or 0) for x in row[1:]))
    with _lock:
        _cache[key] = (now + CACHE_S, sizes)
    return sizes


def check_fits(session: Session, spec: JobSpec, prefix: str = "") -> None:
    """Raise a 422 naming ``cpu``, ``memory`` or ``gpus`` (after ``prefix``) when no
    registered node could ever run ``spec`` (a refusal is never from the cache)."""
    try:
        _check(session, spec, prefix, node_sizes(session))
    except ValidationError:
        _check(session, spec, prefix, node_sizes(session, fresh=True))


def _check(session: Session, spec: JobSpec, prefix: str, sizes: Sizes) -> None:
    if sizes.nodes == 0:
        return
    cpu, memory = spec.resources.cpu_millis, spec.resources.memory_bytes
    if cpu > sizes.max_cpu:
        raise ValidationError(
            f"{prefix}cpu",
            f"{cpu / 1000:g} CPUs: no registered node has that many (the largest has "
            f"{sizes.max_cpu / 1000:g}); {HINT}",
        )
    if memory > sizes.max_memory:
        raise ValidationError(
            f"{prefix}memory",
            f"{_gib(memory)}: no registered node has that much memory (the largest has "
            f"{_gib(sizes.max_memory)}); {HINT}",
        )
    fits_anywhere = cpu <= sizes.min_cpu and memory <= sizes.min_memory
    if fits_anywhere and not spec.gpus:
        return
    big_enough = select(Node.gpus).where(Node.cpu_millis >= cpu, Node.memory_bytes >= memory)
    if not spec.gpus:
        if session.scalar(select(big_enough.exists())):
            return
        raise ValidationError(
            f"{prefix}cpu",
            f"no registered node has both {cpu / 1000:g} CPUs and {_gib(memory)}; {HINT}",
        )
    counts = (len([g for g in str(gs or "").split(",") if g]) for gs in session.scalars(big_enough))
    most = max(counts, default=0)
    if spec.gpus > most:
        raise ValidationError(
            f"{prefix}gpus",
            f"{spec.gpus} GPU(s): no registered node with room for the rest of the request "
            f"has that many (the most: {most}); {HINT}",
        )


def _gib(value: int) -> str:
    return f"{value / 1024**3:.4g} GiB"

"""Parsed workload specs, read in one query for many workloads and cached for jobs.

A job's spec never changes once submitted, yet the hot paths need it for every
task: the desired set sends its command, env and mounts to the agent, and a task
that ends asks its restart policy. Parsing the stored JSON each time was a large
share of the gateway's work, so job specs are parsed once and kept in a bounded
cache (least recently used out). A service's spec may change: it is read each time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.core.networks import parse_networks, resolve
from dockyard.core.specs import JobSpec
from dockyard.protocol.messages import TaskTemplate
from dockyard.server.state.batch import chunks
from dockyard.store.tables import Workload


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    kind: str  # "job" or "service"
    spec: JobSpec
    #: What an entry of a desired set takes from the spec (the task adds its own fields).
    template: TaskTemplate


_CACHE: OrderedDict[str, WorkloadSpec] = OrderedDict()
_CACHE_MAX = 20_000
_lock = threading.Lock()


def workload_specs(session: Session, workload_ids: Iterable[str]) -> dict[str, WorkloadSpec]:
    """The parsed specs of these workloads (those that exist), by workload id."""
    wanted = set(workload_ids)
    found: dict[str, WorkloadSpec] = {}
    with _lock:
        for workload_id in wanted:
            cached = _CACHE.get(workload_id)
            if cached is not None:
                _CACHE.move_to_end(workload_id)
                found[workload_id] = cached
    missing = [w for w in wanted if w not in found]
    for chunk in chunks(missing):
        for workload_id, kind, raw, owner_id, name, template in session.execute(
            select(
                Workload.id,
                Workload.kind,
                Workload.spec,
                Workload.owner_id,
                Workload.name,
                Workload.template,
            ).where(Workload.id.in_(chunk))
        ):
            networks = service_networks(raw, str(owner_id), str(name), bool(template))
            found[workload_id] = parsed = parse(str(kind), JobSpec.from_dict(raw), raw, networks)
            if kind == "job":
                _keep(workload_id, parsed)
    return found


def remember_job(workload_id: str, spec: JobSpec, raw: dict[str, Any]) -> None:
    """Cache a job's spec as it is submitted, so it is never parsed back from the store
    (a submit that then fails leaves an entry nobody asks for, until it ages out)."""
    _keep(workload_id, parse("job", spec, raw))


def _keep(workload_id: str, parsed: WorkloadSpec) -> None:
    with _lock:
        _CACHE[workload_id] = parsed
        while len(_CACHE) > _CACHE_MAX:
            _CACHE.popitem(last=False)


def service_networks(
    raw: dict[str, Any], owner_id: str, name: str, instance: bool
) -> tuple[dict[str, Any], ...]:
    """A service's networks with their cluster-wide ids, as the agent gets them (a
    job's: none). Template instances get an internal network by default."""
    if "service_ports" not in raw:
        return ()
    refs = resolve(
        parse_networks(raw.get("networks")),
        owner_id=owner_id,
        service_name=name,
        labels=raw.get("labels") or {},
        internal_default=instance,
    )
    return tuple(r.to_dict() for r in refs)


def parse(
    kind: str, spec: JobSpec, raw: dict[str, Any], networks: tuple[dict[str, Any], ...] = ()
) -> WorkloadSpec:
    """``raw``: the stored spec (``spec`` and what travels with it: policy, health);
    ``networks``: a service's (:func:`service_networks`)."""
    template = TaskTemplate(
        command=tuple(spec.command),
        env=dict(spec.env),
        kill_grace_s=spec.kill_grace_s,
        mounts=tuple(m.to_dict() for m in spec.mounts),
        security=spec.security.to_dict(),
        policy=raw.get("policy"),
        health=raw.get("health"),
        networks=networks,
        udp_ports=tuple(int(p) for p in raw.get("service_udp_ports") or ()),
    )
    return WorkloadSpec(kind, spec, template)

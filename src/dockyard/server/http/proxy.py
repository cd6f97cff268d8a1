"""Which replicas of a service take requests, and which one takes the next.

The pure part: :func:`routable` turns a service's replica rows into endpoints
(running, meant to run, on a ready node, healthy when the service has a health
check, with a published port) and :func:`pick` chooses one (least outstanding
requests, ties round robin). The store part: :func:`load_service` reads one
service and its running replicas in one indexed query, and
:class:`EndpointCache` keeps that per service for at most ``ttl_s`` (default
0.2 s) so a replica that fails its checks or whose node stops heartbeating
leaves the rotation within that bound. See docs/routing.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from dockyard.core.services import Health
from dockyard.core.states import DesiredState, TaskState
from dockyard.server.state.service_routes import ReplicaRow, service_rows
from dockyard.store.db import Database

DEFAULT_TTL_S = 0.2
#: Cached services (known or not) kept at most; expired entries go first.
MAX_CACHED = 10_000


#: One replica as the store has it (a task row joined with its node).
Replica = ReplicaRow


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a routable replica listens: its node's address and first host port."""

    task_id: str
    host: str
    port: int

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServiceRoute:
    """A live service and its routable endpoints (ordered by task id)."""

    name: str
    workload_id: str
    health_checked: bool
    endpoints: tuple[Endpoint, ...]


def _host_port(port_map: Sequence[Sequence[int]]) -> int | None:
    if not port_map:
        return None
    first = port_map[0]
    if len(first) < 2:
        return None
    port = first[1]
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return None
    return port


def routable(replicas: Sequence[Replica], health_checked: bool) -> tuple[Endpoint, ...]:
    """The replicas that may take requests, as endpoints ordered by task id.

    A replica qualifies when it is ``running``, its desired state is ``run``, its
    node is ``ready`` and has an address, it publishes a host port, and — only
    when the service has a health check — its health is ``healthy``.
    """
    out: list[Endpoint] = []
    for r in replicas:
        if r.state != TaskState.RUNNING or r.desired_state != DesiredState.RUN:
            continue
        if r.node_state != "ready" or not r.node_address:
            continue
        if health_checked and r.health != Health.HEALTHY:
            continue
        port = _host_port(r.port_map)
        if port is None:
            continue
        out.append(Endpoint(r.task_id, r.node_address, port))
    return tuple(sorted(out, key=lambda e: e.task_id))


def pick(
    endpoints: Sequence[Endpoint],
    outstanding: Mapping[Endpoint, int],
    turn: int,
    exclude: Collection[Endpoint] = (),
) -> Endpoint | None:
    """The endpoint with the fewest outstanding requests; ties go round robin.

    Among the equally least loaded endpoints (in their given order), turn ``n``
    takes the ``n``-th (mod their count), so successive turns take successive
    ones. ``None`` when every endpoint is excluded.
    """
    loads = [(outstanding.get(e, 0), e) for e in endpoints if e not in exclude]
    if not loads:
        return None
    least = min(load for load, _ in loads)
    tied = [e for load, e in loads if load == least]
    return tied[turn % len(tied)]


def load_service(db: Database, name: str) -> ServiceRoute | None:
    """The live service ``name`` with its routable endpoints, or None if there is none
    (one indexed query: :func:`~dockyard.server.state.service_routes.service_rows`)."""
    rows = service_rows(db, name)
    if rows is None:
        return None
    checked = bool(rows.spec.get("health"))
    return ServiceRoute(name, rows.workload_id, checked, routable(rows.replicas, checked))


@dataclass(slots=True)
class _Entry:
    expires: float
    route: ServiceRoute | None


class EndpointCache:
    """Per-service routes read from the store at most once per ``ttl_s``.

    Belongs to one event loop (one per HTTP listener). Concurrent requests for a
    service whose entry expired share one store read (run in a worker thread, so
    the loop never blocks on the database). Unknown names are cached too.
    """

    def __init__(
        self,
        db: Database,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._ttl = ttl_s
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Task[ServiceRoute | None]] = {}

    async def get(self, name: str) -> ServiceRoute | None:
        entry = self._entries.get(name)
        if entry is not None and entry.expires > self._clock():
            return entry.route
        load = self._loading.get(name)
        if load is None:
            # Its own task: a waiting client that disconnects cancels only its wait.
            load = asyncio.get_running_loop().create_task(self._load(name))
            load.add_done_callback(_retrieve)
            self._loading[name] = load
        return await asyncio.shield(load)

    async def _load(self, name: str) -> ServiceRoute | None:
        try:
            started = self._clock()
            route = await anyio.to_thread.run_sync(load_service, self._db, name)
            # The read began at ``started``: the TTL counts from then, not from its end.
            self._store(name, _Entry(started + self._ttl, route))
            return route
        finally:
            self._loading.pop(name, None)

    def _store(self, name: str, entry: _Entry) -> None:
        if len(self._entries) >= MAX_CACHED and name not in self._entries:
            now = self._clock()
            for key in [k for k, e in self._entries.items() if e.expires <= now]:
                del self._entries[key]
            if len(self._entries) >= MAX_CACHED:
                self._entries.pop(next(iter(self._entries)))
        self._entries[name] = entry


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # marks it retrieved when every waiter went away

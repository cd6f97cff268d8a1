"""The service-discovery loop (leader only): every node's endpoint tables, kept current.

Every :data:`INTERVAL_S` it reads the live services and their placed replicas
(two queries), builds each node's tables with the pure
``core.networks.endpoint_tables`` and sends an ``endpoints`` message to each
node whose tables changed, and to every node again every :data:`RESEND_S` (a
lost message costs that delay, a restarted agent gets its tables back). A
replica that turns unhealthy, ends, or whose node stops being ready leaves
the tables at the next step. See docs/networking.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from dockyard.core.networks import (
    ReplicaNetView,
    ServiceNetView,
    endpoint_tables,
    parse_networks,
    resolve,
)
from dockyard.core.states import PLACED_STATES
from dockyard.protocol.messages import Endpoints, ServerMessage
from dockyard.server.loop import Loop
from dockyard.server.state.batch import chunks
from dockyard.server.state.services import SERVICE
from dockyard.store.db import Database
from dockyard.store.tables import Node, Task, Workload

log = logging.getLogger(__name__)

INTERVAL_S = 0.25
RESEND_S = 3.0


class EndpointsLoop(Loop):
    name = "endpoints"

    def __init__(
        self,
        db: Database,
        send: Callable[[str, ServerMessage], None],
        interval: float = INTERVAL_S,
    ) -> None:
        super().__init__(interval)
        self._db = db
        self._send = send
        self._views: dict[tuple[str, int], ServiceNetView] = {}
        self._sent: dict[str, dict[str, Any]] = {}
        self._wired: dict[str, dict[str, Any]] = {}  # network id -> its last wire form
        self._last_full = 0.0
        self.messages = 0  # sent (tests, metrics)

    def step(self) -> None:
        services, replicas = self._read()
        tables = endpoint_tables(services, replicas)
        # Each network's table once (every node on it gets the same one); an unchanged
        # one is the object sent before, so comparing a node's tables is cheap.
        wired: dict[str, dict[str, Any]] = {}
        for nets in tables.values():
            for net_id, table in nets.items():
                if net_id not in wired:
                    form = table.to_wire()
                    before = self._wired.get(net_id)
                    wired[net_id] = before if before == form else form
        self._wired = wired
        wire = {
            node_id: {net_id: wired[net_id] for net_id in nets} for node_id, nets in tables.items()
        }
        now = time.monotonic()
        full = now - self._last_full >= RESEND_S
        if full:
            self._last_full = now
        for node_id in set(wire) | set(self._sent):
            networks = wire.get(node_id, {})
            if not full and self._sent.get(node_id) == networks:
                continue
            if not networks and node_id not in wire and self._sent.get(node_id) == {}:
                self._sent.pop(node_id, None)  # told it has none: stop sending
                continue
            self._send(node_id, Endpoints(node_id, networks))
            self._sent[node_id] = networks
            self.messages += 1

    def _read(self) -> tuple[list[ServiceNetView], list[ReplicaNetView]]:
        with self._db.read() as session:
            rows = session.execute(
                select(
                    Workload.id,
                    Workload.version,
                    Workload.owner_id,
                    Workload.name,
                    Workload.template,
                ).where(Workload.kind == SERVICE, Workload.deleted_at.is_(None))
            ).all()
            # Specs only of the versions not seen yet (a version's spec never changes).
            new = [str(r[0]) for r in rows if (str(r[0]), int(r[1])) not in self._views]
            specs: dict[tuple[str, int], Any] = {}
            for chunk in chunks(new):
                for wid, version, spec in session.execute(
                    select(Workload.id, Workload.version, Workload.spec).where(
                        Workload.id.in_(chunk)
                    )
                ):
                    specs[(str(wid), int(version))] = spec
            placed = session.execute(
                select(
                    Task.workload_id,
                    Task.node_id,
                    Task.state,
                    Task.desired_state,
                    Task.health,
                    Task.port_map,
                    Node.state,
                    Node.address,
                )
                .join(Node, Node.id == Task.node_id)
                .join(Workload, Workload.id == Task.workload_id)
                .where(
                    Task.state.in_([s.value for s in PLACED_STATES]),
                    Workload.kind == SERVICE,
                    Workload.deleted_at.is_(None),
                )
            ).all()
        views: dict[tuple[str, int], ServiceNetView] = {}
        for workload_id, version, owner_id, name, template in rows:
            key = (str(workload_id), int(version))
            view = self._views.get(key)
            if view is None and key in specs:
                spec = specs[key] or {}
                view = _view(str(workload_id), str(owner_id), str(name), spec, template)
            if view is not None:
                views[key] = view
        self._views = views
        replicas = [
            ReplicaNetView(
                workload_id=str(wid),
                node_id=str(node_id),
                state=str(state),
                desired_state=str(desired),
                health=str(health or ""),
                port_map=tuple((int(c), int(h)) for c, h in port_map or ()),
                node_state=None if node_state is None else str(node_state),
                node_address=None if address is None else str(address),
            )
            for wid, node_id, state, desired, health, port_map, node_state, address in placed
        ]
        return list(views.values()), replicas


def _view(
    workload_id: str, owner_id: str, name: str, spec: dict[str, Any], template: Any
) -> ServiceNetView | None:
    try:
        networks = resolve(
            parse_networks(spec.get("networks")),
            owner_id=owner_id,
            service_name=name,
            labels=spec.get("labels") or {},
            internal_default=bool(template),
        )
        return ServiceNetView(
            workload_id=workload_id,
            name=name,
            networks=networks,
            ports=tuple(int(p) for p in spec.get("service_ports") or ()),
            udp_ports=tuple(int(p) for p in spec.get("service_udp_ports") or ()),
            health_checked=bool(spec.get("health")),
        )
    except (ValueError, TypeError) as exc:  # a stored spec this version cannot read
        log.warning("service %s: no discovery: %s", name, exc)
        return None

"""The leader's control plane: agent gateway, scheduler, node monitor, reaper, services.

One :class:`ControlPlane` exists per leadership term. It is built when this
instance is elected and stopped when it is deposed, so a follower neither
listens for agents nor schedules; every write it makes goes through the
:class:`~dockyard.server.control.leader.FencedDatabase` of its term. A fresh plane
starts with no heartbeat history: every node gets one full grace period from
the start of the term before it can be declared down (no mass false downs
after a failover).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from dockyard.server.control.endpoints import EndpointsLoop
from dockyard.server.control.loops import NodeMonitor, ReaperLoop, SchedulerLoop
from dockyard.server.control.services import ServiceController
from dockyard.server.gateway.gateway import Gateway
from dockyard.server.metrics import ServerMetrics
from dockyard.store.db import Database

if TYPE_CHECKING:
    from dockyard.server.config import ServerConfig

log = logging.getLogger(__name__)


class ControlPlane:
    def __init__(
        self,
        db: Database,
        cfg: ServerConfig,
        term: int,
        metrics: ServerMetrics,
        wire_gateway: Callable[[Gateway], None] = lambda _: None,
    ) -> None:
        self.term = term
        self.scheduler = SchedulerLoop(db, push=self.push, metrics=metrics)
        self.gateway = Gateway(
            db, cfg.gateway, cfg.heartbeat_interval, self.scheduler.wake, metrics=metrics
        )
        wire_gateway(self.gateway)
        self.monitor = NodeMonitor(
            db,
            self.gateway.last_seen,
            cfg.node_grace,
            on_change=self.scheduler.wake,
            suspect_after=min(max(2 * cfg.heartbeat_interval, cfg.node_grace / 2), cfg.node_grace),
            forget=self.gateway.forget,
        )
        self.reaper = ReaperLoop(db, push=self.push)
        self.services = ServiceController(db, push=self.push, wake_scheduler=self.scheduler.wake)
        self.endpoints = EndpointsLoop(db, send=self.gateway.send)

    def push(self, node_ids: set[str]) -> None:
        self.gateway.push(node_ids)

    def start(self) -> None:
        self.gateway.start()
        self.scheduler.start()
        self.monitor.start()
        self.reaper.start()
        self.services.start()
        self.endpoints.start()
        self.scheduler.wake()

    def stop(self) -> None:
        self.endpoints.stop()
        self.services.stop()
        self.monitor.stop()
        self.reaper.stop()
        self.scheduler.stop()
        self.gateway.stop()

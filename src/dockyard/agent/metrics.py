"""Prometheus metrics of one node agent (``dockyard agent --metrics-port N``).

Each agent has its own registry. Counters are bumped where things happen
(heartbeats, log and usage batches, status reports); the rest is read from
the live agent at scrape time, so a scrape never disagrees with the agent.
The HTTP endpoint is a plain ``prometheus_client`` server serving ``/metrics``
on the address given (127.0.0.1 by default).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dockyard import __version__


class AgentMetrics:
    """Every metric an agent exports, in one registry of its own."""

    def __init__(self, node_id: str, node_name: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.heartbeats = Counter(
            "dockyard_agent_heartbeats_sent", "Heartbeats sent to the server", registry=r
        )
        self.log_lines = Counter(
            "dockyard_agent_log_lines_shipped",
            "Container log lines handed to the connection for the server",
            registry=r,
        )
        self.log_batches = Counter(
            "dockyard_agent_log_batches_shipped", "Batches of log lines shipped", registry=r
        )
        self.usage_samples = Counter(
            "dockyard_agent_usage_samples_shipped",
            "Per-task resource samples shipped",
            registry=r,
        )
        self.status_reports = Counter(
            "dockyard_agent_status_reports",
            "Task state reports sent to the server",
            ["state"],
            registry=r,
        )
        info = Gauge(
            "dockyard_agent_info",
            "This agent: version, node id and name",
            ["version", "node_id", "node"],
            registry=r,
        )
        info.labels(version=__version__, node_id=node_id, node=node_name).set(1)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def watch(
        self,
        running: Callable[[], int],
        reconcile_passes: Callable[[], int],
        unacked: Callable[[], int],
        generation: Callable[[], int],
    ) -> None:
        """Export values read from the live agent when scraped."""
        self.registry.register(_LiveCollector(running, reconcile_passes, unacked, generation))

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``addr:port`` in a daemon thread; returns the bound port."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server, self._thread = server, thread
        return int(server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None


class _LiveCollector(Collector):
    def __init__(
        self,
        running: Callable[[], int],
        reconcile_passes: Callable[[], int],
        unacked: Callable[[], int],
        generation: Callable[[], int],
    ) -> None:
        self._running = running
        self._passes = reconcile_passes
        self._unacked = unacked
        self._generation = generation

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        yield GaugeMetricFamily(
            "dockyard_agent_tasks_running",
            "Containers this agent watches (running tasks)",
            value=self._running(),
        )
        passes = CounterMetricFamily(
            "dockyard_agent_reconcile_passes",
            "Reconcile passes (desired tasks compared with the containers Docker lists)",
        )
        passes.add_metric([], self._passes())
        yield passes
        yield GaugeMetricFamily(
            "dockyard_agent_unacked_messages",
            "Reliable messages sent but not yet acknowledged by the server",
            value=self._unacked(),
        )
        yield GaugeMetricFamily(
            "dockyard_agent_desired_generation",
            "Generation of the desired task set the agent holds",
            value=self._generation(),
        )

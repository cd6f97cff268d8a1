"""Prometheus metrics of the control plane, served at ``/metrics``.

Each server gets its own :class:`ServerMetrics` (its own registry), so several
servers can live in one process (tests). Counters and histograms are updated
where things happen (scheduler, gateway, HTTP middleware); gauges about the
cluster (nodes and tasks by state, queue depth, capacity) are read from the
store at scrape time by :class:`StoreCollector`, so they are always the truth.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dockyard import __version__
from dockyard.core.states import PLACED_STATES, DesiredState, TaskState
from dockyard.store.db import Database
from dockyard.store.tables import Node, Task, UsageHistory, User

log = logging.getLogger(__name__)

NODE_STATES = ("ready", "suspect", "draining", "down")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SCHEDULING_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: Label sets of the per-task and per-node usage gauges, at most.
MAX_TASK_SERIES = 100
MAX_NODE_SERIES = 500
HEARTBEAT_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class ServerMetrics:
    """Every metric the server exports, in one registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_latency = Histogram(
            "dockyard_http_request_duration_seconds",
            "Time to the response's first byte, by route template",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.scheduler_step = Histogram(
            "dockyard_scheduler_step_duration_seconds",
            "Duration of scheduler passes that had pending tasks",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.scheduling_latency = Histogram(
            "dockyard_scheduling_latency_seconds",
            "From a task becoming schedulable (submission or back-off end) to its placement",
            buckets=SCHEDULING_BUCKETS,
            registry=r,
        )
        self.placements = Counter(
            "dockyard_placements", "Tasks placed on nodes by the scheduler", registry=r
        )
        self.heartbeats = Counter(
            "dockyard_gateway_heartbeats", "Heartbeats received from agents", registry=r
        )
        # Observed once per heartbeat by the gateway's I/O thread alone: lock-free.
        self.heartbeat_interval = OneWriterHistogram(
            "dockyard_heartbeat_interval_seconds",
            "Time between consecutive heartbeats of a node, on the server's clock (lag)",
            HEARTBEAT_BUCKETS,
        )
        self.heartbeat_lag = OneWriterHistogram(
            "dockyard_heartbeat_lag_seconds",
            "From the agent sending a heartbeat to the gateway handling it (agent and server "
            "clocks; meaningful where they are synchronised)",
            (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        r.register(self.heartbeat_interval)
        r.register(self.heartbeat_lag)
        self.gateway_messages = Counter(
            "dockyard_gateway_messages", "Messages received from agents", ["type"], registry=r
        )
        self.gateway_malformed = Counter(
            "dockyard_gateway_malformed_frames",
            "Frames from agents dropped as malformed (undecodable, wrong version or type, "
            "a body with a missing field or a value of the wrong type)",
            registry=r,
        )
        self.log_lines_received = Counter(
            "dockyard_log_lines_received", "Log lines shipped by agents to the server", registry=r
        )
        self.log_lines_stored = Counter(
            "dockyard_log_lines_stored",
            "Log lines stored (duplicates from re-sends are not counted)",
            registry=r,
        )
        self.stream_clients = Gauge(
            "dockyard_event_stream_clients", "Open live event streams", registry=r
        )
        self.events_streamed = Counter(
            "dockyard_events_streamed", "Events read once and fanned out to streams", registry=r
        )
        # Routing to services (server/ingress.py); "service" is "" for unknown names.
        self.proxy_requests = Counter(
            "dockyard_proxy_requests",
            "Requests routed to services, by service and response status class",
            ["service", "status"],
            registry=r,
        )
        self.proxy_upstream_errors = Counter(
            "dockyard_proxy_upstream_errors",
            "Failed attempts to reach a replica (connection or transfer errors)",
            ["service"],
            registry=r,
        )
        self.proxy_retries = Counter(
            "dockyard_proxy_retries",
            "Requests sent to another replica after a failed attempt",
            ["service"],
            registry=r,
        )
        self.proxy_latency = Histogram(
            "dockyard_proxy_request_duration_seconds",
            "Time from a routed request's arrival to its response's start, by service",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        build = Gauge("dockyard_build_info", "dockyard version", ["version"], registry=r)
        build.labels(version=__version__).set(1)

    def attach_store(
        self, db: Database, last_seen: Callable[[], dict[str, float]] | None = None
    ) -> None:
        """Export cluster state read from ``db`` (and the gateway's heartbeat clock)."""
        self.registry.register(StoreCollector(db, last_seen))


class StoreCollector(Collector):
    """Gauges computed from the store when Prometheus scrapes."""

    def __init__(self, db: Database, last_seen: Callable[[], dict[str, float]] | None) -> None:
        self._db = db
        self._last_seen = last_seen

    def describe(self) -> Iterable[Any]:
        return []  # collected lazily: no store reads at registration

    def collect(self) -> Iterable[Any]:
        up = GaugeMetricFamily("dockyard_store_up", "1 if the store answered this scrape")
        try:
            families = list(self._collect())
        except SQLAlchemyError as exc:
            log.warning("metrics: store read failed: %s", exc)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families]

    def _collect(self) -> Iterable[GaugeMetricFamily]:
        with self._db.read() as session:
            node_rows = session.execute(
                select(Node.id, Node.state, Node.draining, Node.cpu_millis, Node.memory_bytes)
            ).all()
            task_rows = session.execute(select(Task.state, func.count()).group_by(Task.state)).all()
            queue = (
                session.scalar(
                    select(func.count()).where(
                        Task.state == TaskState.PENDING, Task.desired_state == DesiredState.RUN
                    )
                )
                or 0
            )
            allocated = session.execute(
                select(func.sum(Task.cpu_millis), func.sum(Task.memory_bytes)).where(
                    Task.state.in_([s.value for s in PLACED_STATES])
                )
            ).one()
        nodes = GaugeMetricFamily("dockyard_nodes", "Nodes by state", labels=["state"])
        by_state = dict.fromkeys(NODE_STATES, 0)
        cpu = mem = 0
        live: list[str] = []
        for node_id, state, draining, cpu_millis, memory in node_rows:
            shown = "draining" if draining and state == "ready" else str(state)
            by_state[shown] = by_state.get(shown, 0) + 1
            if state != "down":
                cpu += int(cpu_millis)
                mem += int(memory)
            if state in ("ready", "suspect"):
                live.append(str(node_id))
        for state, count in by_state.items():
            nodes.add_metric([state], count)
        yield nodes

        tasks = GaugeMetricFamily("dockyard_tasks", "Tasks by state", labels=["state"])
        counts = {str(state): int(count) for state, count in task_rows}
        for state in TaskState:
            tasks.add_metric([state.value], counts.get(state.value, 0))
        yield tasks
        yield GaugeMetricFamily(
            "dockyard_queue_depth", "Pending tasks waiting for placement", value=queue
        )
        cores = GaugeMetricFamily(
            "dockyard_cluster_cpu_cores", "CPU of live nodes", labels=["kind"]
        )
        cores.add_metric(["capacity"], cpu / 1000)
        cores.add_metric(["allocated"], int(allocated[0] or 0) / 1000)
        yield cores
        memory_family = GaugeMetricFamily(
            "dockyard_cluster_memory_bytes", "Memory of live nodes", labels=["kind"]
        )
        memory_family.add_metric(["capacity"], mem)
        memory_family.add_metric(["allocated"], int(allocated[1] or 0))
        yield memory_family
        yield from self._usage()
        if self._last_seen is not None:
            seen = self._last_seen()
            now = time.monotonic()
            silences = [now - seen[n] for n in live if n in seen]
            yield GaugeMetricFamily(
                "dockyard_heartbeat_max_silence_seconds",
                "Longest time since the last heartbeat among live nodes (server clock)",
                value=max(silences, default=0.0),
            )

    def _usage(self) -> Iterable[GaugeMetricFamily]:
        """Per-task and per-node CPU and memory, from each one's newest 10 s bucket of
        the last minute of usage history: the MAX_TASK_SERIES busiest tasks and the
        MAX_NODE_SERIES busiest nodes (label sets stay bounded; the rest are counted)."""
        h = UsageHistory
        since = time.time() - 60
        with self._db.read() as session:
            rows = session.execute(
                select(
                    h.subject,
                    h.subject_id,
                    h.bucket,
                    h.cpu_s / h.seconds,
                    h.memory_gib_s / h.seconds,
                ).where(h.res == 10, h.bucket >= since, h.seconds > 0)
            ).all()
            newest: dict[tuple[str, str], tuple[int, float, float]] = {}
            for subject, sid, bucket, cpu, mem in rows:
                key = (str(subject), str(sid))
                if key not in newest or bucket > newest[key][0]:
                    newest[key] = (int(bucket), float(cpu), float(mem) * 1024**3)
            busiest = {
                kind: sorted(
                    ((sid, v) for (k, sid), v in newest.items() if k == kind),
                    key=lambda item: (-item[1][1], item[0]),
                )
                for kind in ("task", "node")
            }
            tasks = busiest["task"][:MAX_TASK_SERIES]
            nodes = busiest["node"][:MAX_NODE_SERIES]
            task_info = (
                {
                    str(tid): (str(name), str(owner), str(node_id or ""))
                    for tid, name, owner, node_id in session.execute(
                        select(Task.id, Task.name, User.name, Task.node_id)
                        .join(User, User.id == Task.owner_id)
                        .where(Task.id.in_([sid for sid, _ in tasks]))
                    )
                }
                if tasks
                else {}
            )
            node_info = (
                {
                    str(nid): (str(name), int(cpu_millis))
                    for nid, name, cpu_millis in session.execute(
                        select(Node.id, Node.name, Node.cpu_millis).where(
                            Node.id.in_([sid for sid, _ in nodes])
                        )
                    )
                }
                if nodes
                else {}
            )
        labels = ["task", "name", "owner", "node_id"]
        task_cpu = GaugeMetricFamily(
            "dockyard_task_cpu_cores",
            "Mean CPU of a running task over its newest 10 s",
            labels=labels,
        )
        task_mem = GaugeMetricFamily(
            "dockyard_task_memory_bytes",
            "Mean memory of a task over its newest 10 s",
            labels=labels,
        )
        for sid, (_, cpu, mem) in tasks:
            if sid in task_info:
                values = [sid, *task_info[sid]]
                task_cpu.add_metric(values, cpu)
                task_mem.add_metric(values, mem)
        node_cpu = GaugeMetricFamily(
            "dockyard_node_cpu_busy_cores",
            "Host CPU busy on a node (its busy fraction times its capacity), newest 10 s",
            labels=["node_id", "node"],
        )
        node_mem = GaugeMetricFamily(
            "dockyard_node_memory_used_bytes",
            "Host memory in use on a node, newest 10 s",
            labels=["node_id", "node"],
        )
        for sid, (_, busy, mem) in nodes:
            if sid in node_info:
                name, cpu_millis = node_info[sid]
                node_cpu.add_metric([sid, name], busy * cpu_millis / 1000)
                node_mem.add_metric([sid, name], mem)
        left = GaugeMetricFamily(
            "dockyard_usage_series_omitted",
            "Tasks or nodes with recent usage left out of the per-task/per-node gauges (caps)",
            labels=["kind"],
        )
        left.add_metric(["task"], max(0, len(busiest["task"]) - MAX_TASK_SERIES))
        left.add_metric(["node"], max(0, len(busiest["node"]) - MAX_NODE_SERIES))
        yield from (task_cpu, task_mem, node_cpu, node_mem, left)


class RequestMetricsMiddleware:
    """Observes HTTP latency labelled by the matched route template, never the raw path."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        observed = False

        def observe(status: int) -> None:
            nonlocal observed
            observed = True
            self.metrics.http_latency.labels(
                method=str(scope.get("method", "")),
                route=route_label(scope),
                status=str(status),
            ).observe(time.perf_counter() - start)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and not observed:
                observe(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if not observed:
                observe(500)


def route_label(scope: Scope) -> str:
    """The route template (``/api/v1/tasks/{ref}``) a request matched, bounded in cardinality."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    if str(scope.get("path", "")).startswith("/ui/"):
        return "/ui/{file}"
    return "unmatched"


class OneWriterHistogram(Collector):
    """A histogram that one thread observes into without locks, exposed at scrape time.

    ``prometheus_client.Histogram`` takes a lock per observation (a few microseconds);
    at 20,000 heartbeats a second, with two histograms each, that was a tenth of the
    gateway's cost. Here an observation is a bisect and two additions. A scrape may
    see a count one observation ahead of the sum: harmless for a histogram.
    """

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        self._name = name
        self._doc = documentation
        self._bounds = sorted(float(b) for b in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last: above every bound
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterable[HistogramMetricFamily]:
        counts = list(self._counts)
        cumulative, buckets = 0, []
        for bound, count in zip([*self._bounds, math.inf], counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if math.isinf(bound) else repr(bound), cumulative))
        family = HistogramMetricFamily(self._name, self._doc)
        family.add_metric([], buckets, sum_value=self._sum)
        yield family

    def describe(self) -> Iterable[HistogramMetricFamily]:
        yield HistogramMetricFamily(self._name, self._doc)

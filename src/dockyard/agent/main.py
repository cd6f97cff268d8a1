"""Assembling and running one node agent."""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from dockyard import __version__, config
from dockyard.agent.builder import Builder
from dockyard.agent.checkpoints import CHECK_EVERY_S as CHECKPOINT_CHECK_S
from dockyard.agent.checkpoints import CheckpointSweeper
from dockyard.agent.connection import Connection
from dockyard.agent.execs import ExecManager
from dockyard.agent.gpus import detect_gpus, inventory
from dockyard.agent.health import HealthMonitor
from dockyard.agent.logship import LogShipper
from dockyard.agent.metrics import AgentMetrics
from dockyard.agent.orphans import CHECK_EVERY_S as ORPHAN_CHECK_S
from dockyard.agent.orphans import OrphanReaper
from dockyard.agent.reconciler import Reconciler
from dockyard.agent.sampler import DEFAULT_INTERVAL_S as DEFAULT_SAMPLE_INTERVAL_S
from dockyard.agent.sampler import UsageSampler
from dockyard.agent.secretfiles import SecretFiles
from dockyard.core.ids import new_id
from dockyard.drivers import DRIVERS, make_driver
from dockyard.drivers.base import Driver
from dockyard.drivers.errors import DriverError
from dockyard.protocol import curve as keys
from dockyard.protocol.messages import (
    Build,
    CheckpointsOver,
    Desired,
    Endpoints,
    ExecClose,
    ExecInput,
    ExecResize,
    ExecStart,
    Heartbeat,
    Hello,
    LogLine,
    Logs,
    Orphans,
    Prune,
    Pruned,
    ServerMessage,
    Status,
    TaskStatus,
    Usage,
    UsageSample,
)
from dockyard.settings import ConfigError

log = logging.getLogger(__name__)

#: How often the agent looks at which images it has (reported when they change).
IMAGES_EVERY_S = 10.0


@dataclass
class AgentConfig:
    server: str = f"tcp://127.0.0.1:{config.DEFAULT_GATEWAY_PORT}"
    data_dir: Path = field(default_factory=lambda: config.default_data_dir() / "agent")
    name: str = field(default_factory=socket.gethostname)
    driver: str = "docker"
    #: The node's advertised address (services are reached there); published
    #: container ports bind on this address only.
    address: str = "127.0.0.1"
    heartbeat_interval: float = config.DEFAULT_HEARTBEAT_S
    #: Seconds a server connection may stay silent after a ZMTP ping before it is
    #: dropped and redialled. Short, so HA failover is quick; raise it above the
    #: round trip of a slow link (1 s here drops every connection of a 1 s RTT link).
    link_timeout: float = 1.0
    labels: dict[str, str] = field(default_factory=dict)
    node_id: str | None = None
    sample_interval: float = DEFAULT_SAMPLE_INTERVAL_S
    #: Seconds between looks for containers of other node ids on this Engine (the
    #: server says which no live agent uses; those are removed). 0: never.
    orphan_check_interval: float = ORPHAN_CHECK_S
    #: Serve Prometheus metrics on 127.0.0.1:PORT (0: any free port); None: off.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    #: The GPUs this node offers, by index (``[0, 2]``) or by UUID (``["GPU-..."]``,
    #: numbered in order); None: ask NVML (nvidia-ml-py) if present.
    gpus: list[int | str] | None = None
    #: Join token from ``dockyard node token create``; it pins the server's CURVE key.
    join_token: str | None = None
    #: The server's CURVE public key (hex or z85), if not taken from a join token;
    #: remembered in data_dir after the first join. None and no token: plaintext.
    server_key: str | None = None
    #: A directory shared by every node (an NFS mount, say): checkpointing jobs'
    #: checkpoint dirs live there, so they follow a requeued attempt to any node;
    #: None: a Docker volume on this node (docs/scheduler.md, Cooperative checkpoints).
    checkpoint_root: Path | None = None
    #: Seconds between questions about the checkpoints held here (volumes, dirs under
    #: checkpoint_root); those of jobs over for good are removed. 0: never.
    checkpoint_check_interval: float = CHECKPOINT_CHECK_S

    def __post_init__(self) -> None:
        if self.driver not in DRIVERS:
            raise ConfigError("agent.driver", f"unknown driver {self.driver!r} (known: {DRIVERS})")
        if self.gpus is not None:
            try:
                inventory(self.gpus)
            except ValueError as exc:
                raise ConfigError("agent.gpus", str(exc)) from exc
        try:
            if self.join_token:
                keys.parse_token(self.join_token)
            if self.server_key:
                keys.key_from_text(self.server_key)
        except ValueError as exc:
            key = "agent.join_token" if self.join_token else "agent.server_key"
            raise ConfigError(key, str(exc)) from exc


def load_node_id(data_dir: Path) -> str:
    """The node's stable id, kept in the agent's data dir across restarts."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / "node_id"
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    value = "n-" + new_id()
    path.write_text(value + "\n")
    return value


SERVER_KEY_FILE = "server.pub"
EXEC_MESSAGES = (ExecStart, ExecInput, ExecResize, ExecClose)


def curve_for(cfg: AgentConfig) -> tuple[bytes, bytes, bytes] | None:
    """(server key, own public, own secret) for a CURVE connection, or None (plaintext).

    The server key comes from the join token, else ``server_key``, else the one
    remembered from an earlier join; the agent's own key pair lives in its data dir."""
    server_key: bytes | None = None
    try:
        if cfg.join_token:
            server_key = keys.parse_token(cfg.join_token)[1]
        elif cfg.server_key:
            server_key = keys.key_from_text(cfg.server_key)
    except ValueError as exc:
        raise ConfigError("agent.join_token", str(exc)) from exc
    remembered = cfg.data_dir / SERVER_KEY_FILE
    if server_key is None and remembered.exists():
        server_key = remembered.read_text().strip().encode()
    if server_key is None:
        log.warning("no join token or server key: connecting in plaintext (open-join servers)")
        return None
    cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    remembered.write_text(server_key.decode() + "\n")
    own = keys.load_or_create_keys(cfg.data_dir)
    return server_key, own.public, own.secret


class Agent:
    def __init__(self, cfg: AgentConfig, driver: Driver | None = None) -> None:
        self.cfg = cfg
        self.node_id = cfg.node_id or load_node_id(cfg.data_dir)
        self.driver = driver or make_driver(cfg.driver)
        self.connection = Connection(
            cfg.server,
            self.node_id,
            on_message=self._on_message,
            hello=self._hello,
            heartbeat=self._heartbeat,
            heartbeat_interval=cfg.heartbeat_interval,
            curve=curve_for(cfg),
            link_timeout=cfg.link_timeout,
        )
        self.builder = Builder(self.driver, self.node_id, self.connection.send_reliable)
        self.shipper = LogShipper(self._ship_logs, self.connection.pending)

        found = inventory(cfg.gpus) if cfg.gpus is not None else detect_gpus()
        #: Indices the scheduler allocates; the runtime gets UUIDs where they are known.
        self.gpus = sorted(found)
        self.gpu_uuids = {index: uuid for index, uuid in found.items() if uuid}
        self.reconciler = Reconciler(
            self.driver,
            self.node_id,
            self._report,
            self.shipper,
            bind_address=cfg.address,
            gpu_uuids=self.gpu_uuids,
        )
        self.health = HealthMonitor(
            self.driver, self.node_id, self.connection.send_reliable, bind_address=cfg.address
        )
        self.reconciler.health = self.health
        self.reconciler.files = SecretFiles(cfg.data_dir / "secrets")
        self.reconciler.checkpoint_root = cfg.checkpoint_root
        self.connection.on_welcome = self.reconciler.welcomed
        self.sampler = UsageSampler(
            self.driver,
            self.reconciler.running_containers,
            self._ship_usage,
            interval=cfg.sample_interval,
        )
        self.reconciler.final_usage = self.sampler.final
        self.execs = ExecManager(
            self.driver,
            self.node_id,
            self.reconciler.running_containers,
            self.connection.send_reliable,
        )
        self.orphans = OrphanReaper(
            self.driver,
            self.node_id,
            self.connection.send_reliable,
            self.connection.pending,
            interval=cfg.orphan_check_interval,
            checkpoints=CheckpointSweeper(
                self.driver,
                self.node_id,
                self.connection.send_reliable,
                self.connection.pending,
                root=cfg.checkpoint_root,
            ),
            checkpoint_interval=cfg.checkpoint_check_interval,
        )
        self.metrics = AgentMetrics(self.node_id, cfg.name)
        self.metrics.watch(
            running=self.reconciler.running_count,
            reconcile_passes=lambda: self.reconciler.passes,
            unacked=self.connection.unacked,
            generation=lambda: self.reconciler.generation,
        )
        #: The port /metrics is served on once started (None: not served).
        self.metrics_port: int | None = None
        self._stopped = threading.Event()
        self._images_checked = -IMAGES_EVERY_S  # monotonic time of the last lookup
        self._images_sent: list[str] = []

    def _ship_usage(self, samples: tuple[UsageSample, ...]) -> None:
        self.metrics.usage_samples.inc(len(samples))
        self.connection.send_reliable(Usage(self.node_id, samples))

    def _ship_logs(self, lines: tuple[LogLine, ...]) -> str:
        self.metrics.log_lines.inc(len(lines))
        self.metrics.log_batches.inc()
        return self.connection.send_reliable(Logs(self.node_id, lines))

    def _report(self, update: TaskStatus) -> None:
        self.metrics.status_reports.labels(state=update.state).inc()
        self.connection.send_reliable(Status(self.node_id, (update,)), merge=True)

    def _hello(self) -> Hello:
        capacity = self.driver.capacity()
        return Hello(
            node_id=self.node_id,
            join_token=self.cfg.join_token or "",
            name=self.cfg.name,
            address=self.cfg.address,
            driver=self.driver.name,
            version=__version__,
            labels=dict(self.cfg.labels),
            images=tuple(self._images_sent),
            cpu_millis=capacity.cpu_millis,
            memory_bytes=capacity.memory_bytes,
            gpus=tuple(self.gpus),
            gpu_uuids={str(i): u for i, u in self.gpu_uuids.items()},
        )

    def _images_update(self) -> list[str] | None:
        """The node's images when they changed (looked up every IMAGES_EVERY_S), else None."""
        now = time.monotonic()
        if now - self._images_checked < IMAGES_EVERY_S:
            return None
        self._images_checked = now
        try:
            images = list(self.driver.images())
        except DriverError as exc:
            log.debug("listing images failed: %s", exc)
            return None
        if images == self._images_sent:
            return None
        self._images_sent = images
        return images

    def _heartbeat(self) -> Heartbeat:
        self.metrics.heartbeats.inc()
        images = self._images_update()
        return Heartbeat(
            node_id=self.node_id,
            sent_at=time.time(),  # lets the server measure heartbeat lag
            generation=self.reconciler.generation,
            cpu_percent=psutil.cpu_percent(None),
            memory_bytes=psutil.virtual_memory().used,
            running=self.reconciler.running_count(),
            unacked=self.connection.unacked(),
            images=None if images is None else tuple(images),
        )

    def _on_message(self, msg: ServerMessage) -> None:
        if isinstance(msg, Desired):
            self.reconciler.set_desired(msg)
        elif isinstance(msg, Orphans):
            self.orphans.on_orphans(msg)
        elif isinstance(msg, CheckpointsOver):
            self.orphans.on_checkpoints_over(msg)
        elif isinstance(msg, Prune):
            threading.Thread(target=self._prune, name="prune", daemon=True).start()
        elif isinstance(msg, Build):
            self.builder.handle(msg)
        elif isinstance(msg, EXEC_MESSAGES):
            self.execs.handle(msg)
        elif isinstance(msg, Endpoints):
            self.reconciler.networks.submit(msg)

    def _prune(self) -> None:
        try:
            removed = self.driver.prune(self.node_id)
        except DriverError as exc:
            log.warning("prune failed: %s", exc)
            return
        self.connection.send_reliable(Pruned(self.node_id, removed))

    def start(self) -> None:
        if self.cfg.metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.cfg.metrics_port, self.cfg.metrics_host)
            host, port = self.cfg.metrics_host, self.metrics_port
            log.info("agent metrics on http://%s:%d/metrics", host, port)
        self.shipper.start()
        self.reconciler.start()
        self.sampler.start()
        if self.orphans.active:  # orphaned containers, checkpoints of ended jobs
            self.orphans.start()
        self.connection.start()

    def stop(self) -> None:
        self._stopped.set()
        self.sampler.stop()
        self.orphans.stop()
        self.reconciler.stop()
        self.health.stop()
        self.shipper.stop()
        self.connection.stop()
        self.metrics.stop()

    def wait(self) -> None:
        """Until :meth:`stop`. Wakes every 0.5 s: a signal the kernel delivers to
        another thread only runs its Python handler once the main thread runs, and a
        wait without a timeout never returns to it (a SIGTERMed agent stayed up)."""
        while not self._stopped.wait(0.5):
            pass

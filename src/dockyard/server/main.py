"""Assembling and running the control plane."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from dockyard import config
from dockyard.core.errors import ValidationError
from dockyard.core.security import ContainerPolicy
from dockyard.protocol import curve
from dockyard.protocol.messages import MsgType
from dockyard.server import auth, join
from dockyard.server.api import create_app
from dockyard.server.builds import BuildService
from dockyard.server.deps import ServerContext
from dockyard.server.dropfolder import DropFolder
from dockyard.server.execs import ExecService
from dockyard.server.gateway import Gateway
from dockyard.server.loops import NodeMonitor, ReaperLoop, SchedulerLoop
from dockyard.server.metrics import ServerMetrics
from dockyard.server.stream import EventHub
from dockyard.settings import ConfigError
from dockyard.store.db import Database, sqlite_url

STORES = ("sqlite", "postgresql")

log = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    data_dir: Path = field(default_factory=config.default_data_dir)
    db_url: str | None = None
    host: str = config.DEFAULT_API_HOST
    port: int = config.DEFAULT_API_PORT
    gateway: str = f"tcp://127.0.0.1:{config.DEFAULT_GATEWAY_PORT}"
    heartbeat_interval: float = config.DEFAULT_HEARTBEAT_S
    node_grace: float = config.DEFAULT_NODE_GRACE_S
    #: Cluster-wide cap on any task's run time (the CTF engine's 1 h); None: no cap.
    max_runtime_cap_s: float | None = None
    log_level: str = "warning"
    #: Store backend by name: ``sqlite`` (embedded, in data_dir) or ``postgresql``
    #: (db_url); default: from db_url's scheme.
    store: str | None = None
    #: Auth backend by name: ``token`` (bearer tokens, stored hashed).
    auth: str = "token"
    #: Cluster-wide container policy relaxations (keys of ContainerPolicy); per-user
    #: overrides set by an admin win.
    policy: dict[str, Any] = field(default_factory=dict)
    #: Drop folder: archives with a dockyard.yml dropped here are built and queued.
    watch_dir: Path | None = None
    #: A dropped file is taken once unchanged over two scans and at least this old.
    watch_settle_s: float = 2.0
    #: Development only: agents join without a token, the gateway is plaintext.
    insecure_open_join: bool = False
    #: Serve the HTTP API over TLS with this certificate chain and private key (PEM).
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None

    def __post_init__(self) -> None:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ConfigError("server.tls_certfile", "TLS needs both tls_certfile and tls_keyfile")
        for key, tls_path in (
            ("tls_certfile", self.tls_certfile),
            ("tls_keyfile", self.tls_keyfile),
        ):
            if tls_path is not None and not tls_path.is_file():
                raise ConfigError(f"server.{key}", f"{tls_path} does not exist")
        if self.store is None:
            self.store = "postgresql" if (self.db_url or "").startswith("postgresql") else "sqlite"
        if self.store not in STORES:
            raise ConfigError("server.store", f"unknown store {self.store!r} (known: {STORES})")
        if self.store == "postgresql" and not (self.db_url or "").startswith("postgresql"):
            raise ConfigError("server.db_url", "store postgresql needs a postgresql:// URL")
        if self.store == "sqlite" and self.db_url and not self.db_url.startswith("sqlite"):
            raise ConfigError("server.db_url", "store sqlite needs a sqlite:/// URL (or none)")
        if self.auth not in auth.BACKENDS:
            raise ConfigError("server.auth", f"unknown auth {self.auth!r} (known: {auth.BACKENDS})")
        try:
            ContainerPolicy.from_dict(self.policy)
        except ValidationError as exc:
            raise ConfigError("server.policy", str(exc)) from exc

    def database_url(self) -> str:
        return self.db_url or sqlite_url(self.data_dir)


class Server:
    """The control plane: store, gateway, control loops and the HTTP API."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = Database(cfg.database_url())
        self.db.migrate()
        with self.db.write() as session:
            token = auth.bootstrap_admin(session, cfg.data_dir)
        if token:
            log.warning("created admin token in %s", cfg.data_dir / auth.ADMIN_TOKEN_FILE)
        self.metrics = ServerMetrics()
        self.events = EventHub(self.db, self.metrics)
        self.scheduler = SchedulerLoop(self.db, push=self._push, metrics=self.metrics)
        self.gateway = Gateway(
            self.db, cfg.gateway, cfg.heartbeat_interval, self._changed, metrics=self.metrics
        )
        self.metrics.attach_store(self.db, self.gateway.last_seen)
        if cfg.insecure_open_join:
            log.warning("insecure_open_join: any agent may join, agent traffic is plaintext")
        else:
            keys = curve.load_or_create_keys(cfg.data_dir)
            self.gateway.curve_keys = (keys.public, keys.secret)
        self.builds = BuildService(self.db, self.gateway.send)
        self.gateway.handlers[MsgType.BUILD_OUTPUT] = self.builds.on_output
        self.gateway.handlers[MsgType.BUILD_DONE] = self.builds.on_done
        self.execs = ExecService(self.gateway.send)
        self.gateway.handlers[MsgType.EXEC_OUTPUT] = self.execs.on_output
        self.gateway.handlers[MsgType.EXEC_EXIT] = self.execs.on_exit

        self.monitor = NodeMonitor(
            self.db,
            self.gateway.last_seen,
            cfg.node_grace,
            on_change=self._changed,
            suspect_after=min(max(2 * cfg.heartbeat_interval, cfg.node_grace / 2), cfg.node_grace),
            forget=self.gateway.forget,
        )
        self.reaper = ReaperLoop(self.db, push=self._push)
        self.app = create_app(
            ServerContext(
                db=self.db,
                data_dir=cfg.data_dir,
                wake_scheduler=self.scheduler.wake,
                push=self._push,
                max_runtime_cap_s=cfg.max_runtime_cap_s,
                cluster_policy=dict(cfg.policy),
                prune_nodes=self.gateway.prune_all,
                metrics=self.metrics,
                event_hub=self.events,
                builds=self.builds,
                execs=self.execs,
            )
        )

        self.dropfolder: DropFolder | None = None
        if cfg.watch_dir is not None:
            self.dropfolder = DropFolder(
                cfg.watch_dir,
                self.db,
                self.builds,
                self.scheduler.wake,
                cluster_policy=dict(cfg.policy),
                max_runtime_cap_s=cfg.max_runtime_cap_s,
                settle_s=cfg.watch_settle_s,
            )
        self._http: uvicorn.Server | None = None
        self._http_thread: threading.Thread | None = None

    def create_join_token(self, description: str = "", ttl_s: float | None = None) -> str:
        """A join token (for an agent started alongside, e.g. by ``dockyard up``)."""
        keys = curve.load_or_create_keys(self.cfg.data_dir)
        with self.db.write() as session:
            return join.create_token(session, keys.public, None, description, ttl_s)[1]

    def _push(self, node_ids: set[str]) -> None:
        self.gateway.push(node_ids)

    def _changed(self) -> None:
        self.scheduler.wake()

    def start_background(self) -> None:
        """Start the gateway and the control loops (not the HTTP API)."""
        self.gateway.start()
        self.scheduler.start()
        self.monitor.start()
        self.reaper.start()
        self.builds.start()
        if self.dropfolder is not None:
            self.dropfolder.start()
        self.scheduler.wake()

    def _uvicorn(self) -> uvicorn.Server:
        return uvicorn.Server(
            uvicorn.Config(
                self.app,
                host=self.cfg.host,
                port=self.cfg.port,
                log_level=self.cfg.log_level,
                access_log=False,
                timeout_graceful_shutdown=2,
                ssl_certfile=str(self.cfg.tls_certfile) if self.cfg.tls_certfile else None,
                ssl_keyfile=str(self.cfg.tls_keyfile) if self.cfg.tls_keyfile else None,
            )
        )

    def serve_forever(self) -> None:
        """Run the HTTP API in this thread until SIGINT/SIGTERM, then stop everything."""
        self._http = self._uvicorn()
        try:
            self._http.run()
        finally:
            self.stop()

    def start_http_thread(self) -> None:
        """Run the HTTP API in a background thread (for in-process clusters)."""
        self._http = self._uvicorn()
        self._http_thread = threading.Thread(target=self._http.run, name="http", daemon=True)
        self._http_thread.start()

    def stop(self) -> None:
        self.events.stop()  # ends live streams, so the HTTP server can stop at once
        if self._http is not None:
            self._http.should_exit = True
        if self._http_thread is not None:
            self._http_thread.join(5)
        self.monitor.stop()
        self.reaper.stop()
        if self.dropfolder is not None:
            self.dropfolder.stop()
        self.builds.stop()

        self.scheduler.stop()

        self.gateway.stop()
        self.db.dispose()

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
from dockyard.core.ids import new_id
from dockyard.core.security import ContainerPolicy
from dockyard.protocol import curve
from dockyard.protocol.messages import MsgType
from dockyard.server import auth, join
from dockyard.server.api import create_app
from dockyard.server.builds import BuildService
from dockyard.server.control import ControlPlane
from dockyard.server.deps import ServerContext
from dockyard.server.dropfolder import DropFolder
from dockyard.server.execs import ExecService
from dockyard.server.gateway import Gateway
from dockyard.server.ingress import ingress_app
from dockyard.server.leader import DEFAULT_LEASE_S, FencedDatabase, LeaderElector, NotLeader
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
    #: Leader lease (HA on PostgreSQL): renewed every third of it; a new leader takes
    #: over when it expires, so failover takes at most about 1.3 x lease_s.
    lease_s: float = DEFAULT_LEASE_S
    #: A second listener (same host) that serves only the service router,
    #: ``/NAME/<path>`` (docs/routing.md); 0: off.
    ingress_port: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.ingress_port <= 65535:
            raise ConfigError("server.ingress_port", "must be a port number (0: off)")
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
        self.instance_id = "s-" + new_id()
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = Database(cfg.database_url())
        self.db.migrate()
        with self.db.write() as session:
            token = auth.bootstrap_admin(session, cfg.data_dir)
        if token:
            log.warning("created admin token in %s", cfg.data_dir / auth.ADMIN_TOKEN_FILE)
        self.metrics = ServerMetrics()
        self.events = EventHub(self.db, self.metrics)
        self.metrics.attach_store(self.db, self._last_seen)
        if cfg.insecure_open_join:
            log.warning("insecure_open_join: any agent may join, agent traffic is plaintext")
            self._curve_keys: tuple[bytes, bytes] | None = None
        else:
            keys = curve.load_or_create_keys(cfg.data_dir)
            self._curve_keys = (keys.public, keys.secret)
        self.builds = BuildService(self.db, self._send)
        self.execs = ExecService(self._send)
        # The gateway and control loops run only while this instance leads (HA):
        # one ControlPlane per term, writing through the term's fence.
        self.elector = LeaderElector(
            self.db,
            self.instance_id,
            on_elected=self._elected,
            on_deposed=self._deposed,
            lease_s=cfg.lease_s,
            api_url=f"http://{cfg.host}:{cfg.port}",
            gateway=cfg.gateway,
        )
        self.fenced_db = FencedDatabase(self.db, self.elector)
        self.control: ControlPlane | None = None
        self._control_lock = threading.Lock()
        self.app = create_app(
            ServerContext(
                db=self.db,
                data_dir=cfg.data_dir,
                wake_scheduler=self._changed,
                push=self._push,
                max_runtime_cap_s=cfg.max_runtime_cap_s,
                cluster_policy=dict(cfg.policy),
                prune_nodes=self._prune_nodes,
                metrics=self.metrics,
                event_hub=self.events,
                builds=self.builds,
                execs=self.execs,
                instance_id=self.instance_id,
            )
        )

        self.dropfolder: DropFolder | None = None
        if cfg.watch_dir is not None:
            self.dropfolder = DropFolder(
                cfg.watch_dir,
                self.db,
                self.builds,
                self._changed,
                cluster_policy=dict(cfg.policy),
                max_runtime_cap_s=cfg.max_runtime_cap_s,
                settle_s=cfg.watch_settle_s,
                active=lambda: self.elector.is_leader,
            )
        self._http: uvicorn.Server | None = None
        self._http_thread: threading.Thread | None = None
        self._ingress: uvicorn.Server | None = None
        self._ingress_thread: threading.Thread | None = None

    def create_join_token(self, description: str = "", ttl_s: float | None = None) -> str:
        """A join token (for an agent started alongside, e.g. by ``dockyard up``)."""
        keys = curve.load_or_create_keys(self.cfg.data_dir)
        with self.db.write() as session:
            return join.create_token(session, keys.public, None, description, ttl_s)[1]

    # -- leadership ---------------------------------------------------------
    def _wire_gateway(self, gateway: Gateway) -> None:
        gateway.curve_keys = self._curve_keys
        gateway.handlers[MsgType.BUILD_OUTPUT] = self.builds.on_output
        gateway.handlers[MsgType.BUILD_DONE] = self.builds.on_done
        gateway.handlers[MsgType.EXEC_OUTPUT] = self.execs.on_output
        gateway.handlers[MsgType.EXEC_EXIT] = self.execs.on_exit

    def _elected(self, term: int) -> None:
        with self._control_lock:
            if self.control is not None:
                self.control.stop()
            self.control = ControlPlane(
                self.fenced_db, self.cfg, term, self.metrics, self._wire_gateway
            )
            self.control.start()

    def _deposed(self) -> None:
        # May be called from a control-loop thread (a fenced write): stop elsewhere.
        threading.Thread(target=self._stop_control, name="step-down", daemon=True).start()

    def _stop_control(self) -> None:
        with self._control_lock:
            control, self.control = self.control, None
            if control is not None and self.elector.term != control.term:
                control.stop()
            elif control is not None:  # re-elected meanwhile: keep it
                self.control = control

    @property
    def gateway(self) -> Gateway | None:
        control = self.control
        return control.gateway if control is not None else None

    def _push(self, node_ids: set[str]) -> None:
        control = self.control
        if control is not None:
            control.push(node_ids)

    def _send(self, *args: Any, **kwargs: Any) -> Any:
        gateway = self.gateway
        if gateway is None:
            raise NotLeader("this instance is not the leader; agents talk to the leader")
        return gateway.send(*args, **kwargs)

    def _last_seen(self) -> dict[str, float]:
        gateway = self.gateway
        return gateway.last_seen() if gateway is not None else {}

    def _prune_nodes(self) -> int:
        gateway = self.gateway
        return gateway.prune_all() if gateway is not None else 0

    def _changed(self) -> None:
        control = self.control
        if control is not None:
            control.scheduler.wake()

    def start_background(self) -> None:
        """Join the leader election (the leader runs the gateway and control loops)."""
        self.elector.start()
        self.builds.start()
        if self.dropfolder is not None:
            self.dropfolder.start()

    def _uvicorn(self, app: Any = None, port: int | None = None, **options: Any) -> uvicorn.Server:
        return uvicorn.Server(
            uvicorn.Config(
                app or self.app,
                host=self.cfg.host,
                port=port or self.cfg.port,
                log_level=self.cfg.log_level,
                access_log=False,
                timeout_graceful_shutdown=2,
                ssl_certfile=str(self.cfg.tls_certfile) if self.cfg.tls_certfile else None,
                ssl_keyfile=str(self.cfg.tls_keyfile) if self.cfg.tls_keyfile else None,
                **options,
            )
        )

    def _start_ingress(self) -> None:
        """The dedicated ingress listener, if configured (its own thread and event loop)."""
        if not self.cfg.ingress_port:
            return
        app = ingress_app(self.db, self.metrics)
        # Responses pass through as the service sent them: no Date/Server added.
        self._ingress = self._uvicorn(
            app, self.cfg.ingress_port, server_header=False, date_header=False
        )
        self._ingress_thread = threading.Thread(
            target=self._ingress.run, name="ingress", daemon=True
        )
        self._ingress_thread.start()

    def serve_forever(self) -> None:
        """Run the HTTP API in this thread until SIGINT/SIGTERM, then stop everything."""
        self._http = self._uvicorn()
        self._start_ingress()
        try:
            self._http.run()
        finally:
            self.stop()

    def start_http_thread(self) -> None:
        """Run the HTTP API in a background thread (for in-process clusters)."""
        self._http = self._uvicorn()
        self._http_thread = threading.Thread(target=self._http.run, name="http", daemon=True)
        self._http_thread.start()
        self._start_ingress()

    def stop(self) -> None:
        self.events.stop()  # ends live streams, so the HTTP server can stop at once
        for http in (self._http, self._ingress):
            if http is not None:
                http.should_exit = True
        for thread in (self._http_thread, self._ingress_thread):
            if thread is not None:
                thread.join(5)
        if self.dropfolder is not None:
            self.dropfolder.stop()
        self.builds.stop()
        with self._control_lock:
            control, self.control = self.control, None
        if control is not None:
            control.stop()
        self.elector.stop()  # steps down and releases the lease
        self.db.dispose()

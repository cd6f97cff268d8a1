"""Assembling and running the control plane."""

from __future__ import annotations

import logging
import threading
from typing import Any

import uvicorn

from dockyard.core.ids import new_id
from dockyard.protocol import curve
from dockyard.protocol.messages import BuildDone, BuildOutput, ExecExit, ExecOutput
from dockyard.server.config import ServerConfig
from dockyard.server.control.dropfolder import DropFolder
from dockyard.server.control.leader import FencedDatabase, LeaderElector, NotLeader
from dockyard.server.control.plane import ControlPlane
from dockyard.server.gateway.builds import BuildService
from dockyard.server.gateway.checkpoints import CheckpointCheck
from dockyard.server.gateway.execs import ExecService
from dockyard.server.gateway.gateway import Gateway
from dockyard.server.gateway.orphans import OrphanCheck
from dockyard.server.http.app import create_app
from dockyard.server.http.deps import ServerContext
from dockyard.server.http.ingress import ingress_app
from dockyard.server.http.stream import EventHub
from dockyard.server.metrics import ServerMetrics
from dockyard.server.state import auth, join, keyring
from dockyard.store.db import Database

log = logging.getLogger(__name__)


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
        #: Encrypts secrets and configs at rest (data_dir/secrets.key, 0600).
        self.keyring = keyring.load_or_create(cfg.data_dir)
        self.metrics = ServerMetrics()
        self.events = EventHub(self.db, self.metrics)
        self.metrics.attach_store(self.db, self._last_seen)
        if cfg.insecure_open_join:
            log.warning("insecure_open_join: any agent may join, agent traffic is plaintext")
            self._curve_keys: tuple[bytes, bytes] | None = None
        else:
            keys = curve.load_or_create_keys(cfg.data_dir)
            self._curve_keys = (keys.public, keys.secret)
        self.builds = BuildService(self.db, self._send, cluster_policy=cfg.policy)
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
                max_body_bytes=cfg.max_body_bytes,
                keyring=self.keyring,
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
        gateway.keyring = self.keyring
        gateway.handle(BuildOutput, self.builds.on_output)
        gateway.handle(BuildDone, self.builds.on_done)
        gateway.handle(ExecOutput, self.execs.on_output)
        gateway.handle(ExecExit, self.execs.on_exit)
        OrphanCheck(self.fenced_db, gateway, self.cfg.orphan_grace).wire()
        CheckpointCheck(self.fenced_db, gateway).wire()

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

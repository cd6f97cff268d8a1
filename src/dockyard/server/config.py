"""The server's settings (``[server]`` in the TOML file, ``DOCKYARD_*``, flags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard import config
from dockyard.core.errors import ValidationError
from dockyard.core.security import ContainerPolicy
from dockyard.server.state import auth
from dockyard.settings import ConfigError
from dockyard.store.db import sqlite_url

STORES = ("sqlite", "postgresql")
#: ``max_body_bytes`` default: 1 MiB (the HTTP layer's ``limits.DEFAULT_MAX_BODY_BYTES``).
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
MIN_BODY_BYTES = 4096


@dataclass
class ServerConfig:
    data_dir: Path = field(default_factory=config.default_data_dir)
    db_url: str | None = None
    host: str = config.DEFAULT_API_HOST
    port: int = config.DEFAULT_API_PORT
    gateway: str = f"tcp://127.0.0.1:{config.DEFAULT_GATEWAY_PORT}"
    heartbeat_interval: float = config.DEFAULT_HEARTBEAT_S
    node_grace: float = config.DEFAULT_NODE_GRACE_S
    #: Containers labelled with a node id that is unknown, or down and silent this
    #: long, are removed by an agent sharing their Docker Engine (docs/failures.md).
    orphan_grace: float = 60.0
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
    lease_s: float = config.DEFAULT_LEASE_S
    #: A second listener (same host) that serves only the service router,
    #: ``/NAME/<path>`` (docs/routing.md); 0: off.
    ingress_port: int = 0
    #: Largest JSON request body (bytes): a larger one is a 413 before it is read.
    #: Build-context uploads have their own limit (512 MiB).
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        if not MIN_BODY_BYTES <= self.max_body_bytes <= 2**31:
            raise ConfigError(
                "server.max_body_bytes", f"must be between {MIN_BODY_BYTES} and {2**31} bytes"
            )
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

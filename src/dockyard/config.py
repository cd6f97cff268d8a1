"""Defaults shared by the server, the agent and the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import platformdirs

DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8700
DEFAULT_GATEWAY_PORT = 8701
DEFAULT_HEARTBEAT_S = 1.0
DEFAULT_NODE_GRACE_S = 3.0
#: Leader lease (HA on PostgreSQL): renewed every third of it.
DEFAULT_LEASE_S = 1.2


def default_data_dir() -> Path:
    """``$DOCKYARD_DATA_DIR`` or the user's data directory."""
    env = os.environ.get("DOCKYARD_DATA_DIR")
    return Path(env) if env else Path(platformdirs.user_data_dir("dockyard"))


def default_config_dir() -> Path:
    return Path(platformdirs.user_config_dir("dockyard"))


#: ``dockyard up`` writes ``{"pid": ..., "url": ...}`` here in its data directory while
#: it serves (removed when it stops); the CLI's default URL comes from it.
UP_FILE = "up.json"


def running_up(data_dir: Path | None = None) -> dict[str, object] | None:
    """What a live ``dockyard up`` on ``data_dir`` (default: the user's) wrote, if its
    process is still alive."""
    path = (data_dir or default_data_dir()) / UP_FILE
    try:
        info = dict(json.loads(path.read_text()))
        os.kill(int(info["pid"]), 0)
    except PermissionError:
        return info  # alive, another user's process
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info

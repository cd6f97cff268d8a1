"""What the daemon commands (``up``, ``server``, ``agent``) need on this machine:
free ports, the lock of ``dockyard up``'s data directory, systemd readiness.

No command is registered here; ``cli/daemons.py`` calls these helpers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dockyard import config, systemd

#: ``dockyard up`` holds an exclusive lock on this file while it runs ...
LOCK_FILE = "up.lock"
#: ... and says where it listens in config.UP_FILE (the CLI's default URL: client.py).
UP_FILE = config.UP_FILE
#: How far past a taken default port to look for a free one (then any port).
PORT_SCAN = 50


def port_free(host: str, port: int) -> bool:
    """True if a TCP listener could bind ``host:port`` now (as uvicorn and ZeroMQ do,
    with SO_REUSEADDR: a port with only TIME_WAIT connections is free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int) -> bool:
    """True if something accepts TCP connections on ``host:port`` (a wildcard host is
    reached on loopback): the daemons' HTTP readiness."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1" if host != "::" else "::1"
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pick_port(host: str, preferred: int, avoid: tuple[int, ...] = ()) -> int:
    """``preferred`` if free, else the next free port above it (skipping ``avoid``),
    else one the kernel picks."""
    for port in range(preferred, min(preferred + PORT_SCAN, 65536)):
        if port not in avoid and port_free(host, port):
            return port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Running:
    """Another ``dockyard up`` holds the data directory."""

    pid: int | None
    url: str | None


@contextlib.contextmanager
def hold_data_dir(data_dir: Path) -> Iterator[Callable[[str], None] | Running]:
    """Lock ``data_dir`` for one ``dockyard up``. Yields a function that records the
    URL once it serves (in ``up.json``, removed on exit), or :class:`Running` when
    another process holds the lock."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle: IO[str] = open(data_dir / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = config.running_up(data_dir) or {}
            pid, url = info.get("pid"), info.get("url")
            yield Running(pid if isinstance(pid, int) else None, str(url) if url else None)
            return
        up_file = data_dir / UP_FILE

        def record(url: str) -> None:
            tmp = up_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "url": url}) + "\n")
            tmp.replace(up_file)

        try:
            yield record
        finally:
            up_file.unlink(missing_ok=True)
    finally:
        handle.close()


def notify_ready_when(
    ready: Callable[[], bool],
    status: str,
    then: Callable[[], None] | None = None,
    timeout: float = 600.0,
    interval: float = 0.05,
) -> threading.Thread:
    """A daemon thread that polls ``ready`` (bounded by ``timeout``), then sends systemd
    ``READY=1`` with ``status`` and calls ``then``. Nothing is sent if never ready."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():
                    systemd.ready(status)
                    if then is not None:
                        then()
                    return
            except Exception:  # a half-built daemon: try again
                pass
            time.sleep(interval)

    thread = threading.Thread(target=watch, name="sd-notify", daemon=True)
    thread.start()
    return thread


def exit_cleanly_on_signals() -> None:
    """SIGTERM and SIGINT raise ``SystemExit(0)`` in the main thread, so the daemon's
    ``finally`` blocks (stop the control plane, release the lease) run.

    uvicorn catches both while it serves and, after its graceful shutdown, raises the
    signal again with the handler it found: Python's default for SIGTERM would end the
    process before the server's ``stop()``; for SIGINT click would print "Aborted!"
    and exit 1. systemd (``systemctl stop``) sends SIGTERM; exit 0 is clean for it."""

    def handler(signum: int, frame: object) -> None:
        systemd.stopping()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)

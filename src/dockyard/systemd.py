"""systemd's readiness protocol (``sd_notify``), for ``Type=notify`` units.

systemd passes ``$NOTIFY_SOCKET``, a Unix datagram socket (a path, or ``@name`` in the
abstract namespace); the service sends newline-separated ``KEY=VALUE`` lines to it:
``READY=1`` once it serves, ``STOPPING=1`` when it begins to stop, ``STATUS=...`` for
``systemctl status``. Without the variable (not run by systemd) every call is a no-op.
"""

from __future__ import annotations

import os
import socket

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def notify(*lines: str) -> bool:
    """Send ``lines`` (e.g. ``"READY=1"``) to ``$NOTIFY_SOCKET``; True if sent.

    Never raises: a service must not fail because its supervisor went away."""
    address = os.environ.get(NOTIFY_SOCKET, "")
    if not address or not lines:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False  # vsock and other address families are not supported
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
    except OSError:
        return False
    return True


def ready(status: str = "") -> bool:
    """``READY=1`` (with a ``STATUS=`` line when given)."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def stopping() -> bool:
    return notify("STOPPING=1")

"""Build small local images (no registry here): scratch + Debian's static busybox.

The builder lives in :mod:`dockyard.drivers.demo` (``dockyard up`` uses it too); this
module keeps the names the tests import."""

from __future__ import annotations

from dockyard.drivers.demo import (
    BUSYBOX_BINARY,
    BUSYBOX_IMAGE,
    DOCKERFILE,
    ensure_busybox_image,
)

__all__ = ["BUSYBOX_BINARY", "BUSYBOX_IMAGE", "DOCKERFILE", "ensure_busybox_image"]

if __name__ == "__main__":
    print(ensure_busybox_image())

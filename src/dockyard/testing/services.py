"""Service specs the tests share."""

from __future__ import annotations

from typing import Any


def service_body(name: str, **extra: Any) -> dict[str, Any]:
    """A ``POST /api/v1/services`` body: three busybox replicas on port 8080 with a fast
    HTTP health check; ``extra`` overrides or adds fields."""
    return {
        "name": name,
        "image": "busybox",
        "replicas": 3,
        "ports": [8080],
        "health": {"kind": "http", "path": "/", "interval_s": 0.2},
        **extra,
    }

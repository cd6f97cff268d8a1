"""Finding a node's GPUs: NVML (nvidia-ml-py) when present, else what was declared.

A node's GPUs are numbered by index (what the scheduler allocates, exclusively)
and, where known, named by UUID (``GPU-...``, or ``MIG-...`` for a MIG slice):
what the runtime is given, since UUIDs do not change when devices are renumbered.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from dockyard.core.gpus import GPU_UUID

log = logging.getLogger(__name__)


def detect_gpus() -> dict[int, str]:
    """NVML's GPUs, index -> UUID (``""`` where NVML gives none); ``{}`` without the
    library or a driver."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return {}
    nvml: Any = pynvml
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError: no driver, no device
        log.debug("NVML unavailable: %s", exc)
        return {}
    try:
        found: dict[int, str] = {}
        for index in range(int(nvml.nvmlDeviceGetCount())):
            try:
                uuid = nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(index))
            except Exception as exc:
                log.warning("NVML could not name GPU %d: %s", index, exc)
                uuid = ""
            text = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
            found[index] = text if GPU_UUID.match(text) else ""
        return found
    except Exception as exc:
        log.warning("NVML could not count GPUs: %s", exc)
        return {}
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def declared(count_or_list: str | int | None) -> list[int] | list[str] | None:
    """``--gpus 4`` (devices 0-3), ``--gpus 0,2`` (those indices) or ``--gpus
    GPU-aaa,GPU-bbb`` (those devices by UUID); None: detect. ValueError on a bad list."""
    if count_or_list is None or count_or_list == "":
        return None
    if isinstance(count_or_list, int):
        return list(range(count_or_list))
    text = str(count_or_list).strip()
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not all(x.isdigit() for x in items):
        inventory(items)  # raises on a malformed UUID or a mix
        return items
    if "," in text:
        return sorted({int(x) for x in items})
    return list(range(int(text)))


def inventory(gpus: Sequence[int | str]) -> dict[int, str]:
    """A declared GPU list as index -> UUID: indices stand for themselves (no UUID
    known), UUIDs are numbered in the order given. ValueError on a mix of both, a
    malformed UUID or a repeated one."""
    if all(isinstance(g, int) for g in gpus):
        return {int(g): "" for g in gpus}
    if not all(isinstance(g, str) for g in gpus):
        raise ValueError("GPUs: give indices or UUIDs, not both")
    uuids = [str(g) for g in gpus]
    for uuid in uuids:
        if not GPU_UUID.match(uuid):
            raise ValueError(f"GPUs: {uuid[:100]!r} is neither an index nor a GPU-/MIG- UUID")
    if len(set(uuids)) != len(uuids):
        raise ValueError("GPUs: a UUID is listed twice")
    return dict(enumerate(uuids))

"""Finding a node's GPUs: NVML (nvidia-ml-py) when present, else what was declared."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def detect_gpus() -> list[int]:
    """Indices of the NVIDIA GPUs NVML sees; ``[]`` without the library or a driver."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return []
    nvml: Any = pynvml
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError: no driver, no device
        log.debug("NVML unavailable: %s", exc)
        return []
    try:
        return list(range(int(nvml.nvmlDeviceGetCount())))
    except Exception as exc:
        log.warning("NVML could not count GPUs: %s", exc)
        return []
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def declared(count_or_list: str | int | None) -> list[int] | None:
    """``--gpus 4`` (devices 0-3) or ``--gpus 0,2`` (those indices); None: detect."""
    if count_or_list is None or count_or_list == "":
        return None
    if isinstance(count_or_list, int):
        return list(range(count_or_list))
    text = str(count_or_list).strip()
    if "," in text:
        return sorted({int(x) for x in text.split(",") if x.strip()})
    return list(range(int(text)))

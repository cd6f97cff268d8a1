"""CPU and memory quantities: parsing, formatting and arithmetic."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from dockyard.core.errors import ValidationError

_MEM_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "ki": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "ti": 1024**4,
    "tib": 1024**4,
}
_MEM_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_CPU_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m?)\s*$")

#: Smallest memory limit Docker accepts.
MIN_MEMORY = 6 * 1024**2
#: Largest quantities accepted (far above any node; keeps values inside a BIGINT).
MAX_MEMORY = 1024**5
MAX_CPU_MILLIS = 1_000_000


def parse_memory(value: str | int, field: str = "memory") -> int:
    """Parse ``64m``, ``1.5g``, ``512Mi`` or a byte count into bytes."""
    if isinstance(value, bool):
        raise ValidationError(field, "must be a size such as 64m or 1g")
    if isinstance(value, int):
        amount = value
    else:
        match = _MEM_RE.match(value)
        if not match or match.group(2).lower() not in _MEM_UNITS:
            raise ValidationError(field, f"cannot parse size {value!r} (use e.g. 64m, 1g)")
        number = float(match.group(1))
        if not math.isfinite(number) or number > MAX_MEMORY:
            raise ValidationError(field, "is larger than any node")
        amount = int(number * _MEM_UNITS[match.group(2).lower()])
    if amount > MAX_MEMORY:
        raise ValidationError(field, "is larger than any node")
    if amount < MIN_MEMORY:
        raise ValidationError(field, f"must be at least {MIN_MEMORY // 1024**2}m")
    return amount


def parse_cpu(value: str | float | int, field: str = "cpu") -> int:
    """Parse ``0.5``, ``2`` or ``500m`` into millicores."""
    if isinstance(value, bool):
        raise ValidationError(field, "must be a number of cores such as 0.5 or 500m")
    if isinstance(value, int) and abs(value) > MAX_CPU_MILLIS:  # float() would overflow
        number, unit = (math.inf if value > 0 else -math.inf), 1000
    elif isinstance(value, int | float):
        number, unit = float(value), 1000
    else:
        match = _CPU_RE.match(value)
        if not match:
            raise ValidationError(field, f"cannot parse CPU {value!r} (use e.g. 0.5 or 500m)")
        number, unit = float(match.group(1)), 1 if match.group(2) else 1000
    scaled = number * unit  # inf for 1e308 cores: compared, never rounded
    if math.isnan(scaled):
        raise ValidationError(field, "must be a number of cores such as 0.5 or 500m")
    if scaled > MAX_CPU_MILLIS:
        raise ValidationError(field, "is larger than any node")
    millis = round(scaled) if scaled > 0 else 0
    if millis <= 0:
        raise ValidationError(field, "must be greater than zero")
    if millis > MAX_CPU_MILLIS:
        raise ValidationError(field, "is larger than any node")
    return millis


def format_memory(amount: int) -> str:
    """Format bytes compactly: ``64Mi``, ``1.5Gi``."""
    for unit, size in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if amount >= size:
            value = amount / size
            return f"{value:.1f}{unit}".replace(".0" + unit, unit)
    return f"{amount}B"


def format_cpu(millis: int) -> str:
    """Format millicores as cores: ``0.5``, ``2``."""
    cores = millis / 1000
    return f"{cores:g}"


@dataclass(frozen=True, slots=True)
class Resources:
    """A CPU (millicores) and memory (bytes) quantity."""

    cpu_millis: int = 0
    memory_bytes: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis + other.cpu_millis, self.memory_bytes + other.memory_bytes)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis - other.cpu_millis, self.memory_bytes - other.memory_bytes)

    def fits_in(self, other: Resources) -> bool:
        """True when every dimension of ``self`` is at most that of ``other``."""
        return self.cpu_millis <= other.cpu_millis and self.memory_bytes <= other.memory_bytes

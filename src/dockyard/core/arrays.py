"""Job arrays: Slurm's ``--array`` index expressions. Pure.

An expression is a comma-separated list of items, each ``N``, ``N-M`` or
``N-M:S`` (every S-th index from N up to M), optionally followed by ``%T``: at
most T elements run at once. Examples: ``1-100000%50``, ``1-9:2``, ``1,3,5``,
``0-15:4,20``. Indices are whole numbers from 0 to :data:`MAX_INDEX`; items must
come in increasing order and not overlap, so every index appears once.

An array is stored as its normalised expression (never one row per element):
:meth:`ArraySpec.index_at` maps a position (0 .. ``count - 1``) to its index in
O(number of items), so elements can be turned into tasks lazily, in order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from dockyard.core.errors import ValidationError

MAX_INDEX = 4_000_000_000 // 2
MAX_ELEMENTS = 1_000_000
MAX_ITEMS = 1000
MAX_THROTTLE = 1_000_000
_ITEM_RE = re.compile(r"(\d{1,10})(?:-(\d{1,10})(?::(\d{1,10}))?)?", re.ASCII)


@dataclass(frozen=True, slots=True)
class IndexRange:
    """``start``, ``start + step``, ... up to ``stop`` (inclusive; ``stop`` is on the step)."""

    start: int
    stop: int
    step: int = 1

    @property
    def count(self) -> int:
        return (self.stop - self.start) // self.step + 1

    def text(self) -> str:
        if self.start == self.stop:
            return str(self.start)
        return f"{self.start}-{self.stop}" + (f":{self.step}" if self.step != 1 else "")


@dataclass(frozen=True, slots=True)
class ArraySpec:
    ranges: tuple[IndexRange, ...]
    #: At most this many elements live (pending or running) at once; None: no limit.
    throttle: int | None = None

    @property
    def count(self) -> int:
        return sum(r.count for r in self.ranges)

    @property
    def indices_text(self) -> str:
        """The normalised expression without the throttle (``1-9:2,20``)."""
        return ",".join(r.text() for r in self.ranges)

    def text(self) -> str:
        return self.indices_text + (f"%{self.throttle}" if self.throttle is not None else "")

    def index_at(self, position: int) -> int:
        """The index of the element at ``position`` (0-based, in expression order)."""
        if position < 0:
            raise IndexError(position)
        for r in self.ranges:
            if position < r.count:
                return r.start + position * r.step
            position -= r.count
        raise IndexError(position)

    def indices(self, start: int, count: int) -> Iterator[int]:
        """The indices of positions ``start`` .. ``start + count - 1`` (those that exist)."""
        position = 0
        for r in self.ranges:
            n = r.count
            if start < position + n and count > 0:
                first = max(start - position, 0)
                last = min(n, first + count)
                for k in range(first, last):
                    yield r.start + k * r.step
                count -= last - first
                start = position + last
            position += n
            if count <= 0:
                return


def parse_array(text: str, field: str = "array") -> ArraySpec:
    """Parse an index expression; :class:`ValidationError` naming ``field`` if bad."""
    if not isinstance(text, str) or not text.strip():
        raise ValidationError(field, "must be an index expression such as 1-100%10")
    body, percent, limit = text.strip().partition("%")
    throttle = None
    if percent:
        if not limit.isdigit() or len(limit) > 7 or not 1 <= int(limit) <= MAX_THROTTLE:
            raise ValidationError(field, f"the throttle after % must be 1 to {MAX_THROTTLE}")
        throttle = int(limit)
    items = body.split(",")
    if len(items) > MAX_ITEMS:
        raise ValidationError(field, f"has more than {MAX_ITEMS} items")
    ranges: list[IndexRange] = []
    total = 0
    for item in items:
        match = _ITEM_RE.fullmatch(item.strip())
        if match is None:
            raise ValidationError(field, f"{item.strip() or '(empty)'!r} is not N, N-M or N-M:S")
        start = int(match.group(1))
        stop = int(match.group(2)) if match.group(2) is not None else start
        step = int(match.group(3)) if match.group(3) is not None else 1
        if stop > MAX_INDEX or start > MAX_INDEX:
            raise ValidationError(field, f"indices must be at most {MAX_INDEX}")
        if stop < start:
            raise ValidationError(field, f"{item.strip()!r}: the end is below the start")
        if step < 1:
            raise ValidationError(field, f"{item.strip()!r}: the step must be at least 1")
        stop = start + (stop - start) // step * step  # the last index on the step
        if ranges and start <= ranges[-1].stop:
            raise ValidationError(field, "items must be in increasing order and not overlap")
        r = IndexRange(start, stop, step if stop > start else 1)
        total += r.count
        if total > MAX_ELEMENTS:
            raise ValidationError(field, f"has more than {MAX_ELEMENTS} elements")
        ranges.append(r)
    return ArraySpec(tuple(ranges), throttle)

"""Fair share: per-user usage decayed with a half-life, and the classic Slurm factor.

Usage is billed while a task holds resources (from placement to its end), in
billing units per second::

    rate = w_cpu * cores + w_mem * GiB + w_gpu * gpus

and decays exponentially with the half-life ``h``: a unit billed ``a`` seconds
ago counts ``2^(-a/h)``. A task that held resources from ``t0`` to ``t1``
therefore contributes exactly::

    rate * h / ln 2 * (2^(-(now - t1)/h) - 2^(-(now - t0)/h))

A user's fair-share factor (Slurm's classic formula) is::

    F = 2^(-(U / U_total) / (S / S_total))

with ``U`` their decayed usage and ``S`` the share an admin gave them (default
1). ``F`` is 1 for a user who used nothing, 0.5 for one who used exactly their
share, and falls towards 0 as they use more. Pure: ``now`` is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DEFAULT_HALF_LIFE_S = 86400.0
DEFAULT_SHARE = 1.0


@dataclass(frozen=True, slots=True)
class Weights:
    """Billing weights: per core, per GiB of memory and per GPU (Slurm's TRES billing)."""

    cpu: float = 1.0
    memory_gib: float = 0.25
    gpu: float = 2.0

    def rate(self, cpu_millis: int, memory_bytes: int, gpus: int) -> float:
        return (
            self.cpu * cpu_millis / 1000
            + self.memory_gib * memory_bytes / 1024**3
            + self.gpu * gpus
        )


@dataclass(frozen=True, slots=True)
class FairShareConfig:
    half_life_s: float = DEFAULT_HALF_LIFE_S
    weights: Weights = Weights()
    #: Run time assumed for a queued task without a declared max runtime, when
    #: the queue charges it in advance to interleave users (see queue.order).
    default_runtime_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class UsageSpan:
    """One task's hold on resources: from ``start`` to ``end`` (``now`` while it runs)."""

    owner_id: str
    start: float
    end: float
    cpu_millis: int
    memory_bytes: int
    gpus: int = 0


def decayed(rate: float, start: float, end: float, now: float, half_life_s: float) -> float:
    """The decayed integral of a constant ``rate`` billed from ``start`` to ``end``."""
    end = min(end, now)
    if end <= start or rate <= 0:
        return 0.0
    k = math.log(2) / half_life_s
    return rate / k * math.exp(-k * (now - end)) * -math.expm1(-k * (end - start))


def usage_by_owner(
    spans: Iterable[UsageSpan], now: float, config: FairShareConfig | None = None
) -> dict[str, float]:
    config = config or FairShareConfig()
    out: dict[str, float] = {}
    for span in spans:
        rate = config.weights.rate(span.cpu_millis, span.memory_bytes, span.gpus)
        value = decayed(rate, span.start, span.end, now, config.half_life_s)
        out[span.owner_id] = out.get(span.owner_id, 0.0) + value
    return out


class DecayedTotals:
    """Decayed usage per owner of spans that have ended, kept as of one instant and
    carried forward by decay alone: a finished span's share only shrinks, by
    ``2^(-dt/h)``, so a scheduler can add each record once instead of summing every
    record again at every pass. Equal to :func:`usage_by_owner` over the same spans
    (tests/unit/test_fairshare.py)."""

    def __init__(self, config: FairShareConfig, as_of: float) -> None:
        self.config = config
        self.as_of = as_of
        self.totals: dict[str, float] = {}

    def advance(self, now: float) -> None:
        """Decay every total to ``now`` (never backwards)."""
        if now <= self.as_of:
            return
        kept = 2.0 ** (-(now - self.as_of) / self.config.half_life_s)
        self.totals = {owner: value * kept for owner, value in self.totals.items()}
        self.as_of = now

    def add(self, span: UsageSpan) -> None:
        """A span that ended by ``as_of`` (one ending later counts up to ``as_of``)."""
        rate = self.config.weights.rate(span.cpu_millis, span.memory_bytes, span.gpus)
        value = decayed(rate, span.start, span.end, self.as_of, self.config.half_life_s)
        if value > 0:
            self.totals[span.owner_id] = self.totals.get(span.owner_id, 0.0) + value


def factor(usage: float, share: float, total_usage: float, total_shares: float) -> float:
    """``2^(-(U/U_total)/(S/S_total))``; 1 when nobody used anything, 0 without a share."""
    if total_usage <= 0 or usage <= 0:
        return 1.0
    if share <= 0 or total_shares <= 0:
        return 0.0
    return float(2.0 ** (-(usage / total_usage) / (share / total_shares)))


def factors(usage: Mapping[str, float], shares: Mapping[str, float]) -> dict[str, float]:
    """The factor of every user in ``shares`` (and any user with usage, share 1)."""
    owners = set(shares) | set(usage)
    share = {o: shares.get(o, DEFAULT_SHARE) for o in owners}
    total_u = sum(max(u, 0.0) for u in usage.values())
    total_s = sum(share.values())
    return {o: factor(usage.get(o, 0.0), share[o], total_u, total_s) for o in owners}

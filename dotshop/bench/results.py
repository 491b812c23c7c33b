"""What one arm of the benchmark measured."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ArmResult:
    """One load shape against one target: throughput, latency percentiles and what went wrong.

    `errors` counts socket errors, timeouts and every status the arm did not expect; `statuses`
    keeps every status code seen (as text, JSON's keys)."""

    arm: str  # limit, floor, checkout, read, open, oversell, e2e
    target: str  # hot, spread, product, list, ...
    clients: int
    duration_s: float
    requests: int
    errors: int
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    round: int = 0  # the floor/checkout pairs run in rounds (see dotshop.bench.runner)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rps": round(self.rps, 1)}


def percentile_ms(samples_s: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of durations in seconds, in milliseconds."""
    if not samples_s:
        return None
    ordered = sorted(samples_s)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return round(ordered[rank] * 1000, 2)

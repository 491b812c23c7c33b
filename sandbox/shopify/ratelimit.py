"""Shopify's REST leaky bucket: each call adds one unit, the bucket leaks at a fixed rate, and a
call that would overflow it is refused with 429.

The clock is injectable so a test can prove the leak rate by advancing time instead of sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# Shopify's standard-plan REST limits.
BUCKET_SIZE = 40
LEAK_PER_SECOND = 2.0
# Shopify sends Retry-After: 2.0 on REST 429s: one unit leaks in 0.5 s, but it asks for 2.
RETRY_AFTER = "2.0"


class OffsetClock:
    """time.monotonic() plus an offset that the control API can advance (tests, drills)."""

    def __init__(self, base: Callable[[], float] = time.monotonic) -> None:
        self._base = base
        self._offset = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._base() + self._offset

    @property
    def offset(self) -> float:
        """Seconds advanced so far (the shop's wall clock moves with it)."""
        return self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds


@dataclass
class Verdict:
    allowed: bool
    used: int  # what X-Shopify-Shop-Api-Call-Limit reports: used/size

    @property
    def header(self) -> str:
        return f"{self.used}/{BUCKET_SIZE}"


class LeakyBucket:
    """One bucket per key (the access token)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        size: int = BUCKET_SIZE,
        leak_per_second: float = LEAK_PER_SECOND,
    ) -> None:
        self.clock = clock
        self.size = size
        self.leak_per_second = leak_per_second
        self._levels: dict[str, tuple[float, float]] = {}  # key -> (level, at)
        self._lock = threading.Lock()

    def _level(self, key: str, now: float) -> float:
        level, at = self._levels.get(key, (0.0, now))
        return max(0.0, level - (now - at) * self.leak_per_second)

    def take(self, key: str) -> Verdict:
        with self._lock:
            now = self.clock()
            level = self._level(key, now)
            if level + 1 > self.size:
                self._levels[key] = (level, now)
                return Verdict(False, self.size)
            level += 1
            self._levels[key] = (level, now)
            return Verdict(True, math.ceil(level - 1e-9))

    def used(self, key: str) -> float:
        with self._lock:
            return self._level(key, self.clock())

    def reset(self) -> None:
        with self._lock:
            self._levels.clear()

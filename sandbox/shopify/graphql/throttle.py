"""The GraphQL Admin API's leaky bucket of cost points, per access token (shopify.dev "GraphQL
Admin API rate limits"): a request is refused (THROTTLED) when its requested cost exceeds what
is available; otherwise the requested cost is taken up front and the difference to the actual
cost is given back after execution. Points restore continuously at the plan's rate."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# Standard plan: 100 points restored per second; the bucket holds 20 seconds' worth.
MAXIMUM_AVAILABLE = 2000.0
RESTORE_RATE = 100.0


@dataclass(frozen=True)
class ThrottleStatus:
    maximum_available: float
    currently_available: float
    restore_rate: float

    def as_json(self) -> dict[str, float]:
        return {
            "maximumAvailable": self.maximum_available,
            "currentlyAvailable": int(self.currently_available),
            "restoreRate": self.restore_rate,
        }


class CostBucket:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        maximum: float = MAXIMUM_AVAILABLE,
        restore_rate: float = RESTORE_RATE,
    ) -> None:
        self.clock = clock
        self.maximum = maximum
        self.restore_rate = restore_rate
        self._levels: dict[str, tuple[float, float]] = {}  # key -> (available, at)
        self._lock = threading.Lock()

    def _available(self, key: str, now: float) -> float:
        available, at = self._levels.get(key, (self.maximum, now))
        return min(self.maximum, available + (now - at) * self.restore_rate)

    def take(self, key: str, cost: int) -> bool:
        """Take `cost` points if that many are available (a THROTTLED request takes none)."""
        with self._lock:
            now = self.clock()
            available = self._available(key, now)
            if cost > available:
                self._levels[key] = (available, now)
                return False
            self._levels[key] = (available - cost, now)
            return True

    def give_back(self, key: str, points: int) -> None:
        with self._lock:
            now = self.clock()
            self._levels[key] = (min(self.maximum, self._available(key, now) + points), now)

    def status(self, key: str) -> ThrottleStatus:
        with self._lock:
            available = self._available(key, self.clock())
        return ThrottleStatus(self.maximum, available, self.restore_rate)

    def reset(self) -> None:
        with self._lock:
            self._levels.clear()

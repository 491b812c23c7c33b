"""Deterministic fault injection shared by both stand-ins.

Everything random goes through one `random.Random(seed)`, so a failing test can be replayed by
its seed. Request faults are applied by `FaultMiddleware` (pure ASGI, wraps either app);
webhook faults are applied by `sandbox.webhooks.WebhookDispatcher`.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

CONTROL_PREFIX = "/_sandbox"


@dataclass
class FaultConfig:
    # Requests (API paths only; the /_sandbox control API is never faulted).
    error_rate: float = 0.0  # share of requests answered with error_status
    error_status: int = 500  # 500, 503 or 429
    error_phase: str = "before"  # "before": not processed; "after": processed, response lost
    latency_ms: int = 0  # added to every request
    timeout_rate: float = 0.0  # share of requests that hang for timeout_seconds, then fail
    timeout_seconds: float = 5.0
    path_prefix: str = ""  # only requests whose path starts with this are faulted
    method: str = ""  # only requests with this HTTP method are faulted ("" = any)
    # Webhooks.
    webhook_duplicate_rate: float = 0.0  # share of events delivered twice
    webhook_drop_rate: float = 0.0  # share of events never delivered (first attempt only)
    webhook_reorder: bool = False  # deliver queued events in shuffled order
    webhook_delay_ms: int = 0  # wait before each delivery
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for name in (
            "error_rate",
            "timeout_rate",
            "webhook_duplicate_rate",
            "webhook_drop_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.error_status not in (429, 500, 502, 503, 504):
            raise ValueError("error_status must be one of 429, 500, 502, 503, 504")
        if self.error_phase not in ("before", "after"):
            raise ValueError("error_phase must be 'before' or 'after'")
        if self.latency_ms < 0 or self.webhook_delay_ms < 0 or self.timeout_seconds < 0:
            raise ValueError("latencies must be >= 0")


class Faults:
    """The current fault configuration and the seeded random source behind it."""

    def __init__(self, seed: int = 0, initial: Mapping[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self.seed = seed
        self._rng = random.Random(seed)
        self.config = FaultConfig()
        if initial:
            self.configure(**initial)

    def configure(self, **changes: Any) -> FaultConfig:
        known = {f.name for f in fields(FaultConfig)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        candidate = FaultConfig(**{**asdict(self.config), **changes})
        candidate.validate()
        with self._lock:
            self.config = candidate
        return candidate

    def reset(self, seed: int | None = None) -> None:
        with self._lock:
            self.seed = self.seed if seed is None else seed
            self._rng = random.Random(self.seed)
            self.config = FaultConfig()

    def roll(self, rate: float) -> bool:
        """True with probability `rate`, from the seeded source."""
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def shuffle(self, items: list[Any]) -> None:
        with self._lock:
            self._rng.shuffle(items)

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, **asdict(self.config)}


def _error_body(status: int) -> bytes:
    # Shaped like Stripe's error object; Shopify clients only look at the status.
    kind = "rate_limit_error" if status == 429 else "api_error"
    return json.dumps(
        {"error": {"type": kind, "message": f"Injected fault: HTTP {status} (sandbox)"}}
    ).encode()


class FaultMiddleware:
    """ASGI middleware: latency, timeouts and errors for API requests, by the current config."""

    def __init__(self, app: Any, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        cfg = self.faults.config
        if (
            scope["type"] != "http"
            or path.startswith(CONTROL_PREFIX)
            or not path.startswith(cfg.path_prefix)
            or cfg.method not in ("", scope.get("method"))
        ):
            await self.app(scope, receive, send)
            return
        if cfg.latency_ms:
            await asyncio.sleep(cfg.latency_ms / 1000)
        if self.faults.roll(cfg.timeout_rate):
            await asyncio.sleep(cfg.timeout_seconds)
            await self._send_error(send, 504)
            return
        if not self.faults.roll(cfg.error_rate):
            await self.app(scope, receive, send)
            return
        if cfg.error_phase == "after":
            # Let the request take effect, then lose its response like a dropped connection.
            async def swallow(message: dict) -> None:
                return None

            await self.app(scope, receive, swallow)
        await self._send_error(send, cfg.error_status)

    @staticmethod
    async def _send_error(send: Any, status: int) -> None:
        body = _error_body(status)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if status == 429:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

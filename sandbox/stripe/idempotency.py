"""Idempotency-Key like Stripe: per API key, for POST requests, kept 24 hours. Same key and same
request -> the stored response; same key, different request -> 400; still running -> 409."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from sandbox.stripe.errors import ApiError
from sandbox.stripe.state import Clock

# Stripe prunes keys after at least 24 hours.
KEY_TTL_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255


@dataclass
class StoredResponse:
    endpoint: str
    fingerprint: str
    created: int
    status: int = 0
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    done: bool = False


def fingerprint(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


class IdempotencyCache:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], StoredResponse] = {}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def begin(
        self, api_key: str, key: str, endpoint: str, params: dict[str, Any]
    ) -> StoredResponse | None:
        """Claim `key`; return the stored response to replay, or None when the caller runs."""
        if len(key) > MAX_KEY_LENGTH:
            raise ApiError.invalid(
                f"Idempotency-Key is too long (max {MAX_KEY_LENGTH} characters).",
                param="Idempotency-Key",
            )
        print_ = fingerprint(params)
        now = self.clock.now()
        with self._lock:
            entry = self._entries.get((api_key, key))
            if entry is not None and now - entry.created >= KEY_TTL_SECONDS:
                entry = None
            if entry is None:
                self._entries[(api_key, key)] = StoredResponse(endpoint, print_, now)
                return None
        if not entry.done:
            raise ApiError(
                409,
                "idempotency_error",
                "There is currently another in-progress request using this Stripe API key and "
                "idempotency key. Please try again later.",
                code="idempotency_key_in_use",
                stored=False,
            )
        if entry.endpoint != endpoint:
            raise ApiError(
                400,
                "idempotency_error",
                "Keys for idempotent requests can only be used for the same endpoint they were "
                f"first used for ('{entry.endpoint}' vs '{endpoint}').",
                stored=False,
            )
        if entry.fingerprint != print_:
            raise ApiError(
                400,
                "idempotency_error",
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                "execute a different request.",
                stored=False,
            )
        return entry

    def finish(
        self, api_key: str, key: str, status: int, body: bytes, headers: dict[str, str]
    ) -> None:
        with self._lock:
            entry = self._entries[(api_key, key)]
            entry.status, entry.body, entry.headers, entry.done = status, body, headers, True

    def abandon(self, api_key: str, key: str) -> None:
        """Forget a claim whose request never executed (validation failed), like Stripe."""
        with self._lock:
            self._entries.pop((api_key, key), None)

"""Idempotent requests, HTTP-shaped: begin with the client's Idempotency-Key, run the steps as
atomic phases, and answer with the stored response (a replay says so). Shared by checkout,
cancel and admin refunds; the status codes come from the errors themselves."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core import idempotency
from core.errors import Conflict, DotshopError, NotFound
from core.idempotency import KeyRecord, Response, Step, StoredResponse
from core.settings import Settings
from core.stripe_gateway import STRIPE_NETWORK_RETRIES


@dataclass(frozen=True)
class Outcome:
    """What the HTTP layer sends: the stored response, and whether it is a replay."""

    status: int
    body: bytes
    replayed: bool


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def error_response(error: DotshopError) -> Response:
    return Response(error.http_status, encode({"error": error.to_dict()}))


# Time for the phases themselves and the SDK's backoff between its retries.
LOCK_MARGIN_SECONDS = 10


def lock_timeout(settings: Settings) -> timedelta:
    """The longest a live request can hold its key: every Stripe attempt timing out, plus a
    margin. An older lock belongs to a process that died, and a retry may take the key over."""
    attempts = STRIPE_NETWORK_RETRIES + 1
    return timedelta(seconds=settings.stripe_timeout * attempts + LOCK_MARGIN_SECONDS)


def begin(
    engine: Engine, settings: Settings, scope: str, key: str, path: str, body: bytes
) -> KeyRecord | Outcome:
    """The key locked for this request, or the stored answer of an earlier one (a replay)."""
    begun = idempotency.begin(
        engine,
        scope=scope,
        key=key,
        method="POST",
        path=path,
        fingerprint=idempotency.fingerprint("POST", path, body),
        lock_timeout=lock_timeout(settings),
    )
    if isinstance(begun, StoredResponse):
        return Outcome(begun.status, begun.body, replayed=True)
    return begun


def run(engine: Engine, key: KeyRecord, steps: Mapping[str, Step]) -> Outcome:
    """Run the steps from the key's recovery point; the final response, freshly made."""
    stored = idempotency.run(engine, key, steps)
    return Outcome(stored.status, stored.body, replayed=False)


def final_errors(
    step: Callable[[Session, KeyRecord], Response],
) -> Callable[[Session, KeyRecord], Response]:
    """Business errors a step raises (no such order) are final answers: store them."""

    def guarded(session: Session, key: KeyRecord) -> Response:
        try:
            with session.begin_nested():
                return step(session, key)
        except (NotFound, Conflict) as exc:
            return error_response(exc)

    return guarded

"""HTTP side of idempotent writes: the Idempotency-Key header and replaying stored responses."""

from __future__ import annotations

from litestar import MediaType, Response

from core.checkout import Outcome
from core.errors import IdempotencyKeyMissing
from core.idempotency import validate_key

IDEMPOTENCY_KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


def require_key(value: str | None) -> str:
    """The header's value, or a typed 400 (missing, or not 1-255 printable ASCII)."""
    if value is None or value == "":
        raise IdempotencyKeyMissing()
    return validate_key(value)


def to_response(outcome: Outcome) -> Response[bytes]:
    """The stored response byte for byte; a replay says so in `Idempotent-Replayed`."""
    headers = {REPLAYED: "true"} if outcome.replayed else {}
    return Response(
        outcome.body, status_code=outcome.status, headers=headers, media_type=MediaType.JSON
    )

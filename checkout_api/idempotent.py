"""HTTP side of idempotent writes: the Idempotency-Key header and replaying stored responses."""

from __future__ import annotations

import msgspec
import structlog
from litestar import MediaType, Request, Response
from litestar.enums import ParamType
from litestar.handlers import HTTPRouteHandler
from litestar.params import ParameterKwarg

from core.errors import IdempotencyKeyMissing
from core.idempotency import Answer, validate_key

IDEMPOTENCY_KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


def require_key(value: str | None) -> str:
    """The header's value, or a typed 400 (missing, or not 16-255 printable ASCII). The key
    joins the request's log context."""
    if value is None or value == "":
        raise IdempotencyKeyMissing()
    key = validate_key(value)
    structlog.contextvars.bind_contextvars(idempotency_key=key)
    return key


def declares_key(handler: HTTPRouteHandler) -> bool:
    """Whether a route takes an Idempotency-Key header (every idempotent POST declares it)."""
    return any(
        isinstance(kwarg := param.kwarg_definition, ParameterKwarg)
        and kwarg.param_type is ParamType.HEADER
        and kwarg.name == IDEMPOTENCY_KEY
        for param in handler.parsed_fn_signature.parameters.values()
    )


async def key_before_body(request: Request) -> None:
    """App-wide `before_request` hook: it runs after the guards (auth) and before Litestar reads
    and validates the body, so a request without a usable key is a 400 whatever its body."""
    if declares_key(request.route_handler):
        require_key(request.headers.get(IDEMPOTENCY_KEY))


class _ErrorCode(msgspec.Struct):
    code: str


class AnswerSummary(msgspec.Struct):
    """The two things the HTTP side wants to know of a stored answer (its order for the log
    line, its error code for metrics); decoding only these skips the rest of the body."""

    order_id: str | None = None
    error: _ErrorCode | None = None


_summary = msgspec.json.Decoder(AnswerSummary)


def summarize(outcome: Answer) -> AnswerSummary:
    try:
        return _summary.decode(outcome.body)
    except msgspec.DecodeError:  # an answer of another shape: nothing to tell
        return AnswerSummary()


def to_response(outcome: Answer, summary: AnswerSummary | None = None) -> Response[bytes]:
    """The stored response byte for byte; a replay says so in `Idempotent-Replayed`. Its order
    joins the request's log context."""
    headers = {REPLAYED: "true"} if outcome.replayed else {}
    order_id = (summary or summarize(outcome)).order_id
    if order_id:
        structlog.contextvars.bind_contextvars(order_id=order_id)
    return Response(
        outcome.body, status_code=outcome.status, headers=headers, media_type=MediaType.JSON
    )

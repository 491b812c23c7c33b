"""Where core errors become HTTP responses: the one place that decides status codes."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from litestar import MediaType, Request, Response
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotFoundException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from core import errors as e
from core.logs import get_logger

log = get_logger("checkout_api.errors")

# Seconds a client should wait before retrying after a provider outage.
PROVIDER_RETRY_AFTER_SECONDS = 5
# Seconds a client should wait while the database is unreachable: a restart or a failover
# (promote the replica) takes a few seconds; the pool reconnects on its own after that.
DATABASE_RETRY_AFTER_SECONDS = 5

# SQLSTATEs that mean "this connection or server is gone" rather than "this statement failed":
# class 08 (connection exception), the shutdown / not-yet-accepting states of class 57, and
# too_many_connections (the server is up but takes no one else).
_UNREACHABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
# user:password@ in a URL, in case a driver message ever quotes one.
_CREDENTIALS = re.compile(r"//[^/@\s]*@")


def database_unreachable(exc: BaseException) -> bool:
    """Whether an error means the database cannot be reached (down, restarting, pool starved),
    as opposed to a statement that failed on a live database."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if not isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    # A failed connection attempt carries no SQLSTATE; a lost one a class 08/57 state.
    return orig.sqlstate is None or orig.sqlstate.startswith(_UNREACHABLE_SQLSTATES)


def unreachable_reason(exc: BaseException) -> str:
    """A one-line reason for /readyz: the driver's first line, with no credentials in it."""
    orig = getattr(exc, "orig", None) or exc
    first_line = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return _CREDENTIALS.sub("//", first_line)[:200]


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **details}}


def dotshop_error_handler(_: Request, exc: e.DotshopError) -> Response:
    status = exc.http_status
    headers = {}
    if isinstance(exc, e.ProviderUnavailable):
        headers["Retry-After"] = str(PROVIDER_RETRY_AFTER_SECONDS)
    if isinstance(exc, e.IdempotencyKeyInUse):
        headers["Retry-After"] = "1"
    if isinstance(exc, e.Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return Response(
        {"error": exc.to_dict()}, status_code=status, headers=headers, media_type=MediaType.JSON
    )


def validation_error_handler(_: Request, exc: ValidationException) -> Response:
    details = exc.extra if isinstance(exc.extra, list) else []
    return Response(
        error_body("invalid_request", "The request is not valid.", errors=details),
        status_code=422,
        media_type=MediaType.JSON,
    )


def http_error_handler(_: Request, exc: HTTPException) -> Response:
    code, message = "http_error", str(exc.detail)
    if isinstance(exc, NotFoundException):
        code = "not_found"
    elif type(exc) is ClientException and exc.status_code == 400:
        # Litestar raises a bare ClientException when the body does not decode.
        code, message = "invalid_json", f"The request body is not valid JSON: {exc.detail}"
    elif exc.status_code == 413:
        code = "request_too_large"
    elif exc.status_code == 405:
        code = "method_not_allowed"
    return Response(
        error_body(code, message),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type=MediaType.JSON,
    )


def database_error_handler(request: Request, exc: SQLAlchemyError) -> Response:
    if not database_unreachable(exc):
        return unexpected_error_handler(request, exc)
    log.warning("database_unreachable", reason=unreachable_reason(exc))
    return Response(
        {"error": e.DatabaseUnavailable().to_dict()},
        status_code=e.DatabaseUnavailable.http_status,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        media_type=MediaType.JSON,
    )


def unexpected_error_handler(_: Request, exc: Exception) -> Response:
    log.exception("unhandled_error", error_type=type(exc).__name__)
    return Response(
        error_body("internal_error", "Something went wrong on our side."),
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
        media_type=MediaType.JSON,
    )


EXCEPTION_HANDLERS = {
    e.DotshopError: dotshop_error_handler,
    ValidationException: validation_error_handler,
    HTTPException: http_error_handler,
    SQLAlchemyError: database_error_handler,
    Exception: unexpected_error_handler,
}

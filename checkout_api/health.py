"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from contextlib import suppress

from litestar import Response, get
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from checkout_api.deps import Ctx
from checkout_api.errors import database_unreachable, unreachable_reason
from core import migrate
from core.errors import DatabaseNotMigrated
from core.metrics import render
from core.observe import refresh_business_gauges


@get("/healthz", sync_to_thread=False, include_in_schema=False)
def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@get("/readyz", sync_to_thread=True, include_in_schema=False)
def readyz(ctx: Ctx) -> Response:
    """The database answers and its schema is the one this code expects."""
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        migrate.require_current(ctx.engine)
    except DatabaseNotMigrated as exc:
        return Response({"status": "not_ready", "reason": exc.message}, status_code=503)
    except SQLAlchemyError as exc:
        reason = (
            f"database unreachable: {unreachable_reason(exc)}"
            if database_unreachable(exc)
            else f"database error: {type(exc).__name__}"
        )
        return Response({"status": "not_ready", "reason": reason}, status_code=503)
    return Response({"status": "ready", "region": ctx.settings.region})


@get("/metrics", sync_to_thread=True, include_in_schema=False)
def metrics(ctx: Ctx) -> Response:
    # On a database error the RED metrics still render; /readyz reports the database.
    with suppress(SQLAlchemyError):
        refresh_business_gauges(ctx.engine)
    return Response(render(), media_type=CONTENT_TYPE_LATEST)

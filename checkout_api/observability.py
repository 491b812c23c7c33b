"""Outermost ASGI layer: request id, request-scoped log context, RED metrics per route."""

from __future__ import annotations

import time
from typing import Any

import structlog

from core.ids import new_id
from core.logs import get_logger
from core.metrics import CHECKOUTS, HTTP_DURATION, HTTP_ERRORS, HTTP_REQUESTS

SERVICE = "checkout_api"
REQUEST_ID_HEADER = b"x-request-id"
log = get_logger("checkout_api.http")
# Every POST of the checkout route counts once in dotshop_checkouts_total: with the outcome its
# handler read from the stored answer (left in the request state under CHECKOUT_OUTCOME), or,
# refused before it had one (a bad key or body, a key in use, a crash), by the status class.
CHECKOUT_ROUTE = "/v1/checkouts"
CHECKOUT_OUTCOME = "checkout_outcome"


def refused_outcome(status: int) -> str:
    if status >= 500:
        return "error"
    return "conflict" if status == 409 else "invalid"


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class Observability:
    """Wraps the Litestar app so every request, matched or not, is counted and timed."""

    def __init__(self, app: Any) -> None:
        self.app = app
        # One API process serves one region (a bounded label: Settings only accepts known
        # regions): read it once here, not on every request.
        self.region: str = app.state.ctx.settings.region

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, REQUEST_ID_HEADER)
        request_id = incoming if incoming and len(incoming) <= 64 else new_id("req")
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (REQUEST_ID_HEADER, request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            method = scope["method"]
            HTTP_REQUESTS.labels(SERVICE, self.region, route, method, str(status)).inc()
            HTTP_DURATION.labels(SERVICE, self.region, route, method).observe(elapsed)
            if status >= 500:
                HTTP_ERRORS.labels(SERVICE, self.region, route, method).inc()
            if route == CHECKOUT_ROUTE and method == "POST":
                outcome = scope.get("state", {}).get(CHECKOUT_OUTCOME) or refused_outcome(status)
                CHECKOUTS.labels(self.region, outcome).inc()
            if route not in ("/metrics", "/healthz", "/readyz"):
                log.info(
                    "http_request",
                    method=method,
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            structlog.contextvars.clear_contextvars()

"""Assemble the Litestar app: controllers, dependencies, error mapping, OpenAPI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.to_thread
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from sqlalchemy import Engine

from checkout_api import health, webhooks
from checkout_api.admin import AdminController
from checkout_api.checkouts import CheckoutController, OrderController
from checkout_api.deps import AppContext
from checkout_api.errors import EXCEPTION_HANDLERS
from checkout_api.guard import MAX_BODY_BYTES, InputGuard
from checkout_api.idempotent import key_before_body
from checkout_api.observability import Observability
from checkout_api.openapi import document_cross_cutting_answers
from checkout_api.products import ProductController
from core.settings import Settings
from core.stripe_gateway import StripeGateway


def _ctx(state: State) -> AppContext:
    return state.ctx


def _thread_limit(threads: int) -> Callable[[], None]:
    def limit() -> None:  # on startup: anyio's limiter belongs to the running event loop
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads

    return limit


def create_app(
    settings: Settings,
    engine: Engine,
    gateway: StripeGateway,
    *,
    route_handlers: list[Any] | None = None,
) -> Any:
    """The ASGI app for one region: Litestar behind the input guard, wrapped in
    request-id/metrics observability (so refused requests are counted and logged too)."""
    handlers: list[Any] = [
        ProductController,
        CheckoutController,
        OrderController,
        AdminController,
        webhooks.stripe_webhook,
        webhooks.shopify_webhook,
        health.healthz,
        health.readyz,
        health.metrics,
        *(route_handlers or []),
    ]
    if settings.bench_floor:  # `dotshop bench` only
        from checkout_api.floor import floor_checkout

        handlers.append(floor_checkout)
    app = Litestar(
        route_handlers=handlers,
        dependencies={"ctx": Provide(_ctx, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=key_before_body,
        state=State({"ctx": AppContext(settings=settings, engine=engine, gateway=gateway)}),
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=OpenAPIConfig(
            title="dotshop storefront API",
            version="1.0.0",
            description=f"Checkout, orders and webhooks for region {settings.region!r}.",
            path="/schema",
        ),
        debug=False,
        on_startup=[_thread_limit(settings.api_threads)],
    )
    document_cross_cutting_answers(app.openapi_schema)
    return Observability(InputGuard(app))

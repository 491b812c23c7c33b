"""The sandbox Shopify as one ASGI app: auth, the leaky bucket, routing, lifespan."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.asgi import read_body
from sandbox.catalog import demo_catalog
from sandbox.faults import FaultMiddleware, Faults
from sandbox.options import SHOPIFY_API_VERSION, SandboxOptions
from sandbox.shopify.admin import build_router
from sandbox.shopify.control import build_control_router, wait_webhooks
from sandbox.shopify.events import TOPICS, WebhookPublisher
from sandbox.shopify.graphql import FILES_PREFIX as BULK_FILES_PREFIX
from sandbox.shopify.graphql import GraphQLEndpoint, send_jsonl
from sandbox.shopify.http import (
    Request,
    Response,
    ShopifyError,
    send_response,
)
from sandbox.shopify.ratelimit import RETRY_AFTER, LeakyBucket, OffsetClock
from sandbox.shopify.store import ShopStore
from sandbox.webhooks import WebhookDispatcher

log = logging.getLogger("sandbox.shopify")

ADMIN_PREFIX = "/admin/api/"
CONTROL_PREFIX = "/_sandbox/"
INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"
THROTTLED = (
    "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted"
    " service."
)


class ShopifySandbox:
    """State and wiring; `__call__` is the ASGI entry point (lifespan + http)."""

    def __init__(self, options: SandboxOptions, clock: Callable[[], float] | None = None) -> None:
        self.options = options
        self.shop_domain = options.shopify_shop
        self.faults = Faults(options.seed)
        self.dispatcher = WebhookDispatcher(self.faults)
        # An OffsetClock unless a test injects its own: the control API can then advance it,
        # and the shop's timestamps move with it.
        self.clock = clock if clock is not None else OffsetClock()
        self.store = ShopStore(shop_domain=options.shopify_shop, now=self._wall_now)
        self.publisher = WebhookPublisher(
            self.dispatcher,
            options.shopify_shop,
            options.shopify_api_secret,
            self.store.subscribers,
        )
        self.store._emit = self.publisher
        self.bucket = LeakyBucket(self.clock)
        # GraphQL shares the store (and so the webhooks) with REST but has its own cost bucket.
        self.graphql = GraphQLEndpoint(self.store, self.clock, self._wall_now)
        self.admin = build_router(self.store)
        self.control = build_control_router(self)
        self.calls: Counter[str] = Counter()
        # Storefront revalidation calls received (control API), for tests to assert on.
        self.revalidations: list[dict[str, str]] = []
        self._calls_lock = threading.Lock()
        self.reset(seed=options.seed, with_catalog=options.demo_catalog)
        # After the first reset (which clears faults), so the start-up faults stay in force.
        self.faults.configure(**options.faults)

    def reset(self, seed: int | None = None, with_catalog: bool | None = None) -> None:
        """Forget everything, then seed again: as if the process had just started."""
        self.store.clear()
        self.publisher.reset()
        self.faults.reset(seed)
        self.bucket.reset()
        self.graphql.reset()
        with self._calls_lock:
            self.calls.clear()
            self.revalidations.clear()
        if self.options.demo_catalog if with_catalog is None else with_catalog:
            self.store.seed(demo_catalog())
        if self.options.shopify_webhook_url:
            for topic in TOPICS:
                self.store.create_webhook(
                    {"topic": topic, "address": self.options.shopify_webhook_url},
                    TOPICS,
                    SHOPIFY_API_VERSION,
                )

    def _wall_now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=getattr(self.clock, "offset", 0.0))

    def export(self) -> dict[str, Any]:
        with self._calls_lock:
            calls = dict(self.calls)
        return {
            **self.store.export(),
            "calls": calls,
            "bucket": {"used": self.bucket.used(self.options.shopify_access_token)},
            "faults": self.faults.as_dict(),
        }

    def _count(self, name: str) -> None:
        with self._calls_lock:
            self.calls[name] += 1

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request.from_scope(scope, await read_body(receive))
        if request.path.startswith(BULK_FILES_PREFIX):
            await send_jsonl(send, self.graphql.result_file(request.path))
            return
        if request.path.startswith(CONTROL_PREFIX):
            response = await self._control(request)
        elif request.path.startswith(ADMIN_PREFIX):
            response = self._admin(request)
        else:
            response = Response(404, {"errors": "Not Found"})
        await send_response(send, response)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.dispatcher.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.dispatcher.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _control(self, request: Request) -> Response:
        try:
            if request.method == "POST" and request.path == "/_sandbox/webhooks/wait":
                return await wait_webhooks(self, request)
            found = self.control.match(request.method, request.path)
            if found is None:
                return Response(404, {"errors": "Not Found"})
            handler, args, _ = found
            return handler(request, **args)
        except ShopifyError as exc:
            return Response(exc.status, {"errors": exc.errors})

    def _admin(self, request: Request) -> Response:
        version = request.path[len(ADMIN_PREFIX) :].split("/", 1)[0]
        headers = [("X-Shopify-API-Version", version), ("X-Request-Id", str(uuid.uuid4()))]
        token = request.headers.get("x-shopify-access-token")
        if token != self.options.shopify_access_token:
            self._count("401")
            return Response(401, {"errors": INVALID_TOKEN}, headers)
        if request.path == f"{ADMIN_PREFIX}{version}/graphql.json":
            return self._graphql(request, version, token, headers[1])
        verdict = self.bucket.take(token)
        headers.append(("X-Shopify-Shop-Api-Call-Limit", verdict.header))
        if not verdict.allowed:
            self._count("429")
            return Response(429, {"errors": THROTTLED}, [*headers, ("Retry-After", RETRY_AFTER)])
        found = self.admin.match(request.method, request.path)
        if found is None:
            self._count("404")
            return Response(404, {"errors": "Not Found"}, headers)
        handler, args, name = found
        self._count(name.replace("/admin/api/{version}", ""))
        try:
            response = handler(request, **args)
        except ShopifyError as exc:
            response = Response(exc.status, {"errors": exc.errors})
        except Exception:  # a sandbox bug must look like a Shopify 500, not a dropped socket
            log.exception("sandbox shopify handler failed: %s %s", request.method, request.path)
            response = Response(500, {"errors": "Internal Server Error"})
        response.headers = headers + response.headers
        return response

    def _graphql(
        self, request: Request, version: str, token: str, request_id: tuple[str, str]
    ) -> Response:
        self._count("POST /graphql.json")
        try:
            response = self.graphql.handle(request, version, token)
        except ShopifyError as exc:
            response = Response(exc.status, {"errors": exc.errors})
        except Exception:  # a sandbox bug must look like a Shopify 500, not a dropped socket
            log.exception("sandbox shopify graphql failed: %s", request.path)
            response = Response(500, {"errors": "Internal Server Error"})
        response.headers = [request_id, *response.headers]
        return response


class ShopifyFaultMiddleware(FaultMiddleware):
    """The shared fault middleware, with injected errors shaped like Shopify's (`{"errors"}`,
    and Retry-After: 2.0 on 429) instead of Stripe's."""

    @staticmethod
    async def _send_error(send: Any, status: int) -> None:
        message = THROTTLED if status == 429 else f"Injected fault: HTTP {status} (sandbox)"
        extra = [("Retry-After", RETRY_AFTER)] if status == 429 else []
        await send_response(send, Response(status, {"errors": message}, extra))


def create_app(options: SandboxOptions, clock: Callable[[], float] | None = None) -> Any:
    sandbox = ShopifySandbox(options, clock)
    app = ShopifyFaultMiddleware(sandbox, sandbox.faults)
    app.sandbox = sandbox  # for in-process tests and debugging
    return app


__all__ = ["ShopifySandbox", "create_app"]

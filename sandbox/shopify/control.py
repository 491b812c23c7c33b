"""The sandbox's own control API under /_sandbox/ (no auth, never faulted): health, faults,
reset, state export, the webhook delivery log, and "another sales channel sold this"."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sandbox.shopify.graphql.quantities import pos_sale
from sandbox.shopify.http import Request, Response, Router, ShopifyError, not_found

MAX_WAIT_SECONDS = 60.0


def build_control_router(sandbox: Any) -> Router:
    """`sandbox` is the ShopifySandbox (app.py): store, faults, publisher, bucket, clock."""
    router = Router()

    def health(request: Request) -> Response:
        return Response(200, {"status": "ok", "service": "shopify", "shop": sandbox.shop_domain})

    def get_faults(request: Request) -> Response:
        return Response(200, sandbox.faults.as_dict())

    def set_faults(request: Request) -> Response:
        body = request.json()
        try:
            sandbox.faults.configure(**body)
        except (TypeError, ValueError) as exc:
            raise ShopifyError(400, str(exc)) from exc
        return Response(200, sandbox.faults.as_dict())

    def reset(request: Request) -> Response:
        body = request.json()
        sandbox.reset(seed=body.get("seed"), with_catalog=body.get("demo_catalog"))
        return Response(200, {"status": "reset", "seed": sandbox.faults.seed})

    def state(request: Request) -> Response:
        return Response(200, sandbox.export())

    def webhooks(request: Request) -> Response:
        return Response(200, {"deliveries": sandbox.publisher.log()})

    def sell(request: Request) -> Response:
        body = request.json()
        if "sku" in body:
            delta = -int(body.get("quantity", 1))
            level = sandbox.store.sell_elsewhere(body["sku"], None, body.get("location_id"), delta)
        elif "inventory_item_id" in body:
            level = sandbox.store.sell_elsewhere(
                None, int(body["inventory_item_id"]), body.get("location_id"), int(body["delta"])
            )
        else:
            raise ShopifyError(422, {"base": ["sku or inventory_item_id is required"]})
        return Response(200, {"inventory_level": level})

    def sell_at_pos(request: Request) -> Response:
        """A point-of-sale checkout: takes `available` units only, never `reserved` ones."""
        body = request.json()
        try:
            sold = pos_sale(
                sandbox.store, str(body.get("sku")), int(body.get("quantity", 1)),
                body.get("location_id"),
            )  # fmt: skip
        except ShopifyError as exc:
            raise not_found() from exc
        except LookupError as exc:
            raise ShopifyError(422, {"base": [str(exc)]}) from exc
        except ValueError as exc:
            raise ShopifyError(422, {"base": [f"Not enough available stock: {exc}"]}) from exc
        return Response(200, {"sale": sold})

    def revalidate(request: Request) -> Response:
        """A storefront's on-demand revalidation endpoint (Next.js route handler style:
        ?path=&tags=&secret=), recorded so tests can see what dotshop asked to re-render."""
        with sandbox._calls_lock:
            sandbox.revalidations.append({k: v[-1] for k, v in request.query.items()})
        return Response(200, {"revalidated": True})

    def revalidations(request: Request) -> Response:
        with sandbox._calls_lock:
            return Response(200, {"calls": list(sandbox.revalidations)})

    def advance_clock(request: Request) -> Response:
        seconds = float(request.json().get("seconds", 0))
        try:
            sandbox.clock.advance(seconds)
        except ValueError as exc:
            raise ShopifyError(400, str(exc)) from exc
        return Response(200, {"advanced": seconds})

    router.add("GET", "/_sandbox/health", health)
    router.add("GET", "/_sandbox/faults", get_faults)
    router.add("POST", "/_sandbox/faults", set_faults)
    router.add("POST", "/_sandbox/reset", reset)
    router.add("GET", "/_sandbox/state", state)
    router.add("GET", "/_sandbox/webhooks", webhooks)
    router.add("POST", "/_sandbox/inventory/sell", sell)
    router.add("POST", "/_sandbox/inventory/pos_sale", sell_at_pos)
    router.add("POST", "/_sandbox/clock/advance", advance_clock)
    router.add("POST", "/_sandbox/storefront/revalidate", revalidate)
    router.add("GET", "/_sandbox/storefront/revalidations", revalidations)
    return router


async def wait_webhooks(sandbox: Any, request: Request) -> Response:
    """POST /_sandbox/webhooks/wait: block (off the event loop) until deliveries are idle."""
    timeout = min(float(request.json().get("timeout", 10.0)), MAX_WAIT_SECONDS)
    wait: Callable[[float], bool] = sandbox.publisher.dispatcher.wait_idle
    idle = await asyncio.to_thread(wait, timeout)
    return Response(200, {"idle": idle, "pending": sandbox.publisher.dispatcher.pending()})

"""Run both stand-ins in one process (`dotshop sandbox`), each on its own loopback port."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import uvicorn
import uvloop

from sandbox.options import SandboxOptions


async def _serve_all(servers: list[uvicorn.Server]) -> None:
    await asyncio.gather(*(server.serve() for server in servers))


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    """After a full collection, move what survived it out of the collector's reach for good.

    The stand-ins keep every object they ever made (PaymentIntents, events, deliveries) in
    memory: acyclic dicts and lists that live as long as the process. CPython's full
    collections walk all of them, so their pauses grow with the run: after 64,000
    PaymentIntents every request in flight stalled 140-410 ms at once, a tail the API it
    answers does not have. Frozen, a full collection only walks what came since the last one."""
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


def serve(
    *,
    stripe_port: int = 12111,
    shopify_port: int = 12112,
    options: SandboxOptions | None = None,
    host: str = "127.0.0.1",
) -> None:
    from sandbox.shopify import create_app as create_shopify
    from sandbox.stripe import create_app as create_stripe

    options = options or SandboxOptions()
    servers = [
        uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", http=http)
        )
        for app, port, http in (
            (create_stripe(options), stripe_port, "auto"),
            # h11 writes header names as the app gives them, as Shopify sends them
            # (`X-Shopify-Shop-Api-Call-Limit`), which the ShopifyAPI library looks up
            # case-sensitively; uvicorn's httptools protocol lowercases every name.
            (create_shopify(options), shopify_port, "h11"),
        )
    ]
    gc.callbacks.append(_freeze_survivors)
    # uvloop, as `dotshop api` runs: on the bench's two cores the sandbox shares the CPU with
    # the API it answers, and asyncio's pure-Python loop cost it ~a third more per request.
    uvloop.run(_serve_all(servers))

"""The little raw ASGI both stand-ins need (they speak HTTP without a framework so that headers
keep the exact case and shape Stripe's and Shopify's clients expect)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


async def read_body(receive: Callable[[], Any]) -> bytes:
    """The whole request body, however many ASGI messages it came in."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)

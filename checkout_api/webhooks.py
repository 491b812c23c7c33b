"""Webhook receivers. Signature first (nothing is read before it verifies), then the inbox:
a redelivered event is a no-op, and an event is applied in the transaction that accepts it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import anyio
from litestar import Request, post
from litestar.openapi import ResponseSpec

from checkout_api.deps import Ctx
from checkout_api.schemas import ErrorBody
from core import payments, shopify_sync
from core.db import transaction
from core.errors import InvalidRequest, InvalidSignature, Unauthorized
from core.logs import get_logger
from core.stripe_gateway import verify_webhook

log = get_logger("checkout_api.webhooks")


@post(
    "/webhooks/stripe",
    status_code=200,
    tags=["webhooks"],
    summary="Stripe events (signed)",
    responses={400: ResponseSpec(ErrorBody, description="invalid_signature")},
)
async def stripe_webhook(request: Request, ctx: Ctx) -> dict[str, str]:
    body = await request.body()
    secret = ctx.settings.stripe_webhook_secret
    if secret is None:
        raise InvalidSignature("no STRIPE_WEBHOOK_SECRET configured; refusing unsigned events")
    event = verify_webhook(body, request.headers.get("stripe-signature"), secret.get_secret_value())

    def apply() -> str:
        with transaction(ctx.engine) as session:
            return payments.accept_and_apply(session, event)

    result = await anyio.to_thread.run_sync(apply)
    log.info("stripe_webhook", event_id=event["id"], type=event["type"], result=result)
    return {"received": "true", "result": result}


def verify_shopify_hmac(body: bytes, presented: str | None, secret: str) -> None:
    """X-Shopify-Hmac-Sha256 is base64(HMAC-SHA256(app secret, raw body)); 401 otherwise."""
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    if not presented or not hmac.compare_digest(expected, presented.encode()):
        raise Unauthorized("X-Shopify-Hmac-Sha256 does not verify")


@post(
    "/webhooks/shopify",
    status_code=200,
    tags=["webhooks"],
    summary="Shopify webhooks (HMAC)",
    responses={
        401: ResponseSpec(ErrorBody, description="unauthorized (HMAC does not verify)"),
        422: ResponseSpec(ErrorBody, description="invalid_request (topic, event id, JSON)"),
    },
)
async def shopify_webhook(request: Request, ctx: Ctx) -> dict[str, str]:
    body = await request.body()
    secret = ctx.settings.shopify_api_secret
    if secret is None:
        raise Unauthorized("no SHOPIFY_API_SECRET configured; refusing unsigned webhooks")
    verify_shopify_hmac(
        body, request.headers.get("x-shopify-hmac-sha256"), secret.get_secret_value()
    )
    topic = request.headers.get("x-shopify-topic", "")
    event_id = request.headers.get("x-shopify-event-id") or request.headers.get(
        "x-shopify-webhook-id"
    )
    if not topic or not event_id:
        raise InvalidRequest("X-Shopify-Topic and X-Shopify-Event-Id are required")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise InvalidRequest("the webhook body is not JSON") from exc

    def apply() -> str:
        with transaction(ctx.engine) as session:
            return shopify_sync.accept_webhook(
                session,
                event_id=event_id,
                topic=topic,
                payload=payload,
                triggered_at=request.headers.get("x-shopify-triggered-at"),
            )

    result = await anyio.to_thread.run_sync(apply)
    log.info("shopify_webhook", event_id=event_id, topic=topic, result=result)
    return {"received": "true", "result": result}

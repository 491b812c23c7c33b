"""Webhook receivers. Signature first (nothing is read before it verifies), then the inbox:
a redelivered event is a no-op, and an event is applied in the transaction that accepts it."""

from __future__ import annotations

import anyio
from litestar import Request, post

from checkout_api.deps import AppContext
from core import payments
from core.db import transaction
from core.errors import InvalidSignature
from core.logs import get_logger
from core.stripe_gateway import verify_webhook

log = get_logger("checkout_api.webhooks")


@post("/webhooks/stripe", status_code=200, tags=["webhooks"], summary="Stripe events (signed)")
async def stripe_webhook(request: Request, ctx: AppContext) -> dict[str, str]:
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

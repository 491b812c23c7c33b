"""Outbox handlers that talk to Stripe: cancel a PaymentIntent, refund, fetch fees.

Each is idempotent: Stripe calls carry keys derived from our ids, and what comes back is applied
through the same idempotent functions the webhooks use, so a redelivered message, a webhook and
a handler reporting the same refund post it once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from core import ledger, payments
from core.db import transaction
from core.errors import PaymentProviderError
from core.outbox import Handlers, Message, PermanentError
from core.stripe_gateway import StripeGateway


class StripeEffects:
    def __init__(self, engine: Engine, gateway: StripeGateway) -> None:
        self.engine = engine
        self.gateway = gateway

    def cancel_payment_intent(self, message: Message) -> None:
        self.gateway.cancel_payment_intent(message.payload["payment_intent_id"])

    def refund(self, message: Message) -> None:
        p = message.payload
        try:
            self.gateway.refund(
                payment_intent_id=p["payment_intent_id"],
                amount=p["amount"],
                refund_key=p["refund_key"],
                reason=p.get("reason"),
            )
        except PaymentProviderError as exc:
            raise PermanentError(f"Stripe refused refund {p['refund_key']}: {exc.message}") from exc
        # Apply what Stripe now says without waiting for (or depending on) the webhook.
        charge = self.gateway.latest_charge(p["payment_intent_id"])
        if charge is not None:
            with transaction(self.engine) as session:
                payments.apply_charge_refunded(session, charge)

    def fetch_fees(self, message: Message) -> None:
        p = message.payload
        charge = self.gateway.latest_charge(p["payment_intent_id"], expand_balance=True)
        bt: dict[str, Any] | None = (charge or {}).get("balance_transaction")
        if not isinstance(bt, dict) or not bt.get("fee"):
            return
        with transaction(self.engine) as session:
            ledger.post(
                session,
                source=f"fee:{bt['id']}",
                kind="fee",
                postings=ledger.fee_postings(bt["fee"], bt["currency"]),
                occurred_at=datetime.fromtimestamp(bt.get("created", 0), UTC),
                order_id=p["order_id"],
                description=f"Stripe fee on {charge['id']}",
            )

    def register(self, handlers: Handlers) -> None:
        handlers.register(payments.CANCEL_PAYMENT_INTENT, self.cancel_payment_intent)
        handlers.register(payments.REFUND, self.refund)
        handlers.register(payments.FETCH_FEES, self.fetch_fees)


def register_handlers(handlers: Handlers) -> None:
    from core.db import database_url, engine_for
    from core.settings import get_settings

    settings = get_settings()
    StripeEffects(
        engine_for(database_url(settings)), StripeGateway.from_settings(settings)
    ).register(handlers)

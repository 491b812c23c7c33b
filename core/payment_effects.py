"""Outbox handlers that talk to Stripe: cancel a PaymentIntent, refund, book balance
transactions.

Each is idempotent and converges when retried after dying at any point: Stripe calls carry keys
derived from our ids (a retried refund returns the refund made the first time), and what comes
back is applied through the same idempotent functions the webhooks use, keyed by Stripe's ids,
so a redelivered message, a webhook and a handler reporting the same refund post it once."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core import balance_txns, orders, payments, refunds
from core.db import transaction
from core.errors import PaymentProviderError
from core.logs import get_logger
from core.models import Order
from core.outbox import Handlers, Message, PermanentError
from core.stripe_gateway import StripeGateway

log = get_logger("core.payment_effects")


class StripeEffects:
    def __init__(self, engine: Engine, gateway: StripeGateway) -> None:
        self.engine = engine
        self.gateway = gateway

    def cancel_payment_intent(self, message: Message) -> None:
        self.gateway.cancel_payment_intent(message.payload["payment_intent_id"])

    def refund(self, message: Message) -> None:
        """Send a `requested` refund row to Stripe and record what Stripe answered."""
        with Session(self.engine) as session:
            row = refunds.get(session, message.payload["refund_id"])
            if row is None:
                raise PermanentError(f"no refund {message.payload['refund_id']}")
            if row.stripe_refund_id is not None or row.status != refunds.REQUESTED:
                return  # recorded by an earlier attempt, or by the refund's webhook
            order = session.get(Order, row.order_id)
            if order is None or order.payment_intent_id is None:
                raise PermanentError(f"refund {row.id}: its order has no PaymentIntent")
            call = {
                "payment_intent_id": order.payment_intent_id,
                "amount": row.amount_minor,
                "refund_key": row.refund_key or row.id,
                "reason": row.reason,
            }
        try:
            refund = self.gateway.refund(**call)
        except PaymentProviderError as exc:
            # Stripe refused it (already refunded, disputed...): no refund exists, so its amount
            # is refundable again; an operator sees the `refund_failed` event.
            with transaction(self.engine) as session:
                orders.lock(session, row.order_id)
                refunds.refused(session, row.id, exc.message)
            log.warning("refund_refused", refund_id=row.id, order_id=row.order_id, alert=True)
            return
        # Apply what Stripe now says without waiting for (or depending on) the webhook.
        with transaction(self.engine) as session:
            payments.apply_refund(session, refund)

    def book_balance_transactions(self, message: Message) -> None:
        """Book the balance transaction of a payment's charge, or those of a refund (and of
        its failure), with the fee and conversion only they carry."""
        p = message.payload
        if "payment_intent_id" in p:
            charge = self.gateway.latest_charge(p["payment_intent_id"], expand_balance=True)
            bt = (charge or {}).get("balance_transaction")
            if not isinstance(bt, dict):
                return  # no charge yet took money: nothing to book
            found = [(bt, charge["amount_captured"] or charge["amount"], charge["currency"])]
        else:
            refund = self.gateway.retrieve_refund(p["refund_id"])
            found = [
                (bt, sign * refund["amount"], refund["currency"])
                for bt, sign in (
                    (refund.get("balance_transaction"), -1),
                    (refund.get("failure_balance_transaction"), 1),
                )
                if isinstance(bt, dict)
            ]
        with transaction(self.engine) as session:
            for bt, source_amount, source_currency in found:
                balance_txns.book(
                    session,
                    bt,
                    source_amount=source_amount,
                    source_currency=source_currency,
                    order_id=p["order_id"],
                    payment_intent_id=p.get("payment_intent_id"),
                )

    def register(self, handlers: Handlers) -> None:
        handlers.register(payments.CANCEL_PAYMENT_INTENT, self.cancel_payment_intent)
        handlers.register(payments.REFUND, self.refund)
        handlers.register(payments.BOOK_BALANCE, self.book_balance_transactions)


def register_handlers(handlers: Handlers) -> None:
    from core.db import database_url, engine_for
    from core.settings import get_settings

    settings = get_settings()
    StripeEffects(
        engine_for(database_url(settings)), StripeGateway.from_settings(settings)
    ).register(handlers)

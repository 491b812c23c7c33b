"""Our one door to Stripe: the real `stripe` SDK, pointed at Stripe or at the sandbox by
api_base. Stripe errors are translated here, once: a card decline is a business outcome, an
outage is `ProviderUnavailable`. Every mutating call carries an idempotency key derived from our
own ids, so a retried call can never create a second PaymentIntent, capture or refund."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import stripe

from core.errors import (
    Conflict,
    DotshopError,
    InvalidSignature,
    PaymentProviderError,
    ProviderUnavailable,
)
from core.logs import get_logger
from core.settings import Settings
from core.stripe_http import CurlClient

log = get_logger("core.stripe_gateway")

# Default for DOTSHOP_STRIPE_TIMEOUT: a checkout waits at most this long for Stripe before
# answering 503 (the client retries with the same Idempotency-Key and resumes where it stopped).
STRIPE_TIMEOUT_SECONDS = 10
# The SDK's own retries (with Stripe's backoff) for network errors, 409 and 5xx: cheap, and safe
# because every call carries an idempotency key.
STRIPE_NETWORK_RETRIES = 2
# How old a webhook signature's timestamp may be (Stripe's default).
WEBHOOK_TOLERANCE_SECONDS = 300


@dataclass(frozen=True)
class PaymentIntentRef:
    id: str
    client_secret: str | None
    status: str
    amount: int
    currency: str


def _ref(pi: Any) -> PaymentIntentRef:
    """From a PaymentIntent: the SDK's typed object or its JSON (both read by key)."""
    return PaymentIntentRef(
        pi["id"], pi["client_secret"], pi["status"], pi["amount"], pi["currency"]
    )


def _translate(exc: stripe.StripeError) -> DotshopError:
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError | stripe.APIError):
        return ProviderUnavailable(request_id=exc.request_id)
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        # Our key is wrong or revoked: an operator fixes it, and the checkout should wait for
        # that (503, hold kept) rather than be cancelled as if Stripe had refused the payment.
        log.error("stripe_credentials_refused", request_id=exc.request_id)
        return ProviderUnavailable(request_id=exc.request_id)
    if isinstance(exc, stripe.IdempotencyError):
        return Conflict("Stripe saw this idempotency key with other parameters")
    status = getattr(exc, "http_status", None)
    if status is not None and status >= 500:
        return ProviderUnavailable(request_id=exc.request_id)
    return PaymentProviderError(
        str(exc.user_message or "Stripe refused the request"),
        stripe_code=exc.code,
        request_id=exc.request_id,
    )


class StripeGateway:
    def __init__(
        self,
        api_key: str,
        api_base: str,
        *,
        timeout: float = STRIPE_TIMEOUT_SECONDS,
        max_network_retries: int = STRIPE_NETWORK_RETRIES,
    ) -> None:
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            max_network_retries=max_network_retries,
            http_client=CurlClient(timeout),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeGateway:
        if settings.stripe_api_key is None:
            raise DotshopError("STRIPE_API_KEY is not set")
        return cls(
            settings.stripe_api_key.get_secret_value(),
            settings.stripe_api_base,
            timeout=settings.stripe_timeout,
        )

    def _call(self, fn: Any, params: dict[str, Any], idempotency_key: str | None = None) -> Any:
        options: dict[str, Any] = {}
        if idempotency_key:
            options["idempotency_key"] = idempotency_key
        try:
            return fn(params, options) if options else fn(params)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc

    def create_payment_intent(
        self,
        *,
        order_id: str,
        amount: int,
        currency: str,
        email: str,
        payment_method_types: list[str],
        require_sca: bool,
    ) -> PaymentIntentRef:
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency,
            "payment_method_types": payment_method_types,
            "receipt_email": email,
            "metadata": {"order_id": order_id},
            "description": f"dotshop order {order_id}",
        }
        if require_sca:
            # EU: strong customer authentication (PSD2) — ask for 3-D Secure on every card.
            params["payment_method_options"] = {"card": {"request_three_d_secure": "any"}}
        # The checkout's hot path asks the SDK for the raw answer: the same request (retries,
        # idempotency key, errors raised as StripeError), without building the whole typed
        # PaymentIntent to read five of its fields (~0.6 ms of CPU per checkout).
        answer = self._call(
            lambda p, o: self.client.raw_request("post", "/v1/payment_intents", **p, **o),
            params,
            f"dotshop-pi-{order_id}",
        )
        return _ref(json.loads(answer.body))

    def retrieve_payment_intent(self, payment_intent_id: str) -> PaymentIntentRef:
        return _ref(
            self._call(lambda p: self.client.v1.payment_intents.retrieve(payment_intent_id), {})
        )

    def cancel_payment_intent(self, payment_intent_id: str, *, reason: str = "abandoned") -> str:
        """Cancel unless it already reached a final state; returns the resulting status."""
        try:
            pi = self.client.v1.payment_intents.cancel(
                payment_intent_id,
                {"cancellation_reason": reason},
                {"idempotency_key": f"dotshop-cancel-{payment_intent_id}"},
            )
        except stripe.InvalidRequestError as exc:
            # Already canceled or succeeded: nothing to cancel, which is the state we wanted
            # unless it succeeded (the webhook then decides).
            if exc.code == "payment_intent_unexpected_state":
                return self.retrieve_payment_intent(payment_intent_id).status
            raise _translate(exc) from exc
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return pi.status

    def latest_charge(
        self, payment_intent_id: str, *, expand_balance: bool = False
    ) -> dict[str, Any] | None:
        """The PaymentIntent's latest charge as a plain dict (balance transaction expanded on
        request), or None before there is one."""
        expand = ["latest_charge.balance_transaction"] if expand_balance else ["latest_charge"]
        pi = self._call(
            lambda p: self.client.v1.payment_intents.retrieve(payment_intent_id, p),
            {"expand": expand},
        )
        charge = pi.latest_charge
        return charge.to_dict() if charge is not None and not isinstance(charge, str) else None

    def refund(
        self, *, payment_intent_id: str, amount: int, refund_key: str, reason: str | None
    ) -> dict[str, Any]:
        """Refund `amount` once per `refund_key` (ours, carried in the refund's metadata so its
        webhooks find our row); returns Stripe's refund object as a plain dict."""
        params: dict[str, Any] = {
            "payment_intent": payment_intent_id,
            "amount": amount,
            "metadata": {"dotshop_refund": refund_key},
        }
        if reason in ("duplicate", "fraudulent", "requested_by_customer"):
            params["reason"] = reason
        refund = self._call(self.client.v1.refunds.create, params, f"dotshop-refund-{refund_key}")
        return refund.to_dict()

    def retrieve_refund(self, refund_id: str) -> dict[str, Any]:
        """The refund as a plain dict, its balance transaction and (if it failed) the failure's
        one expanded."""
        refund = self._call(
            lambda p: self.client.v1.refunds.retrieve(refund_id, p),
            {"expand": ["balance_transaction", "failure_balance_transaction"]},
        )
        return refund.to_dict()

    def list_page(self, resource: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        """One page of a list endpoint (`events`, `payment_intents`, `refunds`, `disputes`,
        `charges`), newest first as Stripe lists: the objects as plain dicts, and whether more
        follow in the direction asked (`starting_after` pages back, `ending_before` forward)."""
        page = self._call(getattr(self.client.v1, resource).list, params)
        return [o.to_dict() for o in page.data], bool(page.has_more)

    def payout_balance_transactions(self, payout_id: str) -> list[dict[str, Any]]:
        """Every balance transaction an automatic payout covers (after
        `payout.reconciliation_completed`), with its `source` expanded for the charge's
        PaymentIntent; all pages."""
        params: dict[str, Any] = {"payout": payout_id, "limit": 100, "expand": ["data.source"]}
        txns: list[dict[str, Any]] = []
        while True:
            page, more = self.list_page("balance_transactions", params)
            txns.extend(page)
            if not more or not page:
                return txns
            params = {**params, "starting_after": page[-1]["id"]}


def verify_webhook(payload: bytes, signature: str | None, secret: str) -> dict[str, Any]:
    """The event, if the Stripe-Signature header verifies (and is fresh); else InvalidSignature."""
    try:
        event = stripe.Webhook.construct_event(
            payload, signature or "", secret, tolerance=WEBHOOK_TOLERANCE_SECONDS
        )
    except (stripe.SignatureVerificationError, ValueError) as exc:
        raise InvalidSignature("Stripe-Signature does not verify") from exc
    return event.to_dict()

"""PaymentIntents and the Charges they create: Stripe's status machine for card payments.

requires_payment_method -> (confirm) -> requires_action (3DS) -> succeeded | requires_capture
                                      -> requires_payment_method + last_payment_error (declined)
any open status -> canceled
"""

from __future__ import annotations

import contextlib
from typing import Any

from sandbox.stripe import balance
from sandbox.stripe.account import Account
from sandbox.stripe.cards import TEST_CARDS, TestCard
from sandbox.stripe.errors import ApiError
from sandbox.stripe.forms import (
    check_known,
    get_bool,
    get_dict,
    get_enum,
    get_int,
    get_list,
    get_str,
    merge_metadata,
)
from sandbox.stripe.state import new_id, render

# How long after a `pm_card_createDispute` payment the card network "opens" its dispute.
DISPUTE_DELAY_SECONDS = 0.5
# Stripe's ceiling for one payment (eight digits of minor units, e.g. $999,999.99).
MAX_AMOUNT = 99_999_999
CAPTURE_METHODS = ("automatic", "automatic_async", "manual")
CANCELLATION_REASONS = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")
CANCELABLE = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
    "processing",
)
CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
THREE_DS_CHOICES = ("automatic", "any", "challenge")
# Accepted and echoed on the object, without behaviour in the sandbox.
PASSTHROUGH = (
    "customer",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "setup_future_usage",
    "shipping",
    "transfer_group",
    "on_behalf_of",
)
PI_CREATE_PARAMS = {
    "amount",
    "currency",
    "metadata",
    "description",
    "capture_method",
    "confirmation_method",
    "payment_method_types",
    "automatic_payment_methods",
    "payment_method_options",
    "payment_method",
    "confirm",
    "receipt_email",
    "return_url",
    "off_session",
    "error_on_requires_action",
    "use_stripe_sdk",
    "expand",
    *PASSTHROUGH,
}
PI_UPDATE_PARAMS = PI_CREATE_PARAMS - {
    "confirm",
    "confirmation_method",
    "return_url",
    "off_session",
    "error_on_requires_action",
    "use_stripe_sdk",
    "automatic_payment_methods",
}
PI_CONFIRM_PARAMS = {
    "payment_method",
    "payment_method_options",
    "return_url",
    "receipt_email",
    "capture_method",
    "off_session",
    "error_on_requires_action",
    "use_stripe_sdk",
    "expand",
}


# --- payment methods ------------------------------------------------------------------------


def resolve_payment_method(acct: Account, value: str) -> dict[str, Any]:
    """A test token (`pm_card_visa`) becomes a new PaymentMethod, as Stripe does; an id we
    issued is looked up."""
    card = TEST_CARDS.get(value)
    if card is None:
        with acct.store.lock:
            known = acct.store.tables["payment_methods"].get(value)
        if known is None:
            raise ApiError.invalid(
                f"No such PaymentMethod: '{value}'", param="payment_method", code="resource_missing"
            )
        return known
    return acct.store.add(
        "payment_methods",
        {
            "id": new_id("pm"),
            "object": "payment_method",
            "billing_details": {"address": None, "email": None, "name": None, "phone": None},
            "card": {
                "brand": card.brand,
                "country": card.country,
                "exp_month": 12,
                "exp_year": 2034,
                "funding": card.funding,
                "last4": card.last4,
                "three_d_secure_usage": {"supported": True},
            },
            "created": acct.clock.now(),
            "customer": None,
            "livemode": False,
            "metadata": {},
            "type": "card",
            "_card": value,
        },
    )


def _card_of(pm: dict[str, Any]) -> TestCard:
    return TEST_CARDS[pm["_card"]]


# --- PaymentIntents -------------------------------------------------------------------------


def _currency(params: dict[str, Any], required: bool) -> str | None:
    currency = get_str(params, "currency", required=required)
    if currency is None:
        return None
    if len(currency) != 3 or not currency.isalpha():
        raise ApiError.invalid(f"Invalid currency: {currency}.", param="currency")
    return currency.lower()


def _amount(params: dict[str, Any], required: bool) -> int | None:
    amount = get_int(params, "amount", required=required, minimum=1)
    if amount is not None and amount > MAX_AMOUNT:
        raise ApiError.invalid(
            f"Amount must be no more than {MAX_AMOUNT}.", param="amount", code="amount_too_large"
        )
    return amount


def _three_d_secure(options: dict[str, Any] | None) -> str | None:
    card = (options or {}).get("card") or {}
    value = card.get("request_three_d_secure")
    if value is not None and value not in THREE_DS_CHOICES:
        raise ApiError.invalid(
            f"Invalid request_three_d_secure: must be one of {', '.join(THREE_DS_CHOICES)}",
            param="payment_method_options[card][request_three_d_secure]",
        )
    return value


def _apply_common(acct: Account, pi: dict[str, Any], params: dict[str, Any]) -> None:
    """Fields create and update share."""
    if "description" in params:
        pi["description"] = get_str(params, "description") or None
    if "receipt_email" in params:
        pi["receipt_email"] = get_str(params, "receipt_email") or None
    if "metadata" in params:
        pi["metadata"] = merge_metadata(pi["metadata"], get_dict(params, "metadata"))
    if "capture_method" in params:
        pi["capture_method"] = get_enum(params, "capture_method", CAPTURE_METHODS, "automatic")
    if "payment_method_types" in params:
        types = get_list(params, "payment_method_types") or []
        if any(t != "card" for t in types):
            raise ApiError.invalid(
                "The sandbox supports only the card payment method type.",
                param="payment_method_types",
            )
        pi["payment_method_types"] = types or ["card"]
    if "payment_method_options" in params:
        options = get_dict(params, "payment_method_options") or {}
        three_ds = _three_d_secure(options)
        pi["payment_method_options"] = {
            "card": {
                "installments": None,
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": three_ds or "automatic",
            }
        }
    for name in PASSTHROUGH:
        if name in params:
            pi[name] = params[name] or None


def create_payment_intent(acct: Account, params: dict[str, Any], host: str) -> dict[str, Any]:
    check_known(params, PI_CREATE_PARAMS)
    amount = _amount(params, required=True)
    currency = _currency(params, required=True)
    confirm = get_bool(params, "confirm")
    automatic = get_dict(params, "automatic_payment_methods")
    if automatic is not None and "payment_method_types" in params:
        raise ApiError.invalid(
            "You may only specify one of these parameters: automatic_payment_methods, "
            "payment_method_types.",
            param="automatic_payment_methods",
        )
    pm_value = get_str(params, "payment_method")
    with acct.store.lock:
        pm = resolve_payment_method(acct, pm_value) if pm_value else None
        pi_id = new_id("pi")
        pi: dict[str, Any] = {
            "id": pi_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_details": {"tip": {}},
            "amount_received": 0,
            "application": None,
            "application_fee_amount": None,
            "automatic_payment_methods": (
                {"allow_redirects": "always", "enabled": get_bool(automatic, "enabled")}
                if automatic is not None
                else None
            ),
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": "automatic",
            "client_secret": f"{pi_id}_secret_{new_id('x')[2:]}",
            "confirmation_method": get_enum(
                params, "confirmation_method", ("automatic", "manual"), "automatic"
            ),
            "created": acct.clock.now(),
            "currency": currency,
            "customer": None,
            "description": None,
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": {},
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": pm["id"] if pm else None,
            "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
            "payment_method_types": ["card"],
            "processing": None,
            "receipt_email": None,
            "setup_future_usage": None,
            "shipping": None,
            "statement_descriptor": None,
            "statement_descriptor_suffix": None,
            "status": "requires_confirmation" if pm else "requires_payment_method",
            "transfer_group": None,
            "_authenticated": False,
        }
        _apply_common(acct, pi, params)
        acct.store.add("payment_intents", pi)
        acct.events.emit("payment_intent.created", pi)
        if confirm:
            _confirm(acct, pi, get_str(params, "return_url"), host)
        return pi


def update_payment_intent(acct: Account, pi_id: str, params: dict[str, Any]) -> dict[str, Any]:
    check_known(params, PI_UPDATE_PARAMS)
    with acct.store.lock:
        pi = acct.store.get("payment_intents", pi_id)
        money_fields = {"amount", "currency", "payment_method", "capture_method"}
        if money_fields & set(params) and pi["status"] not in CONFIRMABLE:
            field = sorted(money_fields & set(params))[0]
            raise ApiError.state(
                f"This PaymentIntent's {field} could not be updated because it has a status of "
                f"{pi['status']}. You may only update the {field} of a PaymentIntent with one of "
                f"the following statuses: {', '.join(CONFIRMABLE)}.",
                code="payment_intent_unexpected_state",
                payment_intent=render(pi),
            )
        if "amount" in params:
            pi["amount"] = _amount(params, required=True)
        if "currency" in params:
            pi["currency"] = _currency(params, required=True)
        if "payment_method" in params:
            value = get_str(params, "payment_method")
            pm = resolve_payment_method(acct, value) if value else None
            pi["payment_method"] = pm["id"] if pm else None
            pi["status"] = "requires_confirmation" if pm else "requires_payment_method"
            pi["next_action"] = None
            pi["_authenticated"] = False
        _apply_common(acct, pi, params)
        return pi


def confirm_payment_intent(
    acct: Account, pi_id: str, params: dict[str, Any], host: str
) -> dict[str, Any]:
    check_known(params, PI_CONFIRM_PARAMS)
    with acct.store.lock:
        pi = acct.store.get("payment_intents", pi_id)
        _require_status(pi, CONFIRMABLE, "confirm")
        pm_value = get_str(params, "payment_method")
        if pm_value:
            pm = resolve_payment_method(acct, pm_value)
            if pm["id"] != pi["payment_method"]:
                pi["_authenticated"] = False
            pi["payment_method"] = pm["id"]
        _apply_common(
            acct, pi, {k: v for k, v in params.items() if k not in ("payment_method", "expand")}
        )
        _confirm(acct, pi, get_str(params, "return_url"), host)
        return pi


def _require_status(pi: dict[str, Any], allowed: tuple[str, ...], action: str) -> None:
    if pi["status"] not in allowed:
        raise ApiError.state(
            f"You cannot {action} this PaymentIntent because it has a status of {pi['status']}. "
            f"Only a PaymentIntent with one of the following statuses may be {action}ed: "
            f"{', '.join(allowed)}.",
            code="payment_intent_unexpected_state",
            payment_intent=render(pi),
        )


def _confirm(acct: Account, pi: dict[str, Any], return_url: str | None, host: str) -> None:
    if not pi["payment_method"]:
        raise ApiError.state(
            "You cannot confirm this PaymentIntent because it's missing a payment method. To "
            "confirm the PaymentIntent with cus_ or pm_, pass payment_method.",
            code="payment_intent_unexpected_state",
            payment_intent=render(pi),
        )
    pm = acct.store.get("payment_methods", pi["payment_method"])
    card = _card_of(pm)
    requested = pi["payment_method_options"]["card"]["request_three_d_secure"]
    # Stripe test mode: `any`/`challenge` always triggers 3DS, and so do the 3DS-required cards.
    if (card.requires_authentication or requested in ("any", "challenge")) and not pi[
        "_authenticated"
    ]:
        pi["status"] = "requires_action"
        pi["last_payment_error"] = None
        authenticate_url = f"http://{host}/_sandbox/payment_intents/{pi['id']}/authenticate"
        pi["next_action"] = (
            {
                "type": "redirect_to_url",
                "redirect_to_url": {"return_url": return_url, "url": authenticate_url},
            }
            if return_url
            else {
                "type": "use_stripe_sdk",
                "use_stripe_sdk": {
                    "type": "three_d_secure_redirect",
                    "stripe_js": authenticate_url,
                },
            }
        )
        acct.events.emit("payment_intent.requires_action", pi)
        return
    _charge(acct, pi, pm, card)


def _charge(acct: Account, pi: dict[str, Any], pm: dict[str, Any], card: TestCard) -> None:
    """One charge attempt: a declined Charge, or a succeeded one (captured unless manual)."""
    manual = pi["capture_method"] == "manual"
    decline = card.decline
    charge: dict[str, Any] = {
        "id": new_id("ch"),
        "object": "charge",
        "amount": pi["amount"],
        "amount_captured": 0,
        "amount_refunded": 0,
        "balance_transaction": None,
        "billing_details": pm["billing_details"],
        "calculated_statement_descriptor": "DOTSHOP",
        "captured": False,
        "created": acct.clock.now(),
        "currency": pi["currency"],
        "customer": pi.get("customer"),
        "description": pi["description"],
        "disputed": False,
        "failure_code": decline.code if decline else None,
        "failure_message": decline.message if decline else None,
        "fraud_details": {},
        "livemode": False,
        "metadata": dict(pi["metadata"]),
        "outcome": {
            "network_status": "declined_by_network" if decline else "approved_by_network",
            "reason": decline.decline_code if decline else None,
            "risk_level": "normal",
            "seller_message": (
                "The bank did not return any further details with this decline."
                if decline
                else "Payment complete."
            ),
            "type": "issuer_declined" if decline else "authorized",
        },
        "paid": decline is None,
        "payment_intent": pi["id"],
        "payment_method": pm["id"],
        "payment_method_details": {
            "card": {
                **{k: pm["card"][k] for k in ("brand", "country", "exp_month", "exp_year")},
                **{k: pm["card"][k] for k in ("funding", "last4")},
                "three_d_secure": {"result": "authenticated"} if pi["_authenticated"] else None,
            },
            "type": "card",
        },
        "receipt_email": pi["receipt_email"],
        "refunded": False,
        "status": "failed" if decline else "succeeded",
        "_dispute_reason": card.dispute_reason,
        "_inquiry": card.inquiry,
        "_refund_fails": card.refund_fails,
    }
    acct.store.add("charges", charge)
    pi["latest_charge"] = charge["id"]
    pi["next_action"] = None
    if decline:
        pi["status"] = "requires_payment_method"
        pi["payment_method"] = None
        pi["_authenticated"] = False
        pi["last_payment_error"] = {
            "charge": charge["id"],
            "code": decline.code,
            "decline_code": decline.decline_code,
            "doc_url": f"https://stripe.com/docs/error-codes/{decline.code.replace('_', '-')}",
            "message": decline.message,
            "payment_method": render(pm),
            "type": "card_error",
        }
        acct.events.emit("charge.failed", charge)
        acct.events.emit("payment_intent.payment_failed", pi)
        raise ApiError(
            402,
            "card_error",
            decline.message,
            code=decline.code,
            decline_code=decline.decline_code,
            extra={
                "charge": charge["id"],
                "payment_intent": render(pi),
                "payment_method": render(pm),
            },
        )
    pi["last_payment_error"] = None
    if manual:
        pi["status"] = "requires_capture"
        pi["amount_capturable"] = pi["amount"]
        acct.events.emit("charge.succeeded", charge)
        acct.events.emit("payment_intent.amount_capturable_updated", pi)
        return
    _settle(acct, pi, charge, pi["amount"])
    acct.events.emit("charge.succeeded", charge)
    acct.events.emit("payment_intent.succeeded", pi)


def _settle(acct: Account, pi: dict[str, Any], charge: dict[str, Any], amount: int) -> None:
    """Money moves: the charge is captured for `amount` and its balance transaction posted."""
    charge["captured"] = True
    charge["amount_captured"] = amount
    txn = balance.record(
        acct,
        amount=amount,
        fee=balance.card_fee,
        currency=charge["currency"],
        source=charge["id"],
        type_="charge",
        reporting_category="charge",
        description=pi["description"],
    )
    charge["balance_transaction"] = txn["id"]
    pi["status"] = "succeeded"
    pi["amount_received"] = amount
    pi["amount_capturable"] = 0
    if charge["_dispute_reason"]:
        from sandbox.stripe.disputes import open_dispute

        charge_id, reason, inquiry = charge["id"], charge["_dispute_reason"], charge["_inquiry"]
        acct.later(
            DISPUTE_DELAY_SECONDS, lambda: open_dispute(acct, charge_id, reason, inquiry=inquiry)
        )


def capture_payment_intent(acct: Account, pi_id: str, params: dict[str, Any]) -> dict[str, Any]:
    check_known(params, {"amount_to_capture", "metadata", "expand", "statement_descriptor"})
    with acct.store.lock:
        pi = acct.store.get("payment_intents", pi_id)
        _require_status(pi, ("requires_capture",), "capture")
        amount = get_int(params, "amount_to_capture", minimum=1) or pi["amount_capturable"]
        if amount > pi["amount_capturable"]:
            raise ApiError.state(
                f"The amount to capture ({amount}) must be less than or equal to the "
                f"PaymentIntent's amount_capturable ({pi['amount_capturable']}).",
                code="amount_too_large",
                param="amount_to_capture",
            )
        if "metadata" in params:
            pi["metadata"] = merge_metadata(pi["metadata"], get_dict(params, "metadata"))
        charge = acct.store.get("charges", pi["latest_charge"])
        _settle(acct, pi, charge, amount)
        acct.events.emit("charge.captured", charge)
        acct.events.emit("payment_intent.succeeded", pi)
        return pi


def cancel_payment_intent(acct: Account, pi_id: str, params: dict[str, Any]) -> dict[str, Any]:
    check_known(params, {"cancellation_reason", "expand"})
    with acct.store.lock:
        pi = acct.store.get("payment_intents", pi_id)
        reason = get_enum(params, "cancellation_reason", CANCELLATION_REASONS)
        _require_status(pi, CANCELABLE, "cancel")
        uncaptured = pi["status"] == "requires_capture"
        pi.update(
            status="canceled",
            canceled_at=acct.clock.now(),
            cancellation_reason=reason,
            amount_capturable=0,
            next_action=None,
        )
        if uncaptured:
            # Releasing an authorization shows on the charge as a full refund, like Stripe.
            charge = acct.store.get("charges", pi["latest_charge"])
            charge["refunded"] = True
            charge["amount_refunded"] = charge["amount"]
            acct.events.emit("charge.refunded", charge)
        acct.events.emit("payment_intent.canceled", pi)
        return pi


def authenticate(acct: Account, pi_id: str, outcome: str) -> dict[str, Any]:
    """Sandbox control: the customer completes (or fails) the 3DS challenge."""
    with acct.store.lock:
        pi = acct.store.get("payment_intents", pi_id)
        if pi["status"] != "requires_action":
            raise ApiError.state(
                f"PaymentIntent {pi_id} is {pi['status']}, not requires_action.",
                code="payment_intent_unexpected_state",
            )
        if outcome == "succeed":
            pi["_authenticated"] = True
            pm = acct.store.get("payment_methods", pi["payment_method"])
            # A decline is recorded on the PaymentIntent (last_payment_error); nobody is waiting
            # for its 402 here.
            with contextlib.suppress(ApiError):
                _charge(acct, pi, pm, _card_of(pm))
            return pi
        pm = acct.store.get("payment_methods", pi["payment_method"])
        pi.update(status="requires_payment_method", payment_method=None, next_action=None)
        pi["last_payment_error"] = {
            "code": "payment_intent_authentication_failure",
            "doc_url": "https://stripe.com/docs/error-codes/payment-intent-authentication-failure",
            "message": "The provided PaymentMethod has failed authentication. You can provide "
            "payment_method_data or a new PaymentMethod to attempt to fulfill this "
            "PaymentIntent again.",
            "payment_method": render(pm),
            "type": "invalid_request_error",
        }
        acct.events.emit("payment_intent.payment_failed", pi)
        return pi

"""Refunds: full or partial, never more than what is left on the charge.

A refund of a `pm_card_refundFail` payment starts `succeeded` and fails a moment later, as in
Stripe test mode: its status becomes `failed` with a `failure_reason`, a
`failure_balance_transaction` gives the money back to the balance, the charge's
`amount_refunded` drops again, and `charge.refund.updated`, `refund.updated` and `refund.failed`
are sent. The control API (`POST /_sandbox/refunds/{id}/fail`) fails any refund on demand."""

from __future__ import annotations

from typing import Any

from sandbox.stripe import balance
from sandbox.stripe.account import Account
from sandbox.stripe.errors import ApiError
from sandbox.stripe.forms import check_known, get_dict, get_enum, get_int, get_str, merge_metadata
from sandbox.stripe.state import new_id

REASONS = ("duplicate", "fraudulent", "requested_by_customer")
OPEN_DISPUTE = ("warning_needs_response", "needs_response", "under_review", "warning_under_review")
# How long after its creation a refund of a `pm_card_refundFail` payment fails.
REFUND_FAILURE_DELAY_SECONDS = 0.5
FAILURE_REASONS = ("lost_or_stolen_card", "expired_or_canceled_card", "unknown")


def _charge_to_refund(acct: Account, params: dict[str, Any]) -> dict[str, Any]:
    pi_id = get_str(params, "payment_intent")
    charge_id = get_str(params, "charge")
    if not pi_id and not charge_id:
        raise ApiError.invalid(
            "One of the following params should be provided for this request: payment_intent "
            "or charge.",
            param="payment_intent",
        )
    if charge_id:
        charge = acct.store.get("charges", charge_id, param="charge")
        if pi_id and charge["payment_intent"] != pi_id:
            raise ApiError.invalid(
                f"Charge {charge_id} does not belong to PaymentIntent {pi_id}.", param="charge"
            )
        return charge
    pi = acct.store.get("payment_intents", pi_id or "", param="payment_intent")
    if pi["status"] != "succeeded":
        raise ApiError.state(
            f"This PaymentIntent ({pi['id']}) does not have a successful charge to refund.",
            code="charge_not_refundable",
            param="payment_intent",
        )
    return acct.store.get("charges", pi["latest_charge"])


def _open_dispute(acct: Account, charge_id: str) -> bool:
    return any(
        d["charge"] == charge_id and d["status"] in OPEN_DISPUTE
        for d in acct.store.tables["disputes"].values()
    )


def create_refund(acct: Account, params: dict[str, Any]) -> dict[str, Any]:
    check_known(
        params,
        {
            "payment_intent",
            "charge",
            "amount",
            "reason",
            "metadata",
            "expand",
            "instructions_email",
        },
    )
    reason = get_enum(params, "reason", REASONS)
    amount = get_int(params, "amount", minimum=1)
    metadata = merge_metadata({}, get_dict(params, "metadata"))
    with acct.store.lock:
        charge = _charge_to_refund(acct, params)
        if not charge["captured"]:
            raise ApiError.state(
                f"Charge {charge['id']} has not been captured; cancel its PaymentIntent instead.",
                code="charge_not_refundable",
            )
        if _open_dispute(acct, charge["id"]):
            raise ApiError.state(
                f"Charge {charge['id']} has been charged back; cannot issue a refund.",
                code="charge_disputed",
            )
        remaining = charge["amount_captured"] - charge["amount_refunded"]
        if remaining <= 0:
            raise ApiError.state(
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        amount = remaining if amount is None else amount
        if amount > remaining:
            raise ApiError.state(
                f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({remaining}).",
                code="amount_too_large",
                param="amount",
            )
        refund_id = new_id("re")
        txn = balance.record(
            acct,
            amount=-amount,
            currency=charge["currency"],
            source=refund_id,
            type_="refund",
            reporting_category="refund",
            description="REFUND FOR CHARGE",
        )
        refund = acct.store.add(
            "refunds",
            {
                "id": refund_id,
                "object": "refund",
                "amount": amount,
                "balance_transaction": txn["id"],
                "charge": charge["id"],
                "created": acct.clock.now(),
                "currency": charge["currency"],
                "destination_details": {"card": {"type": "refund"}, "type": "card"},
                "failure_balance_transaction": None,
                "failure_reason": None,
                "metadata": metadata,
                "payment_intent": charge["payment_intent"],
                "reason": reason,
                "receipt_number": None,
                "source_transfer_reversal": None,
                "status": "succeeded",
                "transfer_reversal": None,
            },
        )
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
        acct.events.emit("charge.refunded", charge)
        acct.events.emit("refund.created", refund)
        if charge.get("_refund_fails"):
            acct.later(
                REFUND_FAILURE_DELAY_SECONDS,
                lambda: fail_refund(acct, refund_id, "expired_or_canceled_card"),
            )
        return refund


def fail_refund(acct: Account, refund_id: str, failure_reason: str) -> dict[str, Any]:
    """The card network returns a refund: the money comes back to the balance."""
    if failure_reason not in FAILURE_REASONS:
        raise ApiError.invalid(
            f"failure_reason must be one of {', '.join(FAILURE_REASONS)}", param="failure_reason"
        )
    with acct.store.lock:
        refund = acct.store.get("refunds", refund_id)
        if refund["status"] in ("failed", "canceled"):
            return refund  # failed already (a control call raced the timer)
        charge = acct.store.get("charges", refund["charge"])
        txn = balance.record(
            acct,
            amount=refund["amount"],
            currency=refund["currency"],
            source=refund_id,
            type_="refund_failure",
            reporting_category="refund_failure",
            description="REFUND FAILURE",
        )
        refund.update(
            status="failed", failure_reason=failure_reason, failure_balance_transaction=txn["id"]
        )
        charge["amount_refunded"] -= refund["amount"]
        charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
        acct.events.emit("charge.refund.updated", refund)
        acct.events.emit("refund.updated", refund)
        acct.events.emit("refund.failed", refund)
        return refund


def update_refund(acct: Account, refund_id: str, params: dict[str, Any]) -> dict[str, Any]:
    check_known(params, {"metadata", "expand"})
    with acct.store.lock:
        refund = acct.store.get("refunds", refund_id)
        refund["metadata"] = merge_metadata(refund["metadata"], get_dict(params, "metadata"))
        acct.events.emit("refund.updated", refund)
        return refund

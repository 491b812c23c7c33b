"""Disputes: opened by the card network after a `pm_card_createDispute` payment, answered with
evidence (`winning_evidence` / `losing_evidence` decide the outcome, as in Stripe test mode).

An inquiry (`pm_card_createDisputeInquiry`, status `warning_needs_response`) is a question from
the issuer before any chargeback: no funds move, so it has no balance transactions and no
`charge.dispute.funds_*` events; it ends `warning_closed`. A chargeback withdraws the amount and
the dispute fee when it opens (`charge.dispute.funds_withdrawn`, one balance transaction) and
returns both when won (`charge.dispute.funds_reinstated`, a second one)."""

from __future__ import annotations

from typing import Any

from sandbox.stripe import balance
from sandbox.stripe.account import Account
from sandbox.stripe.errors import ApiError
from sandbox.stripe.forms import check_known, get_bool, get_dict, merge_metadata
from sandbox.stripe.state import new_id

# Stripe gives the merchant about a week to respond in test mode as well.
RESPONSE_WINDOW_SECONDS = 7 * 24 * 3600
OPEN = ("warning_needs_response", "needs_response", "under_review", "warning_under_review")
ANSWERABLE = ("warning_needs_response", "needs_response")
EVIDENCE_FIELDS = (
    "access_activity_log",
    "billing_address",
    "cancellation_policy",
    "cancellation_policy_disclosure",
    "cancellation_rebuttal",
    "customer_communication",
    "customer_email_address",
    "customer_name",
    "customer_purchase_ip",
    "customer_signature",
    "duplicate_charge_documentation",
    "duplicate_charge_explanation",
    "duplicate_charge_id",
    "product_description",
    "receipt",
    "refund_policy",
    "refund_policy_disclosure",
    "refund_refusal_explanation",
    "service_date",
    "service_documentation",
    "shipping_address",
    "shipping_carrier",
    "shipping_date",
    "shipping_documentation",
    "shipping_tracking_number",
    "uncategorized_file",
    "uncategorized_text",
)
WINNING_EVIDENCE = "winning_evidence"
LOSING_EVIDENCE = "losing_evidence"


def open_dispute(
    acct: Account, charge_id: str, reason: str, *, inquiry: bool = False
) -> dict[str, Any] | None:
    """The card network opens a dispute (or an inquiry) on a charge (runs off-request, so no
    `event.request`)."""
    with acct.store.lock:
        charge = acct.store.tables["charges"].get(charge_id)
        if charge is None or charge["disputed"]:
            return None  # the sandbox was reset meanwhile, or already disputed
        dispute_id = new_id("dp")
        txns = [] if inquiry else [_withdraw(acct, charge, dispute_id)]
        now = acct.clock.now()
        dispute = acct.store.add(
            "disputes",
            {
                "id": dispute_id,
                "object": "dispute",
                "amount": charge["amount_captured"],
                "balance_transactions": txns,
                "charge": charge_id,
                "created": now,
                "currency": charge["currency"],
                "evidence": dict.fromkeys(EVIDENCE_FIELDS),
                "evidence_details": {
                    "due_by": now + RESPONSE_WINDOW_SECONDS,
                    "has_evidence": False,
                    "past_due": False,
                    "submission_count": 0,
                },
                "is_charge_refundable": inquiry,
                "livemode": False,
                "metadata": {},
                "payment_intent": charge["payment_intent"],
                "reason": reason,
                "status": "warning_needs_response" if inquiry else "needs_response",
            },
        )
        charge["disputed"] = True
        acct.events.emit("charge.dispute.created", dispute)
        if txns:
            acct.events.emit("charge.dispute.funds_withdrawn", dispute)
        return dispute


def _withdraw(acct: Account, charge: dict[str, Any], dispute_id: str) -> dict[str, Any]:
    return balance.record(
        acct,
        amount=-charge["amount_captured"],
        fee=balance.DISPUTE_FEE_MINOR,
        currency=charge["currency"],
        source=dispute_id,
        type_="adjustment",
        reporting_category="dispute",
        description=f"Chargeback withdrawal for {charge['id']}",
        fee_description="Dispute fee",
    )


def update_dispute(acct: Account, dispute_id: str, params: dict[str, Any]) -> dict[str, Any]:
    check_known(params, {"evidence", "metadata", "submit", "expand"})
    evidence = get_dict(params, "evidence") or {}
    check_known(evidence, set(EVIDENCE_FIELDS))
    submit = get_bool(params, "submit", default=True)
    with acct.store.lock:
        dispute = acct.store.get("disputes", dispute_id)
        if dispute["status"] not in ANSWERABLE:
            raise ApiError.state(
                f"This dispute is {dispute['status']} and can no longer be updated.",
                code="dispute_already_closed" if dispute["status"] not in OPEN else None,
            )
        dispute["metadata"] = merge_metadata(dispute["metadata"], get_dict(params, "metadata"))
        for name, value in evidence.items():
            dispute["evidence"][name] = value or None
        if evidence:
            dispute["evidence_details"]["has_evidence"] = True
        if not submit:
            acct.events.emit("charge.dispute.updated", dispute)
            return dispute
        dispute["evidence_details"]["submission_count"] += 1
        text = dispute["evidence"].get("uncategorized_text") or ""
        inquiry = _is_inquiry(dispute)
        if WINNING_EVIDENCE in text:
            _close(acct, dispute, "warning_closed" if inquiry else "won")
        elif LOSING_EVIDENCE in text and not inquiry:
            _close(acct, dispute, "lost")
        else:
            dispute["status"] = "warning_under_review" if inquiry else "under_review"
            acct.events.emit("charge.dispute.updated", dispute)
        return dispute


def _is_inquiry(dispute: dict[str, Any]) -> bool:
    return dispute["status"].startswith("warning_")


def close_dispute(acct: Account, dispute_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """The merchant accepts the dispute: it is lost (an inquiry just closes)."""
    check_known(params, {"expand"})
    with acct.store.lock:
        dispute = acct.store.get("disputes", dispute_id)
        if dispute["status"] not in OPEN:
            raise ApiError.state(
                f"This dispute is already {dispute['status']}.", code="dispute_already_closed"
            )
        _close(acct, dispute, "warning_closed" if _is_inquiry(dispute) else "lost")
        return dispute


def resolve(acct: Account, dispute_id: str, outcome: str) -> dict[str, Any]:
    """Sandbox control: the card network decides. An inquiry ends `warning_closed`; a
    chargeback ends `won` or `lost`."""
    with acct.store.lock:
        dispute = acct.store.get("disputes", dispute_id)
        if dispute["status"] not in OPEN:
            raise ApiError.state(f"This dispute is already {dispute['status']}.")
        if _is_inquiry(dispute) != (outcome == "warning_closed"):
            raise ApiError.state(
                f"A dispute that is {dispute['status']} cannot end {outcome}.", param="outcome"
            )
        _close(acct, dispute, outcome)
        return dispute


def _close(acct: Account, dispute: dict[str, Any], outcome: str) -> None:
    dispute["status"] = outcome
    if outcome == "won":
        txn = balance.record(
            acct,
            amount=dispute["amount"],
            fee=-balance.DISPUTE_FEE_MINOR,
            currency=dispute["currency"],
            source=dispute["id"],
            type_="adjustment",
            reporting_category="dispute_reversal",
            description=f"Chargeback reversal for {dispute['charge']}",
            fee_description="Dispute fee refund",
        )
        dispute["balance_transactions"].append(txn)
        acct.events.emit("charge.dispute.funds_reinstated", dispute)
    acct.events.emit("charge.dispute.closed", dispute)

"""Refunds, disputes and the balance transactions they post, through the real `stripe` SDK."""

from __future__ import annotations

import time

import pytest
import stripe

from tests.sandbox.stripe_support import Control


def _paid(sdk: stripe.StripeClient, card: str = "pm_card_visa", amount: int = 5000):
    return sdk.v1.payment_intents.create(
        {"amount": amount, "currency": "usd", "payment_method": card, "confirm": True}
    )


def _dispute_for(sdk: stripe.StripeClient, pi_id: str, timeout: float = 5) -> stripe.Dispute:
    """The card network opens the dispute shortly after the payment, like Stripe."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sdk.v1.disputes.list({"payment_intent": pi_id}).data
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError("no dispute opened")


def _types(sdk: stripe.StripeClient) -> list[str]:
    return [e.type for e in reversed(list(sdk.v1.events.list({"limit": 100}).data))]


def test_partial_then_full_refund_then_over_refund(sdk):
    pi = _paid(sdk)
    first = sdk.v1.refunds.create(
        {
            "payment_intent": pi.id,
            "amount": 1500,
            "reason": "requested_by_customer",
            "metadata": {"k": "v"},
        }
    )
    assert first.id.startswith("re_") and first.status == "succeeded" and first.amount == 1500
    assert first.charge == pi.latest_charge and first.metadata["k"] == "v"
    charge = sdk.v1.charges.retrieve(pi.latest_charge)
    assert charge.amount_refunded == 1500 and not charge.refunded

    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.refunds.create({"charge": charge.id, "amount": 3501})
    assert (info.value.http_status, info.value.code, info.value.param) == (
        400,
        "amount_too_large",
        "amount",
    )

    rest = sdk.v1.refunds.create({"charge": charge.id})  # no amount: what is left
    assert rest.amount == 3500
    charge = sdk.v1.charges.retrieve(charge.id)
    assert charge.amount_refunded == 5000 and charge.refunded
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.refunds.create({"payment_intent": pi.id, "amount": 1})
    assert info.value.code == "charge_already_refunded"

    refunds = sdk.v1.refunds.list({"payment_intent": pi.id})
    assert [r.id for r in refunds.data] == [rest.id, first.id]
    assert sdk.v1.refunds.retrieve(first.id).amount == 1500
    txns = sdk.v1.balance_transactions.list({"type": "refund"}).data
    assert sorted(t.amount for t in txns) == [-3500, -1500]
    assert {t.source for t in txns} == {first.id, rest.id}
    assert _types(sdk)[-4:] == [
        "charge.refunded",
        "refund.created",
        "charge.refunded",
        "refund.created",
    ]


def test_refund_needs_a_successful_payment(sdk):
    pi = sdk.v1.payment_intents.create({"amount": 500, "currency": "usd"})
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.refunds.create({"payment_intent": pi.id})
    assert info.value.code == "charge_not_refundable"
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.refunds.create({})
    assert info.value.param == "payment_intent"


def test_dispute_opened_after_payment_then_won_with_evidence(sdk):
    pi = _paid(sdk, "pm_card_createDispute", amount=10000)
    assert pi.status == "succeeded"
    dispute = _dispute_for(sdk, pi.id)
    assert dispute.id.startswith("dp_") and dispute.status == "needs_response"
    assert dispute.amount == 10000 and dispute.charge == pi.latest_charge
    assert dispute.reason == "fraudulent"
    withdrawal = dispute.balance_transactions[0]
    assert (withdrawal.amount, withdrawal.fee, withdrawal.net) == (-10000, 1500, -11500)
    assert sdk.v1.charges.retrieve(pi.latest_charge).disputed
    created = sdk.v1.events.list({"type": "charge.dispute.created"}).data
    assert len(created) == 1 and created[0].request.id is None  # not caused by an API request

    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.refunds.create({"payment_intent": pi.id})
    assert info.value.code == "charge_disputed"

    won = sdk.v1.disputes.update(
        dispute.id, {"evidence": {"uncategorized_text": "winning_evidence"}}
    )
    assert won.status == "won" and won.evidence.uncategorized_text == "winning_evidence"
    reversal = won.balance_transactions[1]
    assert (reversal.amount, reversal.fee, reversal.net) == (10000, -1500, 11500)
    assert reversal.reporting_category == "dispute_reversal"
    assert _types(sdk)[-4:] == [
        "charge.dispute.created",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated",
        "charge.dispute.closed",
    ]
    # Balance transactions for the dispute's source: withdrawal and reversal net to +fee back.
    by_source = sdk.v1.balance_transactions.list({"source": dispute.id}).data
    assert sum(t.net for t in by_source) == 0
    with pytest.raises(stripe.InvalidRequestError):
        sdk.v1.disputes.update(dispute.id, {"evidence": {"uncategorized_text": "more"}})


def test_dispute_lost_with_losing_evidence(sdk):
    pi = _paid(sdk, "pm_card_createDispute")
    dispute = _dispute_for(sdk, pi.id)
    lost = sdk.v1.disputes.update(
        dispute.id, {"evidence": {"uncategorized_text": "losing_evidence"}}
    )
    assert lost.status == "lost" and len(lost.balance_transactions) == 1
    assert _types(sdk)[-1] == "charge.dispute.closed"
    assert "charge.dispute.funds_reinstated" not in _types(sdk)


def test_dispute_under_review_then_resolved_by_control_and_close(sdk, base):
    pi = _paid(sdk, "pm_card_createDispute")
    dispute = _dispute_for(sdk, pi.id)
    reviewed = sdk.v1.disputes.update(
        dispute.id, {"evidence": {"customer_name": "Ada"}, "metadata": {"case": "1"}}
    )
    assert reviewed.status == "under_review" and reviewed.evidence_details.submission_count == 1
    resolved = Control(base).post(f"/disputes/{dispute.id}/resolve", outcome="won").json()
    assert resolved["status"] == "won" and len(resolved["balance_transactions"]) == 2

    other = _dispute_for(sdk, _paid(sdk, "pm_card_createDispute").id)
    closed = sdk.v1.disputes.close(other.id)
    assert closed.status == "lost"
    with pytest.raises(stripe.InvalidRequestError):
        sdk.v1.disputes.close(other.id)
    assert {d.id for d in sdk.v1.disputes.list().data} == {dispute.id, other.id}
    assert sdk.v1.disputes.retrieve(other.id).status == "lost"


def test_balance_transactions_per_charge_list_and_retrieve(sdk):
    a, b = _paid(sdk, amount=1000), _paid(sdk, amount=333)
    charges = sdk.v1.balance_transactions.list({"type": "charge"}).data
    assert [(t.amount, t.fee) for t in charges] == [(333, 40), (1000, 59)]  # 2.9% rounded + 30
    charge_b = sdk.v1.charges.retrieve(b.latest_charge)
    txn = sdk.v1.balance_transactions.retrieve(charge_b.balance_transaction)
    assert txn.source == charge_b.id and txn.net == 293
    assert sdk.v1.balance_transactions.list({"source": a.latest_charge}).data[0].amount == 1000


def test_an_inquiry_moves_no_money_and_ends_warning_closed(sdk, base):
    """Stripe: an inquiry (`pm_card_createDisputeInquiry`) opens `warning_needs_response`
    without withdrawing funds: no balance transactions, no `charge.dispute.funds_*` event."""
    pi = _paid(sdk, "pm_card_createDisputeInquiry")
    inquiry = _dispute_for(sdk, pi.id)
    assert inquiry.status == "warning_needs_response" and inquiry.balance_transactions == []
    reviewed = sdk.v1.disputes.update(inquiry.id, {"evidence": {"customer_name": "Ada"}})
    assert reviewed.status == "warning_under_review"
    control = Control(base)
    assert control.post(f"/disputes/{inquiry.id}/resolve", outcome="won").status_code == 400
    closed = control.post(f"/disputes/{inquiry.id}/resolve", outcome="warning_closed").json()
    assert closed["status"] == "warning_closed" and closed["balance_transactions"] == []
    types = _types(sdk)
    assert not [t for t in types if t.startswith("charge.dispute.funds_")]
    assert types[-1] == "charge.dispute.closed"
    assert sdk.v1.balance_transactions.list({"source": inquiry.id}).data == []


def test_a_refund_of_a_refund_fail_card_fails_later(sdk):
    """Stripe's pm_card_refundFail: the refund starts `succeeded`, then fails; the money comes
    back with a `refund_failure` balance transaction and `refund.failed` is sent."""
    pi = _paid(sdk, "pm_card_refundFail", amount=2000)
    refund = sdk.v1.refunds.create({"payment_intent": pi.id, "amount": 700})
    assert refund.status == "succeeded" and refund.failure_reason is None
    deadline = time.monotonic() + 5
    while sdk.v1.refunds.retrieve(refund.id).status != "failed":
        assert time.monotonic() < deadline, "the refund never failed"
        time.sleep(0.05)
    failed = sdk.v1.refunds.retrieve(refund.id)
    assert failed.failure_reason == "expired_or_canceled_card"
    back = sdk.v1.balance_transactions.retrieve(failed.failure_balance_transaction)
    assert (back.amount, back.type, back.source) == (700, "refund_failure", refund.id)
    assert sdk.v1.charges.retrieve(pi.latest_charge).amount_refunded == 0
    assert _types(sdk)[-5:] == [
        "charge.refunded",
        "refund.created",
        "charge.refund.updated",
        "refund.updated",
        "refund.failed",
    ]


def test_the_control_api_fails_any_refund_once(sdk, base):
    pi = _paid(sdk, amount=1000)
    refund = sdk.v1.refunds.create({"payment_intent": pi.id})
    control = Control(base)
    failed = control.post(f"/refunds/{refund.id}/fail", failure_reason="lost_or_stolen_card")
    assert failed.json()["status"] == "failed"
    assert control.post(f"/refunds/{refund.id}/fail").json()["status"] == "failed"
    assert _types(sdk).count("refund.failed") == 1
    # The amount is refundable again.
    assert sdk.v1.refunds.create({"payment_intent": pi.id}).amount == 1000

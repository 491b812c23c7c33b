"""PaymentIntents and Charges through the real `stripe` SDK against a real `dotshop sandbox`."""

from __future__ import annotations

import base64

import httpx
import pytest
import stripe

from tests.sandbox.stripe_support import API_KEY, Control


def _pi(sdk: stripe.StripeClient, **params) -> stripe.PaymentIntent:
    return sdk.v1.payment_intents.create(params={"amount": 2000, "currency": "usd", **params})


def _event_types(sdk: stripe.StripeClient) -> list[str]:
    """Oldest first."""
    return [e.type for e in reversed(list(sdk.v1.events.list({"limit": 100}).data))]


def test_create_then_confirm_succeeds_with_charge_and_balance_transaction(sdk):
    pi = _pi(sdk, metadata={"order_id": "ord_1"}, description="order 1", receipt_email="a@b.c")
    assert pi.id.startswith("pi_") and pi.object == "payment_intent"
    assert pi.status == "requires_payment_method" and pi.livemode is False
    assert pi.client_secret.startswith(f"{pi.id}_secret_")
    assert pi.metadata.to_dict() == {"order_id": "ord_1"}

    pi = sdk.v1.payment_intents.confirm(pi.id, {"payment_method": "pm_card_visa"})
    assert pi.status == "succeeded" and pi.amount_received == 2000
    assert pi.payment_method.startswith("pm_") and pi.payment_method != "pm_card_visa"

    charge = sdk.v1.charges.retrieve(pi.latest_charge, {"expand": ["balance_transaction"]})
    assert charge.id.startswith("ch_") and charge.status == "succeeded" and charge.paid
    assert charge.captured and charge.amount_captured == 2000 and charge.amount_refunded == 0
    assert charge.payment_intent == pi.id and charge.metadata["order_id"] == "ord_1"
    assert charge.payment_method_details.card.last4 == "4242"
    txn = charge.balance_transaction
    assert txn.id.startswith("txn_") and txn.type == "charge" and txn.source == charge.id
    assert (txn.amount, txn.fee, txn.net) == (2000, 88, 1912)  # 2.9% of 2000 = 58, + 30

    assert _event_types(sdk) == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
    ]
    pm = sdk.v1.payment_methods.retrieve(pi.payment_method)
    assert pm.card.brand == "visa"


def test_create_with_confirm_and_mastercard(sdk):
    pi = _pi(sdk, payment_method="pm_card_mastercard", confirm=True, payment_method_types=["card"])
    assert pi.status == "succeeded"
    expanded = sdk.v1.payment_intents.retrieve(pi.id, {"expand": ["latest_charge"]})
    assert expanded.latest_charge.payment_method_details.card.brand == "mastercard"


@pytest.mark.parametrize(
    ("card", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
def test_declined_card_is_402_and_pi_back_to_requires_payment_method(sdk, card, decline_code):
    pi = _pi(sdk)
    with pytest.raises(stripe.CardError) as info:
        sdk.v1.payment_intents.confirm(pi.id, {"payment_method": card})
    err = info.value
    assert err.http_status == 402 and err.code == "card_declined"
    assert err.error.decline_code == decline_code
    assert err.error.payment_intent.id == pi.id
    assert err.request_id.startswith("req_")

    pi = sdk.v1.payment_intents.retrieve(pi.id)
    assert pi.status == "requires_payment_method" and pi.payment_method is None
    assert pi.last_payment_error.decline_code == decline_code
    failed = sdk.v1.charges.retrieve(pi.latest_charge)
    assert failed.status == "failed" and failed.failure_code == "card_declined"
    assert failed.balance_transaction is None
    assert _event_types(sdk)[-2:] == ["charge.failed", "payment_intent.payment_failed"]

    # The customer tries another card: the same PaymentIntent succeeds.
    pi = sdk.v1.payment_intents.confirm(pi.id, {"payment_method": "pm_card_visa"})
    assert pi.status == "succeeded" and pi.last_payment_error is None


@pytest.mark.parametrize(
    "card", ["pm_card_authenticationRequired", "pm_card_threeDSecure2Required"]
)
def test_three_d_secure_card_requires_action_then_authenticates(sdk, base, card):
    pi = _pi(sdk, payment_method=card, confirm=True, return_url="https://shop.test/return")
    assert pi.status == "requires_action"
    assert pi.next_action.type == "redirect_to_url"
    assert pi.next_action.redirect_to_url.return_url == "https://shop.test/return"
    assert "payment_intent.requires_action" in _event_types(sdk)

    done = Control(base).post(f"/payment_intents/{pi.id}/authenticate", outcome="succeed").json()
    assert done["status"] == "succeeded"
    charge = sdk.v1.charges.retrieve(done["latest_charge"])
    assert charge.payment_method_details.card.three_d_secure.result == "authenticated"


def test_failed_authentication_returns_to_requires_payment_method(sdk, base):
    pi = _pi(sdk, payment_method="pm_card_authenticationRequired", confirm=True)
    assert pi.status == "requires_action" and pi.next_action.type == "use_stripe_sdk"
    Control(base).post(f"/payment_intents/{pi.id}/authenticate", outcome="fail")
    pi = sdk.v1.payment_intents.retrieve(pi.id)
    assert pi.status == "requires_payment_method"
    assert pi.last_payment_error.code == "payment_intent_authentication_failure"
    assert pi.latest_charge is None
    assert _event_types(sdk)[-1] == "payment_intent.payment_failed"


def test_request_three_d_secure_any_challenges_a_normal_card(sdk, base):
    """EU checkout asks for 3DS on every card; Stripe test mode then always challenges."""
    pi = _pi(
        sdk,
        currency="eur",
        payment_method_options={"card": {"request_three_d_secure": "any"}},
    )
    assert pi.payment_method_options.card.request_three_d_secure == "any"
    pi = sdk.v1.payment_intents.confirm(pi.id, {"payment_method": "pm_card_visa"})
    assert pi.status == "requires_action"
    Control(base).post(f"/payment_intents/{pi.id}/authenticate", outcome="succeed")
    assert sdk.v1.payment_intents.retrieve(pi.id).status == "succeeded"


def test_manual_capture_partial(sdk):
    pi = _pi(sdk, capture_method="manual", payment_method="pm_card_visa", confirm=True)
    assert pi.status == "requires_capture" and pi.amount_capturable == 2000
    charge = sdk.v1.charges.retrieve(pi.latest_charge)
    assert not charge.captured and charge.balance_transaction is None

    pi = sdk.v1.payment_intents.capture(pi.id, {"amount_to_capture": 1500})
    assert pi.status == "succeeded" and pi.amount_received == 1500 and pi.amount_capturable == 0
    charge = sdk.v1.charges.retrieve(pi.latest_charge, {"expand": ["balance_transaction"]})
    assert charge.captured and charge.amount_captured == 1500
    assert charge.balance_transaction.amount == 1500
    assert _event_types(sdk)[-3:] == [
        "payment_intent.amount_capturable_updated",
        "charge.captured",
        "payment_intent.succeeded",
    ]
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_intents.capture(pi.id)
    assert info.value.code == "payment_intent_unexpected_state"


def test_capture_more_than_authorized_is_rejected(sdk):
    pi = _pi(sdk, capture_method="manual", payment_method="pm_card_visa", confirm=True)
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_intents.capture(pi.id, {"amount_to_capture": 2001})
    assert info.value.code == "amount_too_large" and info.value.param == "amount_to_capture"


def test_cancel(sdk):
    pi = _pi(sdk)
    pi = sdk.v1.payment_intents.cancel(pi.id, {"cancellation_reason": "abandoned"})
    assert pi.status == "canceled" and pi.cancellation_reason == "abandoned" and pi.canceled_at
    assert _event_types(sdk)[-1] == "payment_intent.canceled"
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_intents.confirm(pi.id, {"payment_method": "pm_card_visa"})
    assert info.value.code == "payment_intent_unexpected_state"

    done = _pi(sdk, payment_method="pm_card_visa", confirm=True)
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_intents.cancel(done.id)
    assert info.value.code == "payment_intent_unexpected_state"


def test_cancel_uncaptured_releases_the_authorization(sdk):
    pi = _pi(sdk, capture_method="manual", payment_method="pm_card_visa", confirm=True)
    pi = sdk.v1.payment_intents.cancel(pi.id)
    assert pi.status == "canceled" and pi.amount_capturable == 0
    charge = sdk.v1.charges.retrieve(pi.latest_charge)
    assert charge.refunded and not charge.captured


def test_update(sdk):
    pi = _pi(sdk, metadata={"a": "1", "b": "2"})
    pi = sdk.v1.payment_intents.update(pi.id, {"amount": 2500, "metadata": {"a": "", "c": "3"}})
    assert pi.amount == 2500 and pi.metadata.to_dict() == {"b": "2", "c": "3"}
    pi = sdk.v1.payment_intents.confirm(pi.id, {"payment_method": "pm_card_visa"})
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_intents.update(pi.id, {"amount": 1})
    assert info.value.code == "payment_intent_unexpected_state"
    # Metadata stays editable after success, as on Stripe.
    assert sdk.v1.payment_intents.update(pi.id, {"metadata": {"d": "4"}}).metadata["d"] == "4"


def test_validation_errors(sdk):
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_intents.create({"currency": "usd"})
    assert (info.value.http_status, info.value.code, info.value.param) == (
        400,
        "parameter_missing",
        "amount",
    )
    with pytest.raises(stripe.InvalidRequestError) as info:
        _pi(sdk, amount=0)
    assert info.value.param == "amount"
    with pytest.raises(stripe.InvalidRequestError) as info:
        _pi(sdk, amount=100_000_000)
    assert info.value.code == "amount_too_large"
    with pytest.raises(stripe.InvalidRequestError) as info:
        _pi(sdk, amount_typo=3)
    assert info.value.code == "parameter_unknown"
    with pytest.raises(stripe.InvalidRequestError) as info:
        _pi(sdk, payment_method="pm_nope", confirm=True)
    assert info.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_intents.retrieve("pi_missing")
    assert (info.value.http_status, info.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_intents.confirm(_pi(sdk).id)  # no payment method
    assert info.value.code == "payment_intent_unexpected_state"


def test_authentication(base):
    bad = stripe.StripeClient("sk_test_wrong", base_addresses={"api": base})
    with pytest.raises(stripe.AuthenticationError) as info:
        bad.v1.payment_intents.list()
    assert info.value.http_status == 401
    assert httpx.get(f"{base}/v1/payment_intents").status_code == 401
    # curl -u sk_test_...: (Basic auth, key as the user name) works like Bearer.
    basic = base64.b64encode(f"{API_KEY}:".encode()).decode()
    response = httpx.get(f"{base}/v1/payment_intents", headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 200 and response.json()["object"] == "list"
    assert response.headers["request-id"].startswith("req_")
    assert (
        httpx.get(
            f"{base}/v1/nothing_here", headers={"Authorization": f"Bearer {API_KEY}"}
        ).status_code
        == 404
    )


def test_list_pagination_and_filters(sdk, base):
    ids = [_pi(sdk, amount=100 + i).id for i in range(7)]
    newest_first = list(reversed(ids))
    page = sdk.v1.payment_intents.list({"limit": 3})
    assert [p.id for p in page.data] == newest_first[:3] and page.has_more
    assert page.url == "/v1/payment_intents"
    page2 = sdk.v1.payment_intents.list({"limit": 3, "starting_after": page.data[-1].id})
    assert [p.id for p in page2.data] == newest_first[3:6] and page2.has_more
    back = sdk.v1.payment_intents.list({"limit": 2, "ending_before": newest_first[3]})
    assert [p.id for p in back.data] == newest_first[1:3] and back.has_more
    assert [
        p.id for p in sdk.v1.payment_intents.list({"limit": 2}).auto_paging_iter()
    ] == newest_first

    created = sdk.v1.payment_intents.retrieve(ids[0]).created
    assert len(sdk.v1.payment_intents.list({"created": {"gte": created}, "limit": 100}).data) == 7
    assert sdk.v1.payment_intents.list({"created": {"lt": created}}).data == []
    with pytest.raises(stripe.InvalidRequestError):
        sdk.v1.payment_intents.list({"limit": 101})

    paid = _pi(sdk, payment_method="pm_card_visa", confirm=True)
    charges = sdk.v1.charges.list({"payment_intent": paid.id})
    assert [c.id for c in charges.data] == [paid.latest_charge]


def test_search_by_metadata_and_status(sdk):
    a = _pi(sdk, metadata={"order_id": "ord_a"}, payment_method="pm_card_visa", confirm=True)
    _pi(sdk, metadata={"order_id": "ord_b"})
    found = sdk.v1.payment_intents.search({"query": "metadata['order_id']:'ord_a'"})
    assert found.object == "search_result" and [p.id for p in found.data] == [a.id]
    found = sdk.v1.payment_intents.search({"query": "status:'succeeded'"})
    assert [p.id for p in found.data] == [a.id]
    found = sdk.v1.payment_intents.search(
        {"query": "metadata['order_id']:'ord_a' OR metadata['order_id']:'ord_b'", "limit": 1}
    )
    assert len(found.data) == 1 and found.has_more and found.next_page
    rest = sdk.v1.payment_intents.search(
        {
            "query": "metadata['order_id']:'ord_a' OR metadata['order_id']:'ord_b'",
            "page": found.next_page,
        }
    )
    assert len(rest.data) == 1 and not rest.has_more
    assert sdk.v1.payment_intents.search({"query": "amount>1999 AND status:'succeeded'"}).data
    charges = sdk.v1.charges.search({"query": f"payment_intent:'{a.id}'"})
    assert [c.id for c in charges.data] == [a.latest_charge]
    with pytest.raises(stripe.InvalidRequestError):
        sdk.v1.payment_intents.search({"query": "status:'x' AND amount>1 OR currency:'usd'"})

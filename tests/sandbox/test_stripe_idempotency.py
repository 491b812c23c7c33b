"""Idempotency-Key on the sandbox Stripe behaves like Stripe's: replay, reuse, in flight, expiry,
and SDK retries after lost responses that still create exactly one PaymentIntent."""

from __future__ import annotations

import random
import threading
import time

import httpx
import pytest
import stripe

from tests.sandbox.stripe_support import API_KEY, Control, client

FORM = {"amount": "1200", "currency": "usd", "metadata[order_id]": "ord_1"}


def _post(base: str, path: str, key: str | None, data: dict[str, str]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    if key:
        headers["Idempotency-Key"] = key
    return httpx.post(f"{base}{path}", data=data, headers=headers, timeout=30)


def _count(control: Control, table: str = "payment_intents") -> int:
    return control.state()["counts"][table]


def test_same_key_same_params_replays_the_exact_response(base, control):
    first = _post(base, "/v1/payment_intents", "k-1", FORM)
    again = _post(base, "/v1/payment_intents", "k-1", FORM)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["original-request"] == first.headers["request-id"]
    assert again.headers["request-id"] != first.headers["request-id"]
    assert _count(control) == 1
    # Without a key, the same request creates a second PaymentIntent.
    _post(base, "/v1/payment_intents", None, FORM)
    assert _count(control) == 2


def test_same_key_different_params_or_endpoint_is_an_idempotency_error(base, control):
    sdk = client(base)
    params = {"amount": 1200, "currency": "usd"}
    pi = sdk.v1.payment_intents.create(params, {"idempotency_key": "k-2"})
    with pytest.raises(stripe.IdempotencyError) as info:
        sdk.v1.payment_intents.create({**params, "amount": 1300}, {"idempotency_key": "k-2"})
    assert info.value.http_status == 400
    with pytest.raises(stripe.IdempotencyError):
        sdk.v1.refunds.create({"payment_intent": pi.id}, {"idempotency_key": "k-2"})
    assert _count(control) == 1


def test_request_in_flight_with_the_same_key_is_409(base, control):
    control.faults(extra={"stripe_processing_ms": 700})
    results: list[httpx.Response] = []
    first = threading.Thread(
        target=lambda: results.append(_post(base, "/v1/payment_intents", "k-3", FORM))
    )
    first.start()
    time.sleep(0.25)
    conflict = _post(base, "/v1/payment_intents", "k-3", FORM)
    first.join()
    assert conflict.status_code == 409
    assert conflict.json()["error"]["type"] == "idempotency_error"
    assert results[0].status_code == 200
    control.faults(extra={})
    replay = _post(base, "/v1/payment_intents", "k-3", FORM)
    assert replay.content == results[0].content
    assert _count(control) == 1


def test_card_errors_are_stored_and_replayed(base, control):
    declined = {**FORM, "payment_method": "pm_card_chargeDeclined", "confirm": "true"}
    first = _post(base, "/v1/payment_intents", "k-4", declined)
    again = _post(base, "/v1/payment_intents", "k-4", declined)
    assert first.status_code == again.status_code == 402
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert _count(control) == 1 and _count(control, "charges") == 1


def test_validation_errors_are_not_stored(base, control):
    missing = _post(base, "/v1/payment_intents", "k-5", {"currency": "usd"})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "parameter_missing"
    fixed = _post(base, "/v1/payment_intents", "k-5", FORM)
    assert fixed.status_code == 200 and "idempotent-replayed" not in fixed.headers


def test_keys_expire_after_24_hours(base, control):
    assert _post(base, "/v1/payment_intents", "k-6", FORM).status_code == 200
    control.post("/clock/advance", seconds=23 * 3600)
    assert _post(base, "/v1/payment_intents", "k-6", {**FORM, "amount": "5"}).status_code == 400
    control.post("/clock/advance", seconds=3600)
    fresh = _post(base, "/v1/payment_intents", "k-6", {**FORM, "amount": "5"})
    assert fresh.status_code == 200 and fresh.json()["amount"] == 5


def _seed_failing_first_request_only(rate: float) -> int:
    """A seed whose fault rolls fail the first request and pass the second (rolls are drawn
    from `random.Random(seed)`, one per request, as `sandbox.faults` documents)."""
    for seed in range(1000):
        rolls = random.Random(seed)
        if rolls.random() < rate <= rolls.random():
            return seed
    raise AssertionError("no such seed")


@pytest.mark.parametrize(("phase", "replayed"), [("after", True), ("before", False)])
def test_sdk_retry_after_injected_500_creates_one_payment_intent(base, control, phase, replayed):
    control.reset(seed=_seed_failing_first_request_only(0.5))
    control.faults(error_rate=0.5, error_status=500, error_phase=phase)
    sdk = client(base, retries=2)
    pi = sdk.v1.payment_intents.create({"amount": 700, "currency": "usd"})
    control.faults(error_rate=0.0)
    assert _count(control) == 1
    assert control.state()["payment_intents"][0]["id"] == pi.id
    headers = pi.last_response.headers
    assert (headers.get("idempotent-replayed") == "true") is replayed
    # The SDK generated one key and sent it on both attempts: the event records it.
    created = sdk.v1.events.list({"type": "payment_intent.created"}).data[0]
    assert created.request.idempotency_key == headers["idempotency-key"]

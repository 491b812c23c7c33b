"""One Idempotency-Key, one checkout, in every region (CONTRACT.md: "A key is the storefront's,
not a region's"). Two real API processes, `us` and `eu`, share one database and the sandbox
Stripe: a shopper's retry that fails over to the other region gets the first region's stored
answer byte for byte (its currency), 409 `idempotency_key_in_use` while the first is still in
flight, and never a second order or PaymentIntent. Same for cancel."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.e2e.conftest import Stack, wait_for
from tests.e2e.helpers import checkout, skus_with_stock

REGIONS = ("us", "eu")


def intents_for(stack: Stack, order_id: str) -> list[str]:
    """The PaymentIntents Stripe holds for one of our orders, listed through the SDK."""
    listed = stack.stripe_client().v1.payment_intents.list({"limit": 100})
    return [
        pi.id
        for pi in listed.auto_paging_iter()
        if pi.metadata.to_dict().get("order_id") == order_id
    ]


def orders_count(stack: Stack) -> int:
    return stack.scalar("SELECT count(*) FROM orders")


def cancel(stack: Stack, checkout_id: str, key: str, region: str) -> httpx.Response:
    return httpx.post(
        f"{stack.api[region]}/v1/checkouts/{checkout_id}/cancel",
        headers={"Idempotency-Key": key},
        timeout=60,
    )


def until_answered(stack: Stack, lines: list[dict], key: str, region: str) -> httpx.Response:
    """Retry while the key is in flight elsewhere, as a client would."""

    def answered() -> httpx.Response | None:
        response = checkout(stack, lines, key=key, region=region)
        if response.status_code == 409:
            assert response.json()["error"]["code"] == "idempotency_key_in_use", response.text
            return None
        return response

    return wait_for(answered, timeout=60, interval=0.2)


def test_a_retry_in_the_other_region_replays_the_first_regions_checkout(stack: Stack) -> None:
    lines = [{"sku": skus_with_stock(stack)[0], "quantity": 1}]
    key = str(uuid.uuid4())
    before = orders_count(stack)

    first = checkout(stack, lines, key=key, region="us")
    failover = checkout(stack, lines, key=key, region="eu")

    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert (failover.status_code, failover.headers["Idempotent-Replayed"]) == (201, "true")
    assert failover.content == first.content  # byte for byte, in the first region's currency
    body = first.json()
    assert body["currency"] == "usd"
    assert orders_count(stack) == before + 1
    assert intents_for(stack, body["order_id"]) == [body["payment"]["payment_intent_id"]]


def test_a_key_in_flight_in_one_region_is_in_use_in_the_other(stack: Stack) -> None:
    lines = [{"sku": skus_with_stock(stack)[1], "quantity": 1}]
    key = str(uuid.uuid4())
    before = orders_count(stack)
    first: list[httpx.Response] = []
    # Stripe slow (under the e2e API's 1.5 s Stripe timeout): `eu` asks while `us` is between
    # creating the order and recording its PaymentIntent.
    stack.faults("stripe", latency_ms=800, path_prefix="/v1/payment_intents")
    try:
        thread = threading.Thread(
            target=lambda: first.append(checkout(stack, lines, key=key, region="us"))
        )
        thread.start()
        wait_for(
            lambda: stack.scalar(
                "SELECT count(*) FROM idempotency_key WHERE key = :k "
                "AND locked_at IS NOT NULL AND recovery_point = 'order_created'",
                k=key,
            ),
            interval=0.01,
        )
        meanwhile = checkout(stack, lines, key=key, region="eu")
        thread.join(60)
    finally:
        stack.clear_faults()

    assert meanwhile.status_code == 409, meanwhile.text
    assert meanwhile.json()["error"]["code"] == "idempotency_key_in_use"
    (done,) = first
    assert done.status_code == 201, done.text
    again = checkout(stack, lines, key=key, region="eu")
    assert (again.status_code, again.content) == (201, done.content)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert orders_count(stack) == before + 1
    assert intents_for(stack, done.json()["order_id"]) == [
        done.json()["payment"]["payment_intent_id"]
    ]


def test_the_same_key_sent_to_both_regions_at_once_makes_one_checkout(stack: Stack) -> None:
    sku = skus_with_stock(stack)[2]
    keys = [str(uuid.uuid4()) for _ in range(4)]
    lines = [{"sku": sku, "quantity": 1}]
    before = orders_count(stack)

    def race(key: str) -> dict[str, httpx.Response]:
        barrier = threading.Barrier(len(REGIONS))

        def send(region: str) -> httpx.Response:
            barrier.wait()
            return checkout(stack, lines, key=key, region=region)

        with ThreadPoolExecutor(len(REGIONS)) as pool:
            return dict(zip(REGIONS, pool.map(send, REGIONS), strict=True))

    for key in keys:
        raced = race(key)
        for response in raced.values():
            assert response.status_code in (201, 409), response.text
            if response.status_code == 409:
                assert response.json()["error"]["code"] == "idempotency_key_in_use"
        final = {region: until_answered(stack, lines, key, region) for region in REGIONS}
        assert final["us"].status_code == 201, final["us"].text
        assert final["us"].content == final["eu"].content
        for response in raced.values():
            if response.status_code == 201:
                assert response.content == final["us"].content
        body = final["us"].json()
        assert intents_for(stack, body["order_id"]) == [body["payment"]["payment_intent_id"]]
    assert orders_count(stack) == before + len(keys)


def test_a_cancel_retried_in_the_other_region_is_replayed(stack: Stack) -> None:
    lines = [{"sku": skus_with_stock(stack)[3], "quantity": 1}]
    created = checkout(stack, lines, region="us").json()
    key = str(uuid.uuid4())

    first = cancel(stack, created["id"], key, "us")
    failover = cancel(stack, created["id"], key, "eu")

    assert first.status_code == 200, first.text
    assert first.json()["status"] == "cancelled"
    assert (failover.status_code, failover.headers["Idempotent-Replayed"]) == (200, "true")
    assert failover.content == first.content
    cancelled = stack.scalar(
        "SELECT count(*) FROM order_event WHERE order_id = :o AND kind = 'cancelled'",
        o=created["order_id"],
    )
    assert cancelled == 1

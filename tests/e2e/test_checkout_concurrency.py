"""Concurrency and retries against the real API process: a spike on one scarce SKU, and every
checkout retried with its key while Stripe fails — then the invariants, checked in our database
and in Stripe."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.e2e.conftest import Stack
from tests.e2e.helpers import ADDRESS, checkout, skus_with_stock, stock

SPIKE_CLIENTS = 200
SPIKE_STOCK = 25


def test_spike_never_oversells(stack: Stack) -> None:
    sku = skus_with_stock(stack)[-1]
    stack.set_stock(sku, SPIKE_STOCK)
    baseline = stack.scalar("SELECT count(*) FROM orders")
    lowest: list[int] = []
    stop = threading.Event()

    def watch_sellable() -> None:
        while not stop.is_set():
            available, reserved, committed = stock(stack, sku)
            lowest.append(available - reserved - committed)

    watcher = threading.Thread(target=watch_sellable)
    watcher.start()
    barrier = threading.Barrier(SPIKE_CLIENTS)

    def one(_: int) -> httpx.Response:
        barrier.wait()
        return checkout(stack, [{"sku": sku, "quantity": 1}])

    try:
        with ThreadPoolExecutor(SPIKE_CLIENTS) as pool:
            responses = list(pool.map(one, range(SPIKE_CLIENTS)))
    finally:
        stop.set()
        watcher.join()
    outcomes = Counter((r.status_code, r.json().get("error", {}).get("code")) for r in responses)
    assert outcomes == {
        (201, None): SPIKE_STOCK,
        (409, "insufficient_stock"): SPIKE_CLIENTS - SPIKE_STOCK,
    }
    assert stack.scalar("SELECT count(*) FROM orders") - baseline == SPIKE_STOCK
    assert stock(stack, sku) == (SPIKE_STOCK, SPIKE_STOCK, 0)
    assert lowest and min(lowest) >= 0
    rejected = next(r for r in responses if r.status_code == 409).json()["error"]
    assert [short["sku"] for short in rejected["skus"]] == [sku]


def test_retries_under_stripe_faults_make_one_order_and_one_payment_intent(stack: Stack) -> None:
    skus = skus_with_stock(stack, minimum=10)[:4]
    stack.faults(
        "stripe",
        error_rate=0.5,
        error_status=500,
        error_phase="after",
        path_prefix="/v1/payment_intents",
    )
    keys = [str(uuid.uuid4()) for _ in range(16)]
    bodies = {key: [{"sku": skus[i % len(skus)], "quantity": 1}] for i, key in enumerate(keys)}
    firsts: dict[str, str] = {}
    try:
        for _ in range(3):  # every checkout sent three times with its key
            for key in keys:
                response = checkout(stack, bodies[key], key=key)
                assert response.status_code in (201, 503), response.text
                if response.status_code == 503:
                    assert response.headers["Retry-After"]
                    assert response.json()["error"]["code"] == "provider_unavailable"
                else:
                    firsts.setdefault(key, response.json()["order_id"])
                    assert response.json()["order_id"] == firsts[key]
        stack.faults(
            "stripe",
            error_rate=0.2,
            error_status=500,
            error_phase="before",
            timeout_rate=0.2,
            timeout_seconds=2.0,
            path_prefix="/v1/payment_intents",
        )
        for key in keys:
            checkout(stack, bodies[key], key=key)
    finally:
        stack.clear_faults()
    final = {key: checkout(stack, bodies[key], key=key) for key in keys}
    assert all(r.status_code == 201 for r in final.values())
    order_ids = {key: r.json()["order_id"] for key, r in final.items()}
    for key, first in firsts.items():
        assert order_ids[key] == first
    assert len(set(order_ids.values())) == len(keys)
    # One order per key in our database, one PaymentIntent per order in Stripe.
    rows = stack.sql(
        "SELECT id, payment_intent_id FROM orders WHERE id = ANY(:ids)",
        ids=list(order_ids.values()),
    )
    assert len(rows) == len(keys) and all(pi for _, pi in rows)
    state = httpx.get(f"{stack.stripe_base}/_sandbox/state", timeout=10).json()
    per_order = Counter(
        pi["metadata"].get("order_id")
        for pi in state["payment_intents"]
        if pi["metadata"].get("order_id") in order_ids.values()
    )
    assert per_order == {oid: 1 for oid in order_ids.values()}


def test_same_key_different_body_is_rejected(stack: Stack) -> None:
    sku = skus_with_stock(stack)[0]
    key = str(uuid.uuid4())
    assert checkout(stack, [{"sku": sku, "quantity": 1}], key=key).status_code == 201
    before = stack.scalar("SELECT count(*) FROM orders")
    again = checkout(stack, [{"sku": sku, "quantity": 2}], key=key)
    assert again.status_code == 422 and again.json()["error"]["code"] == "idempotency_key_reused"
    assert stack.scalar("SELECT count(*) FROM orders") == before
    # Same request with keys in another order and other whitespace is the same request.
    reordered = {
        "shipping_address": ADDRESS,
        "lines": [{"quantity": 1, "sku": sku}],
        "email": "ada@example.com",
    }
    raw = httpx.post(
        f"{stack.api['us']}/v1/checkouts",
        content=json.dumps(reordered, indent=3).encode(),
        headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        timeout=30,
    )
    assert raw.status_code == 201 and raw.headers["Idempotent-Replayed"] == "true"

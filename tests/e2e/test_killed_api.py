"""A checkout API process killed (SIGKILL) in the middle of a burst of checkouts: after a
restart, every client retrying with its Idempotency-Key ends with exactly one order and one
PaymentIntent, and no stock is leaked or double-held."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Stack, wait_for
from tests.e2e.helpers import checkout, skus_with_stock

pytestmark = pytest.mark.slow

CLIENTS = 8
KEYS = 48
# Long enough for an abandoned key's lock to time out (stripe timeout 1.5 s in the e2e API).
RETRY_DEADLINE_SECONDS = 60


def test_killed_api_mid_burst_converges_on_retry(stack: Stack, tmp_path: Path) -> None:
    skus = skus_with_stock(stack, minimum=15)[:4]
    before = {
        sku: stack.sql("SELECT reserved FROM stock WHERE sku = :s", s=sku)[0][0] for sku in skus
    }
    orders_before = stack.scalar("SELECT count(*) FROM orders")
    keys = [f"kill-{uuid.uuid4()}" for _ in range(KEYS)]
    lines = {key: [{"sku": skus[i % len(skus)], "quantity": 1}] for i, key in enumerate(keys)}
    first_try: dict[str, int | str] = {}
    some_done = threading.Event()

    def first(key: str) -> None:
        try:
            first_try[key] = checkout(stack, lines[key], key=key).status_code
        except httpx.HTTPError as exc:
            first_try[key] = type(exc).__name__
        if sum(1 for v in first_try.values() if v == 201) >= CLIENTS:
            some_done.set()

    # Slow Stripe down so that requests in flight spend their time inside the checkout, between
    # creating the order and recording its PaymentIntent.
    stack.faults("stripe", latency_ms=300, path_prefix="/v1/payment_intents")
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(first, key) for key in keys]
            assert some_done.wait(30)  # some checkouts done, others in flight right now
            # Kill while at least one request is between its phases: order created, key
            # locked, the Stripe call under way.
            wait_for(
                lambda: stack.scalar(
                    "SELECT count(*) FROM idempotency_key WHERE key LIKE 'kill-%' "
                    "AND locked_at IS NOT NULL AND recovery_point = 'order_created'"
                ),
                timeout=30,
                interval=0.01,
            )
            stack.api_processes["us"].kill()
            for future in futures:
                future.result()
    finally:
        stack.clear_faults()
    outcomes = Counter(v if isinstance(v, str) else str(v) for v in first_try.values())
    assert outcomes["201"] > 0, outcomes  # the burst was under way when the process died
    assert sum(n for k, n in outcomes.items() if k != "201") > 0, outcomes  # and it hit some

    # Requests that were inside a phase when the process died left their keys locked, their
    # orders created and their stock held: the restarted API must resume exactly those.
    stranded = stack.scalar(
        "SELECT count(*) FROM idempotency_key WHERE locked_at IS NOT NULL AND key LIKE 'kill-%'"
    )
    assert stranded > 0
    stack.start_api("us", str(tmp_path / "api-us-restarted.log"))
    final: dict[str, dict] = {}
    deadline = time.monotonic() + RETRY_DEADLINE_SECONDS
    pending = list(keys)
    in_use_seen: set[str] = set()
    while pending and time.monotonic() < deadline:
        still = []
        for key in pending:
            response = checkout(stack, lines[key], key=key)
            if response.status_code == 201:
                final[key] = response.json()
            else:  # only "in flight elsewhere" until the dead process's lock times out
                assert response.status_code == 409, response.text
                assert response.json()["error"]["code"] == "idempotency_key_in_use"
                in_use_seen.add(key)
                still.append(key)
        pending = still
        if pending:
            time.sleep(1)
    assert not pending, f"{len(pending)} keys never completed"
    assert len(in_use_seen) == stranded  # each stranded key waited for its lock, then resumed

    order_ids = [body["order_id"] for body in final.values()]
    assert len(set(order_ids)) == KEYS
    assert stack.scalar("SELECT count(*) FROM orders") - orders_before == KEYS  # no orphans
    state = httpx.get(f"{stack.stripe_base}/_sandbox/state", timeout=10).json()
    per_order = Counter(
        (pi.get("metadata") or {}).get("order_id") for pi in state["payment_intents"]
    )
    assert all(per_order[oid] == 1 for oid in order_ids)
    for body in final.values():
        assert body["payment"]["payment_intent_id"] == stack.scalar(
            "SELECT payment_intent_id FROM orders WHERE id = :o", o=body["order_id"]
        )
    # Every unit held belongs to exactly one live order's reservation.
    for sku in skus:
        reserved = stack.scalar("SELECT reserved FROM stock WHERE sku = :s", s=sku)
        held = stack.scalar(
            "SELECT coalesce(sum(quantity), 0) FROM reservation WHERE sku = :s AND status = 'held'",
            s=sku,
        )
        assert reserved == held
        assert reserved - before[sku] == sum(1 for key in keys if lines[key][0]["sku"] == sku)

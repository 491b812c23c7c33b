"""Issue 10 ("A checkout as cheap as the floor"): what the storefront's hot routes cost in round
trips to PostgreSQL, counted on the wire so that a regression fails CI.

The real app runs in-process on the real engine (`core.db.make_engine`: no pre-ping per
checkout), against a real PostgreSQL and the real sandbox Stripe process. Every connection the
engine opens is traced by libpq (psycopg's `pgconn.trace`): each Query or Sync the client sends
is answered by exactly one ReadyForQuery, so counting those counts round trips, BEGIN, COMMIT
and pings included, whatever code path sent them.
"""

from __future__ import annotations

import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import httpx
import psycopg
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, event, make_url
from sqlalchemy.orm import Session

from checkout_api.app import create_app
from core import catalog, inventory, payments
from core.catalog import ProductData, VariantData
from core.db import make_engine, transaction
from core.models import Order
from core.settings import Settings
from core.stripe_gateway import StripeGateway
from sandbox.options import DEFAULT_STRIPE_API_KEY
from tests.processes import Process

# Issue 10: a checkout (new key, 201) costs at most this many round trips in total.
CHECKOUT_ROUND_TRIPS = 6
# What it costs now (core/checkout.py): the key with phase 1, then the PaymentIntent recorded.
CHECKOUT_ROUND_TRIPS_NOW = 2
SKU = "RT-HOT-0001"
HANDLE = "round-trip-tee"
BODY = {
    "email": "ada@example.com",
    "lines": [{"sku": SKU, "quantity": 1}],
    "shipping_address": {
        "name": "Ada Lovelace",
        "line1": "1 Main St",
        "city": "New York",
        "postal_code": "10001",
        "country": "US",
    },
}
# What SQLAlchemy's pool pre-ping sends on psycopg.
PING = re.compile(r'Query\t "(;|select 1)"', re.I)
# What takes the hot stock row: the conditional UPDATE itself, or the function running phase 1.
TAKES_STOCK = re.compile(r"UPDATE stock\b|dotshop_checkout_phase1\(", re.I)


@dataclass(frozen=True)
class RoundTrip:
    sent: str  # the frontend messages of the trip (query text, Parse/Bind...)
    in_transaction: bool  # whether a transaction was still open when the server answered

    def __str__(self) -> str:
        return f"{'T' if self.in_transaction else 'I'} {self.sent[:160]}"


class WireTrace:
    """libpq traces of every connection the engine opens; `take()` returns the round trips
    since the last `take()`."""

    def __init__(self, engine: Engine) -> None:
        self.traced: list[tuple[psycopg.Connection, IO[str]]] = []
        self.read_up_to: dict[int, int] = {}
        engine.pool.dispose()  # every connection from now on is a traced one
        event.listen(engine, "connect", self._trace)

    def _trace(self, dbapi_connection: Any, _record: Any) -> None:
        sink = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed with the test process
        self._start(dbapi_connection, sink)
        self.traced.append((dbapi_connection, sink))

    @staticmethod
    def _start(conn: psycopg.Connection, sink: IO[str]) -> None:
        conn.pgconn.trace(sink.fileno())
        conn.pgconn.set_trace_flags(
            psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE
        )

    def take(self) -> list[RoundTrip]:
        trips: list[RoundTrip] = []
        for conn, sink in self.traced:
            if conn.closed:
                continue
            conn.pgconn.untrace()  # flushes libpq's buffer into the file
            sink.seek(self.read_up_to.get(id(sink), 0))
            text = sink.read()
            self.read_up_to[id(sink)] = sink.tell()
            self._start(conn, sink)
            trips.extend(_round_trips(text))
        return trips


def _round_trips(trace: str) -> list[RoundTrip]:
    # One message per line, except that query text keeps its own newlines: a line that does not
    # start with a direction continues the message before it.
    messages: list[tuple[str, str]] = []
    for line in trace.splitlines():
        direction, _, rest = line.partition("\t")
        if direction in ("F", "B"):
            messages.append((direction, rest.split("\t", 1)[-1]))
        elif messages:
            messages[-1] = (messages[-1][0], f"{messages[-1][1]} {line.strip()}")
    trips, sent = [], []
    for direction, message in messages:
        if direction == "F" and message.startswith(("Query", "Parse")):
            sent.append(message)
        elif direction == "B" and message.startswith("ReadyForQuery"):
            trips.append(RoundTrip(" | ".join(sent), message.rstrip().endswith(("T", "E"))))
            sent = []
    return trips


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def traced(db_url: str) -> Iterator[tuple[Engine, WireTrace]]:
    engine = make_engine(db_url, pool_size=4)
    with transaction(engine) as session:
        catalog.upsert_product(
            session,
            ProductData(
                shopify_product_id=4242,
                handle=HANDLE,
                title="Round-trip tee",
                updated_at=datetime(2026, 11, 26, tzinfo=UTC),
                variants=[VariantData(SKU, "M", 4242, 4242, {"usd": 2500, "eur": 2300})],
            ),
        )
        inventory.apply_shopify_level(session, SKU, 1000, datetime(2026, 11, 26, tzinfo=UTC))
    try:
        yield engine, WireTrace(engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def client(traced: tuple[Engine, WireTrace], sandbox: Process) -> Iterator[TestClient]:
    engine, _ = traced
    stripe_base = sandbox.urls["stripe"]
    settings = Settings(
        region="us",
        primary_region="us",
        stripe_api_key=DEFAULT_STRIPE_API_KEY,
        stripe_api_base=stripe_base,
    )
    app = create_app(settings, engine, StripeGateway(DEFAULT_STRIPE_API_KEY, stripe_base))
    with TestClient(app) as test_client:
        # Open the pool's connection (its start-up exchange is not a checkout's cost).
        assert test_client.get(f"/v1/products/{HANDLE}").status_code == 200
        yield test_client


@pytest.fixture
def trips(traced: tuple[Engine, WireTrace], client: TestClient) -> WireTrace:
    wire = traced[1]
    wire.take()
    return wire


def _checkout(client: TestClient, key: str) -> Any:
    return client.post("/v1/checkouts", json=BODY, headers={"Idempotency-Key": key})


def _show(trips: list[RoundTrip]) -> str:
    return "\n".join(f"{n}. {trip}" for n, trip in enumerate(trips, 1))


# ---------------------------------------------------------------------------------- tests


def test_a_checkout_costs_at_most_six_round_trips(client: TestClient, trips: WireTrace) -> None:
    """Issue 10: POST /v1/checkouts with a new key (201, PaymentIntent made by the sandbox)
    costs at most 6 round trips, with no pool pre-ping among them."""
    response = _checkout(client, str(uuid.uuid4()))

    assert response.status_code == 201, response.text
    taken = trips.take()
    assert len(taken) <= CHECKOUT_ROUND_TRIPS, _show(taken)
    assert len(taken) == CHECKOUT_ROUND_TRIPS_NOW, _show(taken)
    assert not any(PING.fullmatch(t.sent) for t in taken), _show(taken)


def test_the_hot_stock_row_is_locked_for_one_round_trip(
    client: TestClient, trips: WireTrace
) -> None:
    """Issue 10: the statement that takes stock either ends its transaction in the same round
    trip (one statement, or one server-side function) or is the last before COMMIT."""
    assert _checkout(client, str(uuid.uuid4())).status_code == 201
    taken = trips.take()

    takes = [n for n, trip in enumerate(taken) if TAKES_STOCK.search(trip.sent)]
    assert len(takes) == 1, _show(taken)
    (at,) = takes
    ends_here = not taken[at].in_transaction
    commit_next = at + 1 < len(taken) and taken[at + 1].sent.startswith('Query\t "COMMIT"')
    assert ends_here or commit_next, _show(taken)


def _succeeded_event(stripe_base: str, payment_intent_id: str) -> dict[str, Any]:
    """Confirm the PaymentIntent at the sandbox and read back the event Stripe made of it."""
    auth = {"Authorization": f"Bearer {DEFAULT_STRIPE_API_KEY}"}
    confirmed = httpx.post(
        f"{stripe_base}/v1/payment_intents/{payment_intent_id}/confirm",
        data={"payment_method": "pm_card_visa"},
        headers=auth,
        timeout=10,
    )
    assert confirmed.json()["status"] == "succeeded", confirmed.text
    events = httpx.get(
        f"{stripe_base}/v1/events",
        params={"type": "payment_intent.succeeded", "limit": 100},
        headers=auth,
        timeout=10,
    ).json()["data"]
    (event,) = [e for e in events if e["data"]["object"]["id"] == payment_intent_id]
    return event


def test_the_payment_webhook_takes_the_stock_row_last(
    traced: tuple[Engine, WireTrace], client: TestClient, trips: WireTrace, sandbox: Process
) -> None:
    """Issue 10's rule for the hot row, applied to `payment_intent.succeeded`: the held units
    move to committed on the stock row after the order, ledger and outbox writes, so every
    checkout of the SKU waits for that lock for at most the few round trips before COMMIT."""
    created = _checkout(client, str(uuid.uuid4()))
    assert created.status_code == 201, created.text
    order_id = created.json()["order_id"]
    event = _succeeded_event(sandbox.urls["stripe"], created.json()["payment"]["payment_intent_id"])
    trips.take()

    with transaction(traced[0]) as session:
        assert payments.accept_and_apply(session, event) == "processed"

    taken = trips.take()
    stock = [n for n, trip in enumerate(taken) if re.search(r"UPDATE stock\b", trip.sent)]
    assert len(stock) == 1, _show(taken)
    commit = next(n for n, trip in enumerate(taken) if 'Query\t "COMMIT"' in trip.sent)
    later = taken[stock[0] + 1 : commit]
    assert not any(re.search(r"ledger|outbox|UPDATE orders", t.sent) for t in later), _show(taken)
    assert len(later) <= 3, _show(taken)
    with Session(traced[0]) as session:
        assert session.get_one(Order, order_id).status == "paid"


def test_a_replayed_key_is_answered_from_the_stored_response_in_one_round_trip(
    client: TestClient, trips: WireTrace
) -> None:
    """DESIGN.md "Idempotency": the same key and body answer the stored response byte for byte;
    issue 10: reading it is one round trip."""
    key = str(uuid.uuid4())
    first = _checkout(client, key)
    trips.take()

    again = _checkout(client, key)

    assert again.status_code == first.status_code == 201
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    taken = trips.take()
    assert len(taken) == 1, _show(taken)


def test_a_product_read_is_one_round_trip(client: TestClient, trips: WireTrace) -> None:
    """Issue 10: GET /v1/products/{handle} is one statement in one round trip."""
    response = client.get(f"/v1/products/{HANDLE}")

    assert response.status_code == 200
    assert [v["sku"] for v in response.json()["variants"]] == [SKU]
    taken = trips.take()
    assert len(taken) == 1, _show(taken)


def test_a_connection_the_server_closed_is_replaced_without_a_ping(
    db_url: str, client: TestClient, trips: WireTrace
) -> None:
    """Issue 10: no pre-ping per request, yet a pooled connection the server hung up on (a
    restart, an operator's pg_terminate_backend) is never handed to a request: its goodbye is
    waiting on the socket, the pool sees it at checkout and opens a fresh connection."""
    with psycopg.connect(_libpq(db_url), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        for _ in range(100):  # the backends exit asynchronously
            others = admin.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            if others == (0,):
                break
            time.sleep(0.05)
    trips.take()

    response = client.get(f"/v1/products/{HANDLE}")

    assert response.status_code == 200, response.text
    taken = trips.take()
    assert len(taken) == 1, _show(taken)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

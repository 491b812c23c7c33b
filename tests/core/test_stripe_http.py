"""The libcurl transport under the stripe SDK (core/stripe_http.py) keeps the SDK's guarantees:
a response lost on the wire is a connection error the SDK retries with the same
Idempotency-Key, so Stripe makes one PaymentIntent; an unreachable Stripe is an outage."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from core.errors import ProviderUnavailable
from core.stripe_gateway import PaymentIntentRef, StripeGateway
from sandbox.options import DEFAULT_STRIPE_API_KEY
from tests.processes import free_port
from tests.sandbox.stripe_support import Control


def _read_message(sock: socket.socket) -> bytes:
    """One HTTP/1.1 message (head and a Content-Length body) from `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


@contextmanager
def losing_first_responses(upstream: str, lose: int) -> Iterator[str]:
    """A loopback proxy to `upstream`, one exchange per connection, that forwards every
    request but, for the first `lose` connections, closes the client's socket instead of
    passing the answer back: the server did the work and the client never hears of it."""
    host, port = upstream.removeprefix("http://").split(":")
    listener = socket.create_server(("127.0.0.1", 0))
    seen = 0

    def exchange(client: socket.socket, drop: bool) -> None:
        with client, socket.create_connection((host, int(port)), timeout=5) as server:
            client.settimeout(5)
            server.sendall(_read_message(client))
            answer = _read_message(server)  # the sandbox has processed the request
            if not drop:
                client.sendall(answer)

    def accept() -> None:
        nonlocal seen
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            seen += 1
            threading.Thread(target=exchange, args=(client, seen <= lose), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def _create(gateway: StripeGateway, order_id: str, amount: int) -> PaymentIntentRef:
    return gateway.create_payment_intent(
        order_id=order_id,
        amount=amount,
        currency="usd",
        email=f"{order_id}@example.com",
        payment_method_types=["card"],
        require_sca=False,
    )


def test_a_response_lost_on_the_wire_is_retried_with_its_key_and_makes_one_payment_intent(
    stripe_base: str,
) -> None:
    """Stripe's documented retry contract: a request whose outcome is unknown (the connection
    broke) is safe to retry with the same Idempotency-Key, and the SDK does so itself."""
    control = Control(stripe_base)
    control.reset()
    with losing_first_responses(stripe_base, lose=1) as proxy:
        gateway = StripeGateway(DEFAULT_STRIPE_API_KEY, proxy, timeout=5, max_network_retries=2)
        pi = _create(gateway, "ord_wire", 1200)
    state = control.state()
    assert state["counts"]["payment_intents"] == 1
    assert state["payment_intents"][0]["id"] == pi.id and pi.amount == 1200


def test_an_unreachable_stripe_is_an_outage_after_the_sdk_retries() -> None:
    gateway = StripeGateway(
        DEFAULT_STRIPE_API_KEY, f"http://127.0.0.1:{free_port()}", timeout=2, max_network_retries=1
    )
    with pytest.raises(ProviderUnavailable):
        _create(gateway, "ord_down", 100)

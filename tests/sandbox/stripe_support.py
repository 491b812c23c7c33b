"""Helpers shared by the sandbox Stripe tests (no tests here): an SDK client pointed at the
sandbox, a raw control-API client, and a real HTTP webhook receiver on loopback."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import stripe

from sandbox.options import DEFAULT_STRIPE_API_KEY
from tests.processes import free_port

API_KEY = DEFAULT_STRIPE_API_KEY


def client(base: str, retries: int = 0, **kwargs: Any) -> stripe.StripeClient:
    return stripe.StripeClient(
        API_KEY, base_addresses={"api": base}, max_network_retries=retries, **kwargs
    )


class Control:
    """The /_sandbox control API."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=30)

    def reset(self, seed: int | None = None) -> None:
        body = {} if seed is None else {"seed": seed}
        assert self.http.post("/_sandbox/reset", json=body).status_code == 200

    def faults(self, **config: Any) -> dict[str, Any]:
        response = self.http.post("/_sandbox/faults", json=config)
        assert response.status_code == 200, response.text
        return response.json()

    def state(self) -> dict[str, Any]:
        return self.http.get("/_sandbox/state").json()

    def wait_webhooks(self, timeout: float = 20) -> bool:
        return self.http.post("/_sandbox/webhooks/wait", json={"timeout": timeout}).json()["idle"]

    def deliveries(self) -> list[dict[str, Any]]:
        return self.http.get("/_sandbox/webhooks").json()["deliveries"]

    def post(self, path: str, **body: Any) -> httpx.Response:
        return self.http.post(f"/_sandbox{path}", json=body)


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]


@dataclass
class Receiver:
    """A webhook receiver: records every request; answers `fail_first` of them with 500."""

    fail_first: int = 0
    received: list[Received] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    receiver.received.append(Received(body, dict(self.headers.items())))
                    failing = len(receiver.received) <= receiver.fail_first
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/stripe"

    def events(self, secret: str) -> list[stripe.Event]:
        """Every delivery, verified the way our API verifies them."""
        return [
            stripe.Webhook.construct_event(r.body, r.headers["Stripe-Signature"], secret)
            for r in self.received
        ]

    def wait_for(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.received) >= count, f"got {len(self.received)} of {count} deliveries"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""Fixtures for the checks tests: a real HTTP receiver in the test process, standing in for
whatever a webhook points at (our alert webhook's consumer, Alertmanager's webhook receiver)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class Receiver:
    """Records every JSON body POSTed to it (`raw` and parsed `bodies`). The next `fail_next`
    requests are answered 503 and counted in `refused`, as a sink that is down would."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.bodies: list[Any] = []
        self.fail_next = 0
        self.refused = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    failing = receiver.fail_next > 0
                    if failing:
                        receiver.fail_next -= 1
                        receiver.refused += 1
                    else:
                        receiver.raw.append(data)
                        receiver.bodies.append(json.loads(data))
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 20) -> list[Any]:
        """The bodies received, once `predicate` holds for them (fails after `timeout` s)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                bodies = list(self.bodies)
            if predicate(bodies):
                return bodies
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver: condition not met in {timeout}s; got {bodies}")
            time.sleep(0.1)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()

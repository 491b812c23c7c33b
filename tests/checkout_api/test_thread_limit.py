"""Each API worker runs at most DOTSHOP_API_THREADS requests in its threads at once (issue 10:
with anyio's default of 40, 64 clients made two workers' threads fight over their GILs and
over two cores' worth of database connections)."""

from __future__ import annotations

import threading
import time

import anyio
import anyio.to_thread
from litestar import get
from litestar.testing import TestClient
from sqlalchemy import Engine

from checkout_api.app import create_app
from core.settings import Settings
from core.stripe_gateway import StripeGateway


@get("/_test/threads")
async def busiest() -> dict[str, int]:
    """Start 12 blocking jobs at once in the app's event loop; report how many ran together."""
    lock, running, most = threading.Lock(), [0], [0]

    def job() -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    async with anyio.create_task_group() as group:
        for _ in range(12):
            group.start_soon(anyio.to_thread.run_sync, job)
    limiter = anyio.to_thread.current_default_thread_limiter()
    return {"tokens": int(limiter.total_tokens), "most_at_once": most[0]}


def test_a_worker_runs_at_most_api_threads_blocking_calls_at_once(engine: Engine) -> None:
    settings = Settings(api_threads=3, stripe_api_key="sk_test_unused")
    gateway = StripeGateway.from_settings(settings)
    with TestClient(create_app(settings, engine, gateway, route_handlers=[busiest])) as client:
        assert client.get("/_test/threads").json() == {"tokens": 3, "most_at_once": 3}

"""Quick checkout latency against a running stack (`dotshop up --detach` first).

Prints p50/p99 of POST /v1/checkouts (reserve + order + Stripe PaymentIntent, idempotent) and,
as the baseline measured in the same run, of GET /v1/products/{handle} (one read query), with
their ratio. Sequential requests from one client on 127.0.0.1; stops by itself.

    python bench/checkout_latency.py [N]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import httpx

ADDRESS = {
    "name": "Bench",
    "line1": "1 Main St",
    "city": "NYC",
    "postal_code": "10001",
    "country": "US",
}


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


def main(n: int = 200) -> None:
    stack = json.loads((Path(".dotshop") / "stack.json").read_text())
    api = stack["api"]["us"]
    with httpx.Client(base_url=api, timeout=30) as client:
        products = client.get("/v1/products", params={"limit": 100}).json()["data"]
        variants = sorted(
            ((v["available"], v["sku"], p["handle"]) for p in products for v in p["variants"]),
            reverse=True,
        )
        _, sku, handle = variants[0]
        reads, writes = [], []
        for _ in range(n):
            started = time.perf_counter()
            assert client.get(f"/v1/products/{handle}").status_code == 200
            reads.append(time.perf_counter() - started)
            started = time.perf_counter()
            response = client.post(
                "/v1/checkouts",
                json={
                    "email": "bench@example.com",
                    "lines": [{"sku": sku, "quantity": 1}],
                    "shipping_address": ADDRESS,
                },
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            writes.append(time.perf_counter() - started)
            if response.status_code == 201:  # give the unit back so stock lasts the run
                client.post(
                    f"/v1/checkouts/{response.json()['id']}/cancel",
                    headers={"Idempotency-Key": str(uuid.uuid4())},
                )
            else:
                raise SystemExit(f"checkout failed: {response.status_code} {response.text}")
    for name, samples in (("GET /v1/products/{handle}", reads), ("POST /v1/checkouts", writes)):
        print(
            f"{name:28s} n={len(samples)} p50={percentile(samples, 50) * 1000:7.2f} ms "
            f"p99={percentile(samples, 99) * 1000:7.2f} ms"
        )
    print(
        f"checkout / product read: p50 x{percentile(writes, 50) / percentile(reads, 50):.1f}, "
        f"p99 x{percentile(writes, 99) / percentile(reads, 99):.1f}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)

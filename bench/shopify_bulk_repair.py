"""Time the full Shopify repair (bulk operation -> JSONL -> projection in SKU order) for a large
catalog: the sandbox Shopify runs in this process, its store seeded directly (no API calls),
and the repair runs against an embedded PostgreSQL, exactly as `dotshop sync --full` does.

    python bench/shopify_bulk_repair.py --variants 100000
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

from core import embedded_pg, migrate, shopify_sync
from core.db import engine_for
from core.shopify_gateway import API_VERSION, ShopifyGateway
from sandbox.options import DEFAULT_SHOPIFY_ACCESS_TOKEN, DEFAULT_SHOPIFY_SHOP, SandboxOptions
from sandbox.shopify.app import create_app
from sandbox.shopify.store import minor_to_money
from tests.processes import free_port

VARIANTS_PER_PRODUCT = 10


def seed(store: object, variants: int) -> None:
    with store._lock:  # type: ignore[attr-defined]
        for p in range(variants // VARIANTS_PER_PRODUCT):
            store._create_product(  # type: ignore[attr-defined]
                {
                    "title": f"Bench product {p:06d}",
                    "body_html": "<p>bench</p>",
                    "product_type": "bench",
                    "handle": f"bench-{p:06d}",
                    "images": [{"src": f"https://cdn.example/bench/{p}.jpg"}],
                    "variants": [
                        {
                            "title": f"V{v}",
                            "sku": f"BENCH-{p:06d}-{v}",
                            "price": minor_to_money(1000 + v),
                            "inventory_quantity": 5 + v,
                            "presentment_prices_minor": {"usd": 1000 + v, "eur": 900 + v},
                        }
                        for v in range(VARIANTS_PER_PRODUCT)
                    ],
                }
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", type=int, default=100_000)
    args = parser.parse_args()

    app = create_app(SandboxOptions(demo_catalog=False))
    started = time.monotonic()
    seed(app.sandbox.store, args.variants)
    print(f"seeded {args.variants} variants in {time.monotonic() - started:.1f}s")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    pgdata = Path(tempfile.mkdtemp(prefix="dotshop-bulk-")) / "pg"
    url = embedded_pg.ensure_running(pgdata)
    try:
        migrate.upgrade(url)
        engine = engine_for(url)
        gateway = ShopifyGateway(
            shop=DEFAULT_SHOPIFY_SHOP,
            site=f"http://127.0.0.1:{port}/admin/api/{API_VERSION}",
            access_token=DEFAULT_SHOPIFY_ACCESS_TOKEN,
            timeout=600,
        )
        phases: dict[str, float] = {}

        def progress(phase: str, done: int, total: int) -> None:
            phases.setdefault(phase, time.monotonic())
            if done == total:
                print(f"  {phase}: {total} in {time.monotonic() - phases[phase]:.1f}s")

        started = time.monotonic()
        shopify_sync.repair(engine, gateway, [1], full=True, progress=progress)
        print(f"full repair of {args.variants} variants: {time.monotonic() - started:.1f}s")
    finally:
        server.should_exit = True
        embedded_pg.stop(pgdata)


if __name__ == "__main__":
    main()

"""The parts a benchmark run needs, started by the run itself on loopback and stopped at its
end whatever happens: a private embedded PostgreSQL (migrated, in a temporary folder), the
sandbox Stripe and Shopify, the checkout API (N workers, floor route on) and the outbox relay.

The catalog is the sandbox's demo catalog (for the read and end-to-end arms) plus synthetic
products created in the sandbox Shopify for the stock arms: one hot SKU, SPREAD SKUs, and one
SKU with little stock that the oversell arm sells out.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import Engine

from core import embedded_pg, shopify_sync
from core.db import make_engine
from core.migrate import upgrade
from core.shopify_gateway import API_VERSION, ShopifyGateway
from dotshop.stack import stripe_webhook_flags
from dotshop.supervisor import Child, Supervisor, free_port

STRIPE_KEY = "sk_test_dotshop_bench"
WEBHOOK_SECRET = "whsec_dotshop_bench"
SHOPIFY_TOKEN = "shpat_dotshop_bench"
SHOPIFY_SECRET = "shpss_dotshop_bench"
SHOP = "dotshop-demo.myshopify.com"
LOCATION_ID = 1

HOT_SKU = "BENCH-HOT"
SPREAD_PREFIX = "BENCH-"
SPREAD = 1000
SELLOUT_SKU = "BENCH-SELLOUT"
# Enough stock that no arm runs out (except the oversell arm's SKU, which must).
PLENTY = 100_000_000
# Demo SKUs whose Shopify stock is raised so that paid flows never run short there either.
FLOW_SKUS = 8
# Shopify's REST API takes at most 100 variants per product.
VARIANTS_PER_PRODUCT = 100


@dataclass
class BenchStack:
    workdir: Path
    database_url: str
    engine: Engine
    api: str
    stripe_base: str
    shopify_site: str
    flow_skus: list[str] = field(default_factory=list)
    product_handle: str = ""


def spread_skus() -> list[str]:
    return [f"{SPREAD_PREFIX}{n:04d}" for n in range(1, SPREAD + 1)]


@contextlib.contextmanager
def running(
    *, workers: int, sellout_stock: int, say: Callable[[str], None], before_api: Callable
) -> Iterator[BenchStack]:
    """Start everything, call `before_api(stack)` (the pgbench arms: they want the server's
    connections to themselves), start the API and the relay, yield; stop it all at the end."""
    workdir = Path(tempfile.mkdtemp(prefix="dsb"))  # short: PostgreSQL's socket path limit
    workdir.chmod(0o755)  # the embedded server's own user must reach its folder
    pgdata = workdir / "pg"
    logs = workdir / "logs"
    logs.mkdir()
    supervisor: Supervisor | None = None
    engine: Engine | None = None
    ok = False
    try:
        say(f"starting PostgreSQL, sandbox, API ({workers} workers) and relay in {workdir}")
        database_url = embedded_pg.ensure_running(pgdata)
        upgrade(database_url)
        engine = make_engine(database_url, pool_size=4)
        api_port, stripe_port, shopify_port = free_port(), free_port(), free_port()
        api = f"http://127.0.0.1:{api_port}"
        stripe_base = f"http://127.0.0.1:{stripe_port}"
        shopify_base = f"http://127.0.0.1:{shopify_port}"
        shopify_site = f"{shopify_base}/admin/api/{API_VERSION}"
        env = {
            "DATABASE_URL": database_url,
            "DOTSHOP_HOME": str(workdir),  # never a developer's running stack
            "STRIPE_API_KEY": STRIPE_KEY,
            "STRIPE_API_BASE": stripe_base,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "SHOPIFY_SITE": shopify_site,
            "SHOPIFY_ACCESS_TOKEN": SHOPIFY_TOKEN,
            "SHOPIFY_API_SECRET": SHOPIFY_SECRET,
            "SHOPIFY_SHOP": SHOP,
            "DOTSHOP_REGION": "us",
        }
        sandbox = Child(
            "sandbox",
            [
                "sandbox",
                f"--stripe-port={stripe_port}",
                f"--shopify-port={shopify_port}",
                *stripe_webhook_flags(f"{api}/webhooks/stripe"),
                f"--shopify-webhook-url={api}/webhooks/shopify",
            ],
            {},
            f"{stripe_base}/_sandbox/health",
        )
        api_child = Child(
            "api",
            ["api", f"--port={api_port}", f"--workers={workers}"],
            {"DOTSHOP_BENCH_FLOOR": "1"},
            f"{api}/readyz",
        )
        relay = Child("relay", ["relay"], {}, None)
        supervisor = Supervisor(
            [sandbox, api_child, relay],
            logs,
            say=lambda line: None,
            on_change=lambda pids: None,
            env=env,
        )
        stack = BenchStack(workdir, database_url, engine, api, stripe_base, shopify_site)
        supervisor.start(lambda child: _after(child, stack, sellout_stock, before_api, say))
        ok = True
        yield stack
    finally:
        if supervisor is not None:
            supervisor.stop()
        if engine is not None:
            engine.dispose()
        embedded_pg.stop(pgdata)
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"the bench did not start; logs kept in {logs}")


def _after(
    child: Child,
    stack: BenchStack,
    sellout_stock: int,
    before_api: Callable[[BenchStack], None],
    say: Callable[[str], None],
) -> None:
    if child.name == "sandbox":
        stack.flow_skus, stack.product_handle = _raise_flow_stock(stack.shopify_site)
        gateway = ShopifyGateway(shop=SHOP, site=stack.shopify_site, access_token=SHOPIFY_TOKEN)
        _create_synthetic(stack.shopify_site, sellout_stock)
        shopify_sync.load_catalog(stack.engine, gateway, LOCATION_ID)
        say("catalog loaded; running the limit arms (pgbench) before the API opens")
        before_api(stack)


def _raise_flow_stock(shopify_site: str) -> tuple[list[str], str]:
    """Give a few demo SKUs plenty of Shopify stock (the pushed orders decrement it); returns
    them and the handle of their product (the read arm's)."""
    headers = {"X-Shopify-Access-Token": SHOPIFY_TOKEN}
    with httpx.Client(base_url=shopify_site, headers=headers, timeout=10) as client:
        products = client.get("/products.json", params={"limit": 50}).raise_for_status().json()
        product = products["products"][0]
        variants = [v for p in products["products"] for v in p["variants"]][:FLOW_SKUS]
        for variant in variants:
            client.post(
                "/inventory_levels/set.json",
                json={
                    "location_id": LOCATION_ID,
                    "inventory_item_id": variant["inventory_item_id"],
                    "available": PLENTY,
                },
            ).raise_for_status()
    return [v["sku"] for v in variants], product["handle"]


def _create_synthetic(shopify_site: str, sellout_stock: int) -> None:
    """The stock arms' SKUs, created in the sandbox Shopify like any product (the catalog load
    then imports them): their holds reach Shopify and succeed, as a real shop's do, instead of
    failing and retrying against inventory items Shopify never had. Products of at most
    VARIANTS_PER_PRODUCT variants (Shopify's REST limit), whose handles sort after the demo
    catalog's 40, so the list arm reads the storefront's first page, not a synthetic product."""
    rows = [(HOT_SKU, PLENTY), (SELLOUT_SKU, sellout_stock)]
    rows += [(sku, PLENTY) for sku in spread_skus()]
    headers = {"X-Shopify-Access-Token": SHOPIFY_TOKEN}
    with httpx.Client(base_url=shopify_site, headers=headers, timeout=30) as client:
        for n, start in enumerate(range(0, len(rows), VARIANTS_PER_PRODUCT)):
            chunk = rows[start : start + VARIANTS_PER_PRODUCT]
            variants = [
                {"sku": sku, "option1": sku, "price": "10.00", "inventory_quantity": stock}
                for sku, stock in chunk
            ]
            product = {"title": f"Bench {n:02d}", "handle": f"zz-bench-{n:02d}"}
            product |= {"options": [{"name": "SKU"}], "variants": variants}
            client.post("/products.json", json={"product": product}).raise_for_status()

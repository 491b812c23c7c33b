"""The benchmark's floor: the least a correct checkout can do, served by the same app, process
setup and engine as the real one, so `dotshop bench checkout` can put the two side by side.

One transaction: INSERT the order, INSERT the idempotency key, then the conditional UPDATE of the
stock row, last so that the row lock lasts a single round trip before COMMIT. No prices, no
Stripe, no replay: a floor, not a checkout. Mounted only with DOTSHOP_BENCH_FLOOR=1.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec
from litestar import Response, post
from litestar.params import Parameter
from sqlalchemy import text

from checkout_api.deps import Ctx
from checkout_api.idempotent import IDEMPOTENCY_KEY, require_key
from core.errors import InsufficientStock
from core.ids import new_id

SCOPE = "bench:POST /bench/floor"
KEY_LIFETIME = timedelta(hours=24)
# Any positive amount: the floor does not price.
AMOUNT_MINOR = 100

INSERT_ORDER = text(
    "INSERT INTO orders (id, checkout_id, region, email, shipping_address, currency, "
    "amount_minor, expires_at) "
    "VALUES (:order_id, :checkout_id, :region, :email, CAST(:address AS jsonb), :currency, "
    ":amount, :expires_at)"
)
INSERT_KEY = text(
    "INSERT INTO idempotency_key (id, scope, key, request_method, request_path, "
    "request_fingerprint, recovery_point, state, response_status, expires_at) "
    "VALUES (:id, :scope, :key, 'POST', '/bench/floor', :fingerprint, 'finished', "
    "CAST(:state AS jsonb), 201, :expires_at)"
)
TAKE_STOCK = text(
    "UPDATE stock SET reserved = reserved + :quantity, updated_at = now() "
    "WHERE sku = :sku AND shopify_available - reserved - committed >= :quantity "
    "RETURNING sku"
)


class FloorLine(msgspec.Struct):
    sku: str
    quantity: int = 1


class FloorCheckout(msgspec.Struct):
    email: str
    line: FloorLine


@post("/bench/floor", sync_to_thread=True, status_code=201, include_in_schema=False)
def floor_checkout(
    data: FloorCheckout,
    ctx: Ctx,
    idempotency_key: Annotated[str | None, Parameter(header=IDEMPOTENCY_KEY)] = None,
) -> Response[dict[str, str]]:
    """Take one line's stock and write the order and its key, or 409 insufficient_stock."""
    key = require_key(idempotency_key)
    order_id = new_id("ord")
    now = datetime.now(UTC)
    with ctx.engine.connect() as conn:
        conn.execute(
            INSERT_ORDER,
            {
                "order_id": order_id,
                "checkout_id": new_id("chk"),
                "region": ctx.settings.region,
                "email": data.email,
                "address": "{}",
                "currency": ctx.settings.currency,
                "amount": AMOUNT_MINOR * data.line.quantity,
                "expires_at": now + timedelta(seconds=ctx.settings.reservation_ttl),
            },
        )
        conn.execute(
            INSERT_KEY,
            {
                "id": new_id("idk"),
                "scope": SCOPE,
                "key": key,
                "fingerprint": hashlib.sha256(msgspec.json.encode(data)).hexdigest(),
                "state": json.dumps({"order_id": order_id}),
                "expires_at": now + KEY_LIFETIME,
            },
        )
        taken = conn.execute(
            TAKE_STOCK, {"sku": data.line.sku, "quantity": data.line.quantity}
        ).first()
        if taken is None:  # leaving without commit rolls the inserts back
            raise InsufficientStock(sku=data.line.sku)
        conn.commit()
    return Response({"order_id": order_id}, status_code=201)

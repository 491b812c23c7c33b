"""checkout phase 1: a new key is inserted at its next recovery point, not written twice

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 16:00:00

`dotshop_checkout_begin` (0010) inserted a new Idempotency-Key at 'started' and then ran
`dotshop_checkout_reserve` on it, which locked the row it had just inserted (`FOR UPDATE`) and
updated it to 'order_created'. Every key update is a new row version with an entry in each of
the key's four indexes (its columns `recovery_point` and `last_run_at` are indexed), so a
checkout wrote its key three times where two do. `dotshop_checkout_phase1` prices the lines
first and inserts a new key at 'order_created' with the order's facts (at 'started' when a SKU
is unknown: that answer is stored by the caller); a key that exists (a resumed checkout) is
locked and moved on as before. The API calls it directly (one PL/pgSQL call, not two nested);
the two older functions stay, as thin wrappers, for API processes of the previous release that
call them until they restart.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLSTATE raised when a line's stock is not there; its DETAIL is the shortage as JSON.
INSUFFICIENT_STOCK = "DS409"

PHASE1_UP = f"""
-- Phase 1 of a checkout (core/checkout.py, started -> order_created) in ONE round trip, so the
-- hot stock row is locked only while this one statement runs, never across a client round trip.
--
-- p_new_key: insert the key (locked by this request: locked_at = p_now, its lock token). When
-- (p_scope, p_key) exists already, answer 'key_exists' having written nothing, with the key as
-- it stands (its request, recovery point, stored answer and expiry; NULLs if it is gone since),
-- so that a replay too is one round trip. Otherwise the key must exist, be locked by p_now and
-- be at 'started' (a resumed checkout), else 'key_lost'.
--
-- Then: price the lines in the region's currency (an unknown SKU answers 'unknown_sku' with
-- the SKUs and leaves a new key at 'started'), create the order with its lines, its 'created'
-- event and its holds, and LAST take the stock: one conditional UPDATE per SKU in the caller's
-- SKU order (the lock order everywhere), which PostgreSQL re-checks on the newest row version
-- after waiting for the row lock, so two checkouts cannot both get the last unit. Then queue
-- one `shopify.hold` outbox message per SKU (core.inventory.SHOPIFY_HOLD), after the stock
-- UPDATE whose row lock orders the producers of that SKU's ordering key. Answers
-- 'order_created' with the amount. When any SKU is short it raises SQLSTATE
-- {INSUFFICIENT_STOCK}, which rolls everything back, a new key included; DETAIL lists every
-- short SKU as [{{"sku", "requested", "available"}}].
CREATE FUNCTION dotshop_checkout_phase1(
    p_new_key boolean,
    p_key_id text,
    p_scope text,
    p_key text,
    p_method text,
    p_path text,
    p_fingerprint text,
    p_now timestamptz,
    p_key_expires_at timestamptz,
    p_state jsonb,
    p_order_id text,
    p_checkout_id text,
    p_region text,
    p_currency text,
    p_email text,
    p_shipping_address jsonb,
    p_expires_at timestamptz,
    p_skus text[],
    p_quantities integer[],
    p_reservation_ids text[]
) RETURNS TABLE (outcome text, amount bigint, unknown_skus text[],
                 request_fingerprint text, request_method text, request_path text,
                 recovery_point text, response_status integer, response_body bytea,
                 expires_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_price bigint;
  v_prices bigint[] := '{{}}';
  v_unknown text[] := '{{}}';
  v_amount bigint := 0;
  v_short jsonb := '[]';
BEGIN
  IF NOT p_new_key THEN
    PERFORM FROM idempotency_key
     WHERE id = p_key_id AND locked_at = p_now AND recovery_point = 'started'
       FOR UPDATE;
    IF NOT FOUND THEN
      RETURN QUERY SELECT 'key_lost', NULL::bigint, NULL::text[], NULL::text, NULL::text,
                          NULL::text, NULL::text, NULL::integer, NULL::bytea, NULL::timestamptz;
      RETURN;
    END IF;
  END IF;

  -- Sellable here: an active product's variant with a price in this currency and a stock row.
  -- One primary-key probe per line, whose generic plan PL/pgSQL keeps (migration 0009).
  FOR i IN 1 .. cardinality(p_skus) LOOP
    SELECT vp.amount_minor INTO v_price
      FROM variant_price vp
      JOIN variant v ON v.sku = vp.sku
      JOIN product p ON p.id = v.product_id
      JOIN stock s ON s.sku = vp.sku
     WHERE vp.sku = p_skus[i] AND vp.currency = p_currency AND p.status = 'active';
    IF NOT FOUND THEN
      v_unknown := v_unknown || p_skus[i];
    END IF;
    v_prices := v_prices || v_price;
    v_amount := v_amount + p_quantities[i] * v_price;
  END LOOP;

  IF p_new_key THEN
    INSERT INTO idempotency_key
           (id, scope, key, request_method, request_path, request_fingerprint,
            recovery_point, locked_at, state, last_run_at, expires_at)
    SELECT p_key_id, p_scope, p_key, p_method, p_path, p_fingerprint,
           CASE WHEN known THEN 'order_created' ELSE 'started' END, p_now,
           CASE WHEN known THEN p_state || jsonb_build_object('amount', v_amount)
                ELSE '{{}}' END,
           p_now, p_key_expires_at
      FROM (SELECT cardinality(v_unknown) = 0 AS known) AS priced
    ON CONFLICT (scope, key) DO NOTHING;
    IF NOT FOUND THEN
      RETURN QUERY
        SELECT 'key_exists', NULL::bigint, NULL::text[],
               k.request_fingerprint::text, k.request_method::text, k.request_path::text,
               k.recovery_point::text, k.response_status, k.response_body, k.expires_at
          FROM (SELECT) AS one
          LEFT JOIN idempotency_key AS k ON k.scope = p_scope AND k.key = p_key;
      RETURN;
    END IF;
  END IF;

  IF cardinality(v_unknown) > 0 THEN
    RETURN QUERY SELECT 'unknown_sku', NULL::bigint,
                        ARRAY(SELECT sku FROM unnest(v_unknown) AS sku ORDER BY sku),
                        NULL::text, NULL::text, NULL::text, NULL::text, NULL::integer,
                        NULL::bytea, NULL::timestamptz;
    RETURN;
  END IF;

  IF NOT p_new_key THEN
    UPDATE idempotency_key
       SET recovery_point = 'order_created',
           state = state || p_state || jsonb_build_object('amount', v_amount),
           last_run_at = now()
     WHERE id = p_key_id;
  END IF;

  INSERT INTO orders (id, checkout_id, region, status, email, shipping_address, currency,
                      amount_minor, refunded_minor, expires_at)
  VALUES (p_order_id, p_checkout_id, p_region, 'awaiting_payment', p_email, p_shipping_address,
          p_currency, v_amount, 0, p_expires_at);
  INSERT INTO order_line (order_id, sku, quantity, unit_price_minor)
  SELECT p_order_id, line.sku, line.quantity, line.price
    FROM unnest(p_skus, p_quantities, v_prices) AS line (sku, quantity, price);
  INSERT INTO order_event (order_id, kind, data)
  VALUES (p_order_id, 'created', jsonb_build_object('amount', v_amount, 'currency', p_currency));
  INSERT INTO reservation (id, order_id, sku, quantity, status, expires_at)
  SELECT line.id, p_order_id, line.sku, line.quantity, 'held', p_expires_at
    FROM unnest(p_reservation_ids, p_skus, p_quantities) AS line (id, sku, quantity);

  FOR i IN 1 .. cardinality(p_skus) LOOP
    UPDATE stock
       SET reserved = reserved + p_quantities[i], updated_at = now()
     WHERE sku = p_skus[i] AND shopify_available - reserved - committed >= p_quantities[i];
    IF NOT FOUND THEN
      v_short := v_short || (
        SELECT jsonb_build_object('sku', sku, 'requested', p_quantities[i],
                                  'available', greatest(shopify_available - reserved - committed, 0))
          FROM stock WHERE sku = p_skus[i]);
    END IF;
  END LOOP;
  IF jsonb_array_length(v_short) > 0 THEN
    RAISE EXCEPTION 'insufficient stock' USING ERRCODE = '{INSUFFICIENT_STOCK}', DETAIL = v_short::text;
  END IF;

  INSERT INTO outbox (public_id, topic, ordering_key, payload)
  SELECT 'obx_' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 24),
         'shopify.hold',
         'sku:' || line.sku,
         jsonb_build_object('reservation_id', line.id, 'order_id', p_order_id,
                            'sku', line.sku, 'quantity', line.quantity)
    FROM unnest(p_reservation_ids, p_skus, p_quantities) AS line (id, sku, quantity)
   ORDER BY line.sku;

  RETURN QUERY SELECT 'order_created', v_amount, NULL::text[], NULL::text, NULL::text,
                      NULL::text, NULL::text, NULL::integer, NULL::bytea, NULL::timestamptz;
END $$;

-- The functions of migrations 0009 and 0010, kept for processes of the previous release.
CREATE OR REPLACE FUNCTION dotshop_checkout_reserve(
    p_key_id text, p_locked_at timestamptz, p_state jsonb, p_order_id text,
    p_checkout_id text, p_region text, p_currency text, p_email text,
    p_shipping_address jsonb, p_expires_at timestamptz, p_skus text[],
    p_quantities integer[], p_reservation_ids text[]
) RETURNS TABLE (outcome text, amount bigint, unknown_skus text[])
LANGUAGE sql AS $$
  SELECT r.outcome, r.amount, r.unknown_skus
    FROM dotshop_checkout_phase1(
           FALSE, p_key_id, NULL, NULL, NULL, NULL, NULL, p_locked_at, NULL, p_state,
           p_order_id, p_checkout_id, p_region, p_currency, p_email, p_shipping_address,
           p_expires_at, p_skus, p_quantities, p_reservation_ids) AS r
$$;

CREATE OR REPLACE FUNCTION dotshop_checkout_begin(
    p_key_id text, p_scope text, p_key text, p_method text, p_path text,
    p_fingerprint text, p_now timestamptz, p_key_expires_at timestamptz, p_state jsonb,
    p_order_id text, p_checkout_id text, p_region text, p_currency text, p_email text,
    p_shipping_address jsonb, p_expires_at timestamptz, p_skus text[],
    p_quantities integer[], p_reservation_ids text[]
) RETURNS TABLE (outcome text, amount bigint, unknown_skus text[],
                 request_fingerprint text, request_method text, request_path text,
                 recovery_point text, response_status integer, response_body bytea,
                 expires_at timestamptz)
LANGUAGE sql AS $$
  SELECT *
    FROM dotshop_checkout_phase1(
           TRUE, p_key_id, p_scope, p_key, p_method, p_path, p_fingerprint, p_now,
           p_key_expires_at, p_state, p_order_id, p_checkout_id, p_region, p_currency,
           p_email, p_shipping_address, p_expires_at, p_skus, p_quantities,
           p_reservation_ids)
$$;
"""


def _migration(name: str):
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"dotshop_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute(PHASE1_UP)


def downgrade() -> None:
    # PL/pgSQL again, as 0009 and 0010 made them; then the function they call can go.
    op.execute(
        "DROP FUNCTION dotshop_checkout_begin("
        "text, text, text, text, text, text, timestamptz, timestamptz, jsonb, text, text, text,"
        " text, text, jsonb, timestamptz, text[], integer[], text[])"
    )
    _migration("2026_11_27_checkout_plans_0009.py").upgrade()
    _migration("2026_11_27_checkout_begin_0010.py").upgrade()
    op.execute(
        "DROP FUNCTION dotshop_checkout_phase1("
        "boolean, text, text, text, text, text, text, timestamptz, timestamptz, jsonb, text,"
        " text, text, text, text, jsonb, timestamptz, text[], integer[], text[])"
    )

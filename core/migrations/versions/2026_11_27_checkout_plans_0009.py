"""checkout plans: phase 1 prices its lines by primary key, one line at a time

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 01:00:00

Migration 0005 priced all lines in one statement (unnest joined LATERAL to four tables). PL/pgSQL
caches a statement's plan per session, but this one's generic plan looked dearer than a custom
one, so PostgreSQL planned it afresh on every call (~1 ms of the server's CPU per checkout), and
before the tables had statistics it ran as sequential scans (~5 ms). One line's price is a
primary-key probe whose generic plan is the right one with or without statistics, so each call
reuses it. Everything else is as migration 0007 left it.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLSTATE raised when a line's stock is not there; its DETAIL is the shortage as JSON.
INSUFFICIENT_STOCK = "DS409"

FUNCTION_UP = f"""
-- Phase 1 of a checkout (core/checkout.py, started -> order_created) in ONE round trip, so the
-- hot stock row is locked only while this one statement runs, never across a client round
-- trip. While the idempotency key is still this request's (locked_at is its token) and at
-- 'started', it prices the lines in the region's currency, creates the order with its lines,
-- its 'created' event and its holds, moves the key to 'order_created' (merging p_state and the
-- amount into the key's state), and LAST takes the stock: one conditional UPDATE per SKU in
-- the caller's SKU order (the lock order everywhere), which PostgreSQL re-checks on the newest
-- row version after waiting for the row lock, so two checkouts cannot both get the last unit.
-- Then it queues one `shopify.hold` outbox message per SKU (core.inventory.SHOPIFY_HOLD), after
-- the stock UPDATE whose row lock orders the producers of that SKU's ordering key.
-- Answers 'key_lost' or 'unknown_sku' (with the SKUs) having written nothing, or
-- 'order_created' with the amount. When any SKU is short it raises SQLSTATE
-- {INSUFFICIENT_STOCK}, which rolls everything back; DETAIL lists every short SKU as
-- [{{"sku", "requested", "available"}}].
CREATE OR REPLACE FUNCTION dotshop_checkout_reserve(
    p_key_id text,
    p_locked_at timestamptz,
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
) RETURNS TABLE (outcome text, amount bigint, unknown_skus text[])
LANGUAGE plpgsql AS $$
DECLARE
  v_price bigint;
  v_prices bigint[] := '{{}}';
  v_unknown text[] := '{{}}';
  v_amount bigint := 0;
  v_short jsonb := '[]';
BEGIN
  PERFORM FROM idempotency_key
   WHERE id = p_key_id AND locked_at = p_locked_at AND recovery_point = 'started'
     FOR UPDATE;
  IF NOT FOUND THEN
    RETURN QUERY SELECT 'key_lost', NULL::bigint, NULL::text[];
    RETURN;
  END IF;

  -- Sellable here: an active product's variant with a price in this currency and a stock row.
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
  IF cardinality(v_unknown) > 0 THEN
    RETURN QUERY SELECT 'unknown_sku', NULL::bigint,
                        ARRAY(SELECT sku FROM unnest(v_unknown) AS sku ORDER BY sku);
    RETURN;
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
  UPDATE idempotency_key
     SET recovery_point = 'order_created',
         state = state || p_state || jsonb_build_object('amount', v_amount),
         last_run_at = now()
   WHERE id = p_key_id;

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

  RETURN QUERY SELECT 'order_created', v_amount, NULL::text[];
END $$;
"""


def _migration_0007():
    path = Path(__file__).with_name("2026_11_26_holds_0007.py")
    spec = importlib.util.spec_from_file_location("dotshop_migration_0007", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute(FUNCTION_UP)


def downgrade() -> None:
    _migration_0007().upgrade()

"""holds: phase 1 of a checkout queues its holds for Shopify (one outbox message per SKU)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 21:00:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _checkout_0005() -> str:
    """The function as migration 0005 created it: this one adds a statement to that body
    instead of copying its eighty lines."""
    path = Path(__file__).with_name("2026_11_26_checkout_0005.py")
    spec = importlib.util.spec_from_file_location("dotshop_migration_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FUNCTION_UP.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


# Each hold becomes a `shopify.hold` outbox message (core.inventory.SHOPIFY_HOLD), with the shape
# core.outbox.enqueue writes: a public id `obx_` + 24 hex characters, the topic, the SKU's
# ordering key and the payload the handler reads. It is queued after the stock UPDATE of its
# SKU, whose row lock orders producers of one ordering key (core/outbox.py), and commits with
# the hold, so the checkout never waits on Shopify.
QUEUE_HOLDS = """
  INSERT INTO outbox (public_id, topic, ordering_key, payload)
  SELECT 'obx_' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 24),
         'shopify.hold',
         'sku:' || line.sku,
         jsonb_build_object('reservation_id', line.id, 'order_id', p_order_id,
                            'sku', line.sku, 'quantity', line.quantity)
    FROM unnest(p_reservation_ids, p_skus, p_quantities) AS line (id, sku, quantity)
   ORDER BY line.sku;

  RETURN QUERY SELECT 'order_created', v_amount, NULL::text[];"""
RETURN_CREATED = "\n  RETURN QUERY SELECT 'order_created', v_amount, NULL::text[];"


def upgrade() -> None:
    body = _checkout_0005()
    assert body.count(RETURN_CREATED) == 1, "migration 0005's function changed shape"
    op.execute(body.replace(RETURN_CREATED, QUEUE_HOLDS))


def downgrade() -> None:
    op.execute(_checkout_0005())

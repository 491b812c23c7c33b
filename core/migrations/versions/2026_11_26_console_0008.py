"""console: what the operator console searches by, and who acknowledged a violation

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The console's searches and daily views must stay index scans at a million orders.
INDEXES = (
    # Orders page: by customer email (case-insensitive), by SKU bought.
    ("ix_orders_email_lower", "orders", "(lower(email))"),
    ("ix_order_line_sku", "order_line", "(sku)"),
    # Overview (checkout rate) and the finance day views.
    ("ix_orders_created_at", "orders", "(created_at)"),
    ("ix_orders_paid_at", "orders", "(paid_at)"),
    ("ix_ledger_txn_occurred_at", "ledger_txn", "(occurred_at)"),
    # An order's timeline: every outbox message carries the order it serves in its payload, and
    # a Stripe webhook names its PaymentIntent as the object or as the object's payment_intent.
    ("ix_outbox_payload_order_id", "outbox", "((payload ->> 'order_id'))"),
    ("ix_audit_log_subject", "audit_log", "(subject)"),
    # Finance's payouts list, newest first, without reading the rest of the ledger.
    ("ix_ledger_txn_payout", "ledger_txn", "(occurred_at, source) WHERE kind = 'payout'"),
    # The outbox page: counts per status and topic, and the discarded list, without reading
    # the delivered messages (nearly all rows).
    ("ix_outbox_undelivered", "outbox", "(status, topic, id) WHERE status <> 'sent'"),
    # Holds mirrored in Shopify, per SKU (the stock page and the drift check).
    (
        "ix_reservation_live_sku",
        "reservation",
        "(sku) WHERE status IN ('held', 'committed')",
    ),
    (
        "ix_webhook_inbox_payment_intent",
        "webhook_inbox",
        "((coalesce(payload #>> '{data,object,payment_intent}', payload #>> '{data,object,id}')))",
    ),
)


def upgrade() -> None:
    # Acknowledging tells the other on-call people someone is on it; it does not resolve: only a
    # check run that no longer finds the condition does.
    op.add_column("violation", sa.Column("acknowledged_at", sa.DateTime(timezone=True)))
    op.add_column("violation", sa.Column("acknowledged_by", sa.Text()))
    op.create_check_constraint(
        op.f("ck_violation_acknowledged_by_length"),
        "violation",
        "acknowledged_by IS NULL OR char_length(acknowledged_by) <= 100",
    )
    for name, table, expression in INDEXES:
        op.execute(f"CREATE INDEX {name} ON {table} {expression}")


def downgrade() -> None:
    for name, _, _ in reversed(INDEXES):
        op.execute(f"DROP INDEX {name}")
    op.drop_constraint(op.f("ck_violation_acknowledged_by_length"), "violation")
    op.drop_column("violation", "acknowledged_by")
    op.drop_column("violation", "acknowledged_at")

"""balance: Stripe's balance transactions as our ledger books them

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "balance_txn",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("reporting_category", sa.Text(), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=True),
        sa.Column("order_id", sa.Text(), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("fee_minor", sa.BigInteger(), nullable=False),
        sa.Column("net_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("exchange_rate", sa.Numeric(), nullable=True),
        sa.Column("source_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("source_currency", sa.String(length=3), nullable=True),
        sa.Column("available_on", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "ledger_sources",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("id LIKE 'txn\\_%'", name=op.f("ck_balance_txn_stripe_id")),
        sa.CheckConstraint(
            "net_minor = amount_minor - fee_minor",
            name=op.f("ck_balance_txn_net_is_amount_less_fee"),
        ),
        sa.CheckConstraint("currency ~ '^[a-z]{3}$'", name=op.f("ck_balance_txn_currency_iso")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_balance_txn")),
    )
    op.create_index("ix_balance_txn_order_id", "balance_txn", ["order_id"])
    op.create_index("ix_balance_txn_available_on", "balance_txn", ["available_on"])
    # Append-only like the ledger it explains: Stripe never edits a balance transaction.
    op.execute(
        "CREATE TRIGGER balance_txn_append_only BEFORE UPDATE OR DELETE ON balance_txn "
        "FOR EACH ROW EXECUTE FUNCTION dotshop_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER balance_txn_no_truncate BEFORE TRUNCATE ON balance_txn "
        "FOR EACH STATEMENT EXECUTE FUNCTION dotshop_refuse_change()"
    )


def downgrade() -> None:
    op.drop_table("balance_txn")

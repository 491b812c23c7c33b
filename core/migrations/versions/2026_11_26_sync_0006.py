"""sync: per-SKU Shopify sync lag samples (inbound and outbound), for metrics and the console

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sync_lag_sample",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("sku", sa.Text(), nullable=False),
        sa.Column("lag_ms", sa.BigInteger(), nullable=False),
        sa.Column(
            "observed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "direction IN ('inbound', 'outbound')", name=op.f("ck_sync_lag_sample_direction")
        ),
        sa.CheckConstraint("lag_ms >= 0", name=op.f("ck_sync_lag_sample_lag_nonnegative")),
        sa.CheckConstraint("char_length(sku) <= 255", name=op.f("ck_sync_lag_sample_sku_length")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_lag_sample")),
    )
    op.create_index(
        "ix_sync_lag_sample_sku_direction_observed_at",
        "sync_lag_sample",
        ["sku", "direction", "observed_at"],
    )
    op.create_index("ix_sync_lag_sample_observed_at", "sync_lag_sample", ["observed_at"])


def downgrade() -> None:
    op.drop_table("sync_lag_sample")

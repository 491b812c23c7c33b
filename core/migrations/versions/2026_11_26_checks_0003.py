"""checks: check runs, violations (one open row per fingerprint), provider sync cursors

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 16:25:45.993502
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _stripe_staging_tables() -> None:
    """Stripe staging for reconciliation (see core.models: StripePayment, StripeRefund,
    StripeDispute)."""

    def stamps() -> list[sa.Column]:
        return [
            sa.Column("created", sa.DateTime(timezone=True), nullable=False),
            sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        ]

    op.create_table(
        "stripe_payment",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("amount_received", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("latest_charge", sa.Text(), nullable=True),
        *stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_payment")),
    )
    op.create_index("ix_stripe_payment_order_id", "stripe_payment", ["order_id"])
    for table, extra in (
        ("stripe_refund", []),
        ("stripe_dispute", [sa.Column("withdrawn", sa.BigInteger(), nullable=False)]),
    ):
        op.create_table(
            table,
            sa.Column("id", sa.Text(), nullable=False),
            sa.Column("payment_intent_id", sa.Text(), nullable=True),
            sa.Column("amount", sa.BigInteger(), nullable=False),
            *extra,
            sa.Column("currency", sa.String(length=3), nullable=False),
            sa.Column("status", sa.Text(), nullable=False),
            *stamps(),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
        )
        op.create_index(f"ix_{table}_payment_intent_id", table, ["payment_intent_id"])


def upgrade() -> None:
    _stripe_staging_tables()
    op.create_table(
        "check_run",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Text(), server_default="running", nullable=False),
        sa.Column(
            "results",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('running', 'ok', 'violations', 'error')", name=op.f("ck_check_run_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_check_run")),
    )
    op.create_index("ix_check_run_started_at", "check_run", ["started_at"], unique=False)
    op.create_table(
        "sync_cursor",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "value",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sync_cursor")),
    )
    op.create_table(
        "violation",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("check_name", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column(
            "evidence",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "first_seen",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_seen", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_run_id", sa.Text(), nullable=False),
        sa.Column("last_run_id", sa.Text(), nullable=False),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolve_notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "currency IS NULL OR currency ~ '^[a-z]{3}$'", name=op.f("ck_violation_currency_iso")
        ),
        sa.CheckConstraint("char_length(check_name) <= 64", name=op.f("ck_violation_check_length")),
        sa.CheckConstraint("char_length(subject) <= 255", name=op.f("ck_violation_subject_length")),
        sa.ForeignKeyConstraint(
            ["first_run_id"], ["check_run.id"], name=op.f("fk_violation_first_run_id_check_run")
        ),
        sa.ForeignKeyConstraint(
            ["last_run_id"], ["check_run.id"], name=op.f("fk_violation_last_run_id_check_run")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_violation")),
    )
    op.create_index(
        "ix_violation_check_open",
        "violation",
        ["check_name"],
        unique=False,
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.create_index(
        "uq_violation_open_fingerprint",
        "violation",
        ["fingerprint"],
        unique=True,
        postgresql_where=sa.text("resolved_at IS NULL"),
    )


def downgrade() -> None:
    for table in ("stripe_dispute", "stripe_refund", "stripe_payment"):
        op.drop_table(table)
    op.drop_index(
        "uq_violation_open_fingerprint",
        table_name="violation",
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.drop_index(
        "ix_violation_check_open",
        table_name="violation",
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.drop_table("violation")
    op.drop_table("sync_cursor")
    op.drop_index("ix_check_run_started_at", table_name="check_run")
    op.drop_table("check_run")

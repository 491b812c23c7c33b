"""hardening: the database guards what the code promises

Order status moves only along allowed edges; one Shopify order per order; a ledger
transaction has at least two entries; TRUNCATE is refused on append-only tables; outbox leases,
discarded dead letters and LISTEN/NOTIFY wake-ups; abandoned webhook events; refunds kept apart
from confirmations; order flags (payment mismatch).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 15:12:44.834279
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


APPEND_ONLY = ("order_event", "audit_log", "ledger_txn", "ledger_entry")

# The order lifecycle, as (from, to) pairs; staying in the same status is always allowed.
# A late payment may revive a cancelled (expired) order; a failed refund or a won dispute or a
# closed inquiry may take an order back to paid or partially refunded.
ORDER_TRANSITIONS = (
    ("awaiting_payment", "paid"),
    ("awaiting_payment", "cancelled"),
    ("cancelled", "paid"),
    ("paid", "partially_refunded"),
    ("paid", "refunded"),
    ("paid", "disputed"),
    ("partially_refunded", "paid"),
    ("partially_refunded", "refunded"),
    ("partially_refunded", "disputed"),
    ("refunded", "paid"),
    ("refunded", "partially_refunded"),
    ("refunded", "disputed"),
    ("disputed", "paid"),
    ("disputed", "partially_refunded"),
    ("disputed", "refunded"),
)

_ALLOWED = ", ".join(f"('{a}', '{b}')" for a, b in ORDER_TRANSITIONS)

TRIGGERS_UP = f"""
-- Only the allowed moves of the order lifecycle; anything else is a bug, refused loudly.
CREATE FUNCTION dotshop_order_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status IS DISTINCT FROM OLD.status
     AND (OLD.status, NEW.status) NOT IN ({_ALLOWED}) THEN
    RAISE EXCEPTION 'order % cannot move from % to %', OLD.id, OLD.status, NEW.status
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END $$;

CREATE TRIGGER orders_status_transition
  BEFORE UPDATE OF status ON orders
  FOR EACH ROW EXECUTE FUNCTION dotshop_order_transition();

-- A ledger transaction is at least two entries (checked at commit, after they are inserted).
CREATE FUNCTION dotshop_ledger_txn_legs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (SELECT count(*) FROM ledger_entry WHERE txn_id = NEW.id) < 2 THEN
    RAISE EXCEPTION 'ledger transaction % has fewer than two entries', NEW.id
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_txn_two_legs
  AFTER INSERT ON ledger_txn
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION dotshop_ledger_txn_legs();

-- Relays LISTEN on this channel: a new message (or one that became a head) wakes them at once;
-- polling is only the fallback. Identical notifications in one transaction fold into one.
CREATE FUNCTION dotshop_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('dotshop_outbox', '');
  RETURN NULL;
END $$;

CREATE TRIGGER outbox_notify
  AFTER INSERT OR UPDATE OF status ON outbox
  FOR EACH STATEMENT EXECUTE FUNCTION dotshop_outbox_notify();
"""

TRIGGERS_DOWN = """
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS dotshop_outbox_notify();
DROP TRIGGER IF EXISTS ledger_txn_two_legs ON ledger_txn;
DROP FUNCTION IF EXISTS dotshop_ledger_txn_legs();
DROP TRIGGER IF EXISTS orders_status_transition ON orders;
DROP FUNCTION IF EXISTS dotshop_order_transition();
"""


def _replace_check(table: str, name: str, condition: str) -> None:
    op.drop_constraint(op.f(f"ck_{table}_{name}"), table, type_="check")
    op.create_check_constraint(name, table, condition)


def upgrade() -> None:
    op.create_table(
        "order_flag",
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column(
            "data",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("char_length(kind) <= 64", name=op.f("ck_order_flag_kind_length")),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_order_flag_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("order_id", "kind", name=op.f("pk_order_flag")),
    )
    op.create_table(
        "refund",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.Text(), server_default="requested", nullable=False),
        sa.Column("refund_key", sa.Text(), nullable=True),
        sa.Column("stripe_refund_id", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("currency ~ '^[a-z]{3}$'", name=op.f("ck_refund_currency_iso")),
        sa.CheckConstraint(
            "status IN ('requested', 'pending', 'succeeded', 'failed', 'canceled')",
            name=op.f("ck_refund_status"),
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_refund_amount_positive")),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_refund_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refund")),
        sa.UniqueConstraint("refund_key", name=op.f("uq_refund_refund_key")),
        sa.UniqueConstraint("stripe_refund_id", name=op.f("uq_refund_stripe_refund_id")),
    )
    op.create_index(op.f("ix_refund_order_id"), "refund", ["order_id"], unique=False)
    op.create_unique_constraint(op.f("uq_orders_shopify_order_id"), "orders", ["shopify_order_id"])
    op.add_column("outbox", sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("outbox", sa.Column("discarded_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_outbox_sent_at",
        "outbox",
        ["sent_at"],
        unique=False,
        postgresql_where=sa.text("status = 'sent'"),
    )
    _replace_check("outbox", "status", "status IN ('pending', 'sent', 'dead', 'discarded')")
    _replace_check(
        "webhook_inbox",
        "status",
        "status IN ('received', 'processed', 'flagged', 'failed', 'abandoned')",
    )
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.create_index(
        "ix_outbox_pending",
        "outbox",
        ["ordering_key", "id"],
        postgresql_where=sa.text("status IN ('pending', 'dead')"),
    )
    op.create_index(
        "ix_idempotency_key_unfinished",
        "idempotency_key",
        ["last_run_at"],
        postgresql_where=sa.text("recovery_point <> 'finished'"),
    )
    op.execute(TRIGGERS_UP)
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION dotshop_refuse_change()"
        )


def downgrade() -> None:
    for table in APPEND_ONLY:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    op.execute(TRIGGERS_DOWN)
    op.drop_index(
        "ix_idempotency_key_unfinished",
        table_name="idempotency_key",
        postgresql_where=sa.text("recovery_point <> 'finished'"),
    )
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.create_index(
        "ix_outbox_pending",
        "outbox",
        ["ordering_key", "id"],
        postgresql_where=sa.text("status <> 'sent'"),
    )
    _replace_check(
        "webhook_inbox", "status", "status IN ('received', 'processed', 'flagged', 'failed')"
    )
    _replace_check("outbox", "status", "status IN ('pending', 'sent', 'dead')")
    op.drop_index(
        "ix_outbox_sent_at", table_name="outbox", postgresql_where=sa.text("status = 'sent'")
    )
    op.drop_column("outbox", "discarded_at")
    op.drop_column("outbox", "locked_until")
    op.drop_constraint(op.f("uq_orders_shopify_order_id"), "orders", type_="unique")
    op.drop_index(op.f("ix_refund_order_id"), table_name="refund")
    op.drop_table("refund")
    op.drop_table("order_flag")

"""The schema, as typed SQLAlchemy 2 models. Alembic migrations in core/migrations own the DDL;
tests/core/test_migrations.py proves the migrations produce exactly these models.

Each table says why it exists. Invariants that the database can hold, it holds (CHECKs, unique
keys, a deferred trigger for ledger balance); `checks/` re-verifies them from outside.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: Timestamp, dict[str, Any]: JSONB, str: Text}


def _now() -> Any:
    return mapped_column(Timestamp, server_default=func.now())


# --------------------------------------------------------------------------- catalog projection


class Product(Base):
    """Our read projection of a Shopify product; Shopify is the source of truth."""

    __tablename__ = "product"
    __table_args__ = (CheckConstraint("char_length(handle) <= 255", name="handle_length"),)

    id: Mapped[str] = mapped_column(primary_key=True)  # prd_...
    shopify_product_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    handle: Mapped[str] = mapped_column(unique=True)
    title: Mapped[str]
    category: Mapped[str | None]
    description: Mapped[str | None]
    image_url: Mapped[str | None]
    status: Mapped[str] = mapped_column(server_default="active")
    # Shopify's own updated_at: an older payload never overwrites a newer one.
    shopify_updated_at: Mapped[datetime]
    synced_at: Mapped[datetime] = _now()


class Variant(Base):
    """A sellable SKU of a product, with the Shopify ids we need to talk about it."""

    __tablename__ = "variant"
    __table_args__ = (CheckConstraint("char_length(sku) BETWEEN 1 AND 64", name="sku_length"),)

    id: Mapped[str] = mapped_column(primary_key=True)  # var_...
    product_id: Mapped[str] = mapped_column(
        ForeignKey("product.id", ondelete="CASCADE"), index=True
    )
    sku: Mapped[str] = mapped_column(unique=True)
    title: Mapped[str]
    shopify_variant_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    shopify_inventory_item_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    position: Mapped[int] = mapped_column(server_default="1")
    shopify_updated_at: Mapped[datetime]


class VariantPrice(Base):
    """Price of a SKU per currency, in minor units (each region sells in its own currency)."""

    __tablename__ = "variant_price"
    __table_args__ = (
        CheckConstraint("amount_minor >= 0", name="amount_nonnegative"),
        CheckConstraint("currency ~ '^[a-z]{3}$'", name="currency_iso"),
    )

    sku: Mapped[str] = mapped_column(
        ForeignKey("variant.sku", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True
    )
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)


class InventoryLevel(Base):
    """Shopify's available count per inventory item and location, with Shopify's updated_at."""

    __tablename__ = "inventory_level"

    shopify_inventory_item_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    shopify_location_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    available: Mapped[int]
    shopify_updated_at: Mapped[datetime]
    synced_at: Mapped[datetime] = _now()


class Stock(Base):
    """Per SKU: what Shopify says is available, what checkouts hold, what is paid but not yet
    acknowledged by Shopify. Sellable = shopify_available - reserved - committed.

    Our own writes can never make sellable negative (reservations are one conditional UPDATE).
    Only Shopify can lower shopify_available below what we promised (another sales channel sold
    it); then `shortfall_since` records when, and the oversell check alerts on it.
    """

    __tablename__ = "stock"
    __table_args__ = (
        CheckConstraint("reserved >= 0", name="reserved_nonnegative"),
        CheckConstraint("committed >= 0", name="committed_nonnegative"),
        CheckConstraint(
            "shopify_available - reserved - committed >= 0 OR shortfall_since IS NOT NULL",
            name="sellable_nonnegative",
        ),
    )

    sku: Mapped[str] = mapped_column(
        ForeignKey("variant.sku", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True
    )
    shopify_available: Mapped[int] = mapped_column(server_default="0")
    reserved: Mapped[int] = mapped_column(server_default="0")
    committed: Mapped[int] = mapped_column(server_default="0")
    shopify_updated_at: Mapped[datetime | None]
    shortfall_since: Mapped[datetime | None]
    updated_at: Mapped[datetime] = _now()


class Reservation(Base):
    """A checkout's hold on stock for one SKU. `held` counts in stock.reserved; `committed`
    counts in stock.committed until Shopify acknowledges the order."""

    __tablename__ = "reservation"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint(
            "status IN ('held', 'committed', 'released', 'expired', 'fulfilled')", name="status"
        ),
        UniqueConstraint("order_id", "sku", name="uq_reservation_order_sku"),
        Index("ix_reservation_held_expiry", "expires_at", postgresql_where=text("status = 'held'")),
        # Holds mirrored in Shopify, per SKU (console stock page, drift check).
        Index(
            "ix_reservation_live_sku",
            "sku",
            postgresql_where=text("status IN ('held', 'committed')"),
        ),
    )

    id: Mapped[str] = mapped_column(primary_key=True)  # rsv_...
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"))
    sku: Mapped[str] = mapped_column(ForeignKey("stock.sku", onupdate="CASCADE"), index=True)
    quantity: Mapped[int]
    status: Mapped[str] = mapped_column(server_default="held")
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


# --------------------------------------------------------------------------------------- orders


class Order(Base):
    """A checkout and the order it becomes. One PaymentIntent per order, ever."""

    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(
            "status IN ('awaiting_payment', 'paid', 'cancelled', 'refunded', "
            "'partially_refunded', 'disputed')",
            name="status",
        ),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint(
            "refunded_minor >= 0 AND refunded_minor <= amount_minor", name="refund_bounded"
        ),
        CheckConstraint("currency ~ '^[a-z]{3}$'", name="currency_iso"),
        CheckConstraint("char_length(email) <= 320", name="email_length"),
        # The console's searches and day views (migration 0008).
        Index("ix_orders_email_lower", text("lower(email)")),
        Index("ix_orders_created_at", "created_at"),
        Index("ix_orders_paid_at", "paid_at"),
    )

    id: Mapped[str] = mapped_column(primary_key=True)  # ord_...
    checkout_id: Mapped[str] = mapped_column(unique=True)  # chk_...
    region: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(server_default="awaiting_payment")
    cancel_reason: Mapped[str | None]
    email: Mapped[str]
    shipping_address: Mapped[dict[str, Any]]
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    refunded_minor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    payment_intent_id: Mapped[str | None] = mapped_column(unique=True)
    # One Shopify order per order, ever: a retried push can find it but never make a second.
    shopify_order_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    expires_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class OrderFlag(Base):
    """A stored fact about an order that needs a human (e.g. `payment_mismatch`: Stripe took a
    different amount or currency than the order's). The invariant checks raise open flags."""

    __tablename__ = "order_flag"
    __table_args__ = (CheckConstraint("char_length(kind) <= 64", name="kind_length"),)

    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = _now()
    resolved_at: Mapped[datetime | None]


class Refund(Base):
    """Money we asked Stripe to give back, or that Stripe reports given back (a dashboard
    refund). Requested and confirmed amounts are kept apart: `orders.refunded_minor` is the sum
    of `succeeded` rows only, and a `failed` or `canceled` refund frees its amount again."""

    __tablename__ = "refund"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("currency ~ '^[a-z]{3}$'", name="currency_iso"),
        CheckConstraint(
            "status IN ('requested', 'pending', 'succeeded', 'failed', 'canceled')", name="status"
        ),
    )

    id: Mapped[str] = mapped_column(primary_key=True)  # rfd_...
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(server_default="requested")
    # Our idempotency key for the Stripe call (absent for refunds made outside dotshop).
    refund_key: Mapped[str | None] = mapped_column(unique=True)
    stripe_refund_id: Mapped[str | None] = mapped_column(unique=True)  # re_...
    reason: Mapped[str | None]
    failure_reason: Mapped[str | None]
    requested_by: Mapped[str | None]
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class OrderLine(Base):
    """What was bought, at the price of the moment (minor units, order currency)."""

    __tablename__ = "order_line"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price_minor >= 0", name="price_nonnegative"),
        Index("ix_order_line_sku", "sku"),  # orders by SKU bought (console)
    )

    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), primary_key=True)
    sku: Mapped[str] = mapped_column(primary_key=True)
    quantity: Mapped[int]
    unit_price_minor: Mapped[int] = mapped_column(BigInteger)


class OrderEvent(Base):
    """The order's timeline, append-only (a trigger refuses UPDATE and DELETE)."""

    __tablename__ = "order_event"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    kind: Mapped[str]
    data: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = _now()


# --------------------------------------------------------------------------------- idempotency


class IdempotencyKey(Base):
    """A client's Idempotency-Key: the request it was first used with, whether a request with it
    is in flight (locked_at), how far the operation got (recovery_point) and the final response.
    `UNIQUE (scope, key)` is the contract; keys live 24 h."""

    __tablename__ = "idempotency_key"
    __table_args__ = (
        UniqueConstraint("scope", "key", name="uq_idempotency_key_scope_key"),
        CheckConstraint("char_length(key) BETWEEN 1 AND 255", name="key_length"),
        CheckConstraint("char_length(scope) <= 100", name="scope_length"),
        Index("ix_idempotency_key_expires_at", "expires_at"),
        # The completer's probe for stranded keys: only unfinished keys, a small set.
        Index(
            "ix_idempotency_key_unfinished",
            "last_run_at",
            postgresql_where=text("recovery_point <> 'finished'"),
        ),
    )

    id: Mapped[str] = mapped_column(primary_key=True)  # idk_...
    scope: Mapped[str]
    key: Mapped[str]
    request_method: Mapped[str] = mapped_column(String(10))
    request_path: Mapped[str]
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    recovery_point: Mapped[str] = mapped_column(server_default="started")
    locked_at: Mapped[datetime | None]
    # What the phases have produced so far (e.g. the order id), for the next phase to use.
    state: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    response_status: Mapped[int | None]
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now()
    last_run_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime]


# -------------------------------------------------------------------------------------- outbox


class OutboxMessage(Base):
    """A side effect to perform after commit, written in the same transaction as the change
    that needs it. Delivered in id order per `ordering_key`; dead after too many attempts."""

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'sent', 'dead', 'discarded')", name="status"),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
        # Messages that still block their key: in flight, waiting to retry, or dead.
        Index(
            "ix_outbox_pending",
            "ordering_key",
            "id",
            postgresql_where=text("status IN ('pending', 'dead')"),
        ),
        Index("ix_outbox_sent_at", "sent_at", postgresql_where=text("status = 'sent'")),
        # An order's messages, for its timeline: every payload names the order it serves.
        Index("ix_outbox_payload_order_id", text("(payload ->> 'order_id')")),
        # The console's counts and lists of messages not delivered (a small share of rows).
        Index(
            "ix_outbox_undelivered",
            "status",
            "topic",
            "id",
            postgresql_where=text("status <> 'sent'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    public_id: Mapped[str] = mapped_column(unique=True)  # obx_...
    topic: Mapped[str]
    ordering_key: Mapped[str]
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(server_default="pending")
    attempts: Mapped[int] = mapped_column(server_default="0")
    next_attempt_at: Mapped[datetime] = _now()
    # A relay's lease: committed (with attempts + 1) before it calls out, so no transaction
    # stays open across a provider call; a relay that dies leaves a lease that simply runs out.
    locked_until: Mapped[datetime | None]
    last_error: Mapped[str | None]
    created_at: Mapped[datetime] = _now()
    sent_at: Mapped[datetime | None]
    dead_at: Mapped[datetime | None]
    discarded_at: Mapped[datetime | None]


# ------------------------------------------------------------------------------ webhook inbox


class WebhookInbox(Base):
    """Every webhook we accepted, keyed by the provider's event id: a redelivery is a no-op.
    Events we cannot match yet (unknown PaymentIntent) are kept as `flagged`, never dropped."""

    __tablename__ = "webhook_inbox"
    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_webhook_inbox_provider_event"),
        CheckConstraint("provider IN ('stripe', 'shopify')", name="provider"),
        CheckConstraint(
            "status IN ('received', 'processed', 'flagged', 'failed', 'abandoned')", name="status"
        ),
        # An order's webhooks, for its timeline: a Stripe event's object is the PaymentIntent
        # or names it.
        Index(
            "ix_webhook_inbox_payment_intent",
            text(
                "(coalesce(payload #>> '{data,object,payment_intent}', "
                "payload #>> '{data,object,id}'))"
            ),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str]
    event_type: Mapped[str]
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(server_default="received")
    error: Mapped[str | None]
    attempts: Mapped[int] = mapped_column(server_default="0")
    received_at: Mapped[datetime] = _now()
    processed_at: Mapped[datetime | None]


# -------------------------------------------------------------------------------------- ledger


class LedgerTransaction(Base):
    """A double-entry transaction. Unique by source (`stripe:evt_...`, `order:ord_...`), so a
    replay cannot post twice; a deferred trigger refuses any that does not balance."""

    __tablename__ = "ledger_txn"
    __table_args__ = (
        # Finance's payouts list (console), without reading the rest of the ledger.
        Index(
            "ix_ledger_txn_payout",
            "occurred_at",
            "source",
            postgresql_where=text("kind = 'payout'"),
        ),
    )

    id: Mapped[str] = mapped_column(primary_key=True)  # led_...
    source: Mapped[str] = mapped_column(unique=True)
    kind: Mapped[str]
    order_id: Mapped[str | None] = mapped_column(index=True)
    description: Mapped[str | None]
    occurred_at: Mapped[datetime] = mapped_column(index=True)  # finance's day views
    created_at: Mapped[datetime] = _now()


class BalanceTxn(Base):
    """A Stripe balance transaction as our ledger booked it: what moved in our Stripe balance
    (amount, Stripe's fee, net, in the settlement currency, converted from the charge's own
    currency at `exchange_rate`), when it becomes available for payout, and the ledger
    transactions (by source) that hold its money. Append-only, like Stripe's own."""

    __tablename__ = "balance_txn"
    __table_args__ = (
        CheckConstraint("id LIKE 'txn\\_%'", name="stripe_id"),
        CheckConstraint("net_minor = amount_minor - fee_minor", name="net_is_amount_less_fee"),
        CheckConstraint("currency ~ '^[a-z]{3}$'", name="currency_iso"),
        Index("ix_balance_txn_available_on", "available_on"),
    )

    id: Mapped[str] = mapped_column(primary_key=True)  # txn_...
    type: Mapped[str]
    reporting_category: Mapped[str]
    source_id: Mapped[str | None]  # ch_, re_, pyr_, dp_, po_ ...
    order_id: Mapped[str | None] = mapped_column(index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    fee_minor: Mapped[int] = mapped_column(BigInteger)
    net_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    exchange_rate: Mapped[Decimal | None] = mapped_column(Numeric)
    source_amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    source_currency: Mapped[str | None] = mapped_column(String(3))
    available_on: Mapped[datetime]
    created: Mapped[datetime]
    ledger_sources: Mapped[list[str]] = mapped_column(
        ARRAY(Text), server_default=text("'{}'::text[]")
    )
    recorded_at: Mapped[datetime] = _now()


class LedgerEntry(Base):
    """One leg of a transaction. Signed minor units: debit positive, credit negative;
    a transaction's entries sum to 0 per currency."""

    __tablename__ = "ledger_entry"
    __table_args__ = (
        CheckConstraint("amount_minor <> 0", name="amount_nonzero"),
        CheckConstraint("currency ~ '^[a-z]{3}$'", name="currency_iso"),
        Index("ix_ledger_entry_account_currency", "account", "currency"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    txn_id: Mapped[str] = mapped_column(ForeignKey("ledger_txn.id"), index=True)
    account: Mapped[str]
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)


# ----------------------------------------------------------------------------------- audit log


class AuditLog(Base):
    """Who did what to which object, for operators' and finance's actions (append-only)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_subject", "subject"),)

    id: Mapped[str] = mapped_column(primary_key=True)  # aud_...
    actor: Mapped[str]
    action: Mapped[str]
    subject: Mapped[str]
    data: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    at: Mapped[datetime] = _now()


# ------------------------------------------------------------------------- invariant checks


class CheckRun(Base):
    """One run of the invariant checks: when, and how each check came out (counts per check, or
    the error that stopped it). Kept so an operator can see that checks ran, not only what broke."""

    __tablename__ = "check_run"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'ok', 'violations', 'error')", name="status"),
        Index("ix_check_run_started_at", "started_at"),
    )

    id: Mapped[str] = mapped_column(primary_key=True)  # run_...
    started_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(server_default="running")
    # Per check: {"open": n, "opened": n, "resolved": n} or {"error": "..."}.
    results: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))


class Violation(Base):
    """A broken business invariant, from the first check run that saw it until one that no longer
    does. At most one open row per fingerprint (check + subject): a condition that persists
    updates `last_seen`; one that clears is resolved; one that comes back opens a new row."""

    __tablename__ = "violation"
    __table_args__ = (
        CheckConstraint("char_length(check_name) <= 64", name="check_length"),
        CheckConstraint("char_length(subject) <= 255", name="subject_length"),
        CheckConstraint("currency IS NULL OR currency ~ '^[a-z]{3}$'", name="currency_iso"),
        CheckConstraint(
            "acknowledged_by IS NULL OR char_length(acknowledged_by) <= 100",
            name="acknowledged_by_length",
        ),
        Index(
            "uq_violation_open_fingerprint",
            "fingerprint",
            unique=True,
            postgresql_where=text("resolved_at IS NULL"),
        ),
        Index(
            "ix_violation_check_open", "check_name", postgresql_where=text("resolved_at IS NULL")
        ),
    )

    id: Mapped[str] = mapped_column(primary_key=True)  # vio_...
    fingerprint: Mapped[str] = mapped_column(String(64))
    check_name: Mapped[str]
    subject: Mapped[str]  # the SKU, order, payment or message it is about
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)  # money at stake
    currency: Mapped[str | None] = mapped_column(String(3))
    evidence: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    first_seen: Mapped[datetime] = _now()
    last_seen: Mapped[datetime] = _now()
    resolved_at: Mapped[datetime | None]
    first_run_id: Mapped[str] = mapped_column(ForeignKey("check_run.id"))
    last_run_id: Mapped[str] = mapped_column(ForeignKey("check_run.id"))
    # Alert bookkeeping: when a sink was last told (re-notified on a cadence), and when the
    # resolution was sent.
    notified_at: Mapped[datetime | None]
    resolve_notified_at: Mapped[datetime | None]
    # An operator saying "I am on it": shown to the others, never resolves (only a run does).
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None]


class SyncLagSample(Base):
    """One measured Shopify sync lag for one SKU: inbound = when we applied Shopify's change -
    when Shopify made it (X-Shopify-Triggered-At or updatedAt); outbound = when Shopify
    acknowledged our push - the event that caused it (order paid). Recent samples give the
    console each SKU's last sync and lag percentiles; /metrics drains them into a histogram.
    Pruned after core.sync_lag.RETENTION."""

    __tablename__ = "sync_lag_sample"
    __table_args__ = (
        CheckConstraint("direction IN ('inbound', 'outbound')", name="direction"),
        CheckConstraint("lag_ms >= 0", name="lag_nonnegative"),
        CheckConstraint("char_length(sku) <= 255", name="sku_length"),
        Index("ix_sync_lag_sample_sku_direction_observed_at", "sku", "direction", "observed_at"),
        Index("ix_sync_lag_sample_observed_at", "observed_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    direction: Mapped[str]
    sku: Mapped[str]
    lag_ms: Mapped[int] = mapped_column(BigInteger)
    observed_at: Mapped[datetime] = _now()


class SyncCursor(Base):
    """Where an incremental pull from a provider got to (e.g. the newest Stripe event seen), so
    the next pull continues there and never depends on webhooks having arrived."""

    __tablename__ = "sync_cursor"

    name: Mapped[str] = mapped_column(primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    updated_at: Mapped[datetime] = _now()


# ------------------------------------------------------------------ Stripe staging (reconcile)
# What reconciliation needs from Stripe's objects, pulled from /v1/events and the list endpoints
# (core.reconcile), so that matching with our tables is set-based SQL. Upserted by Stripe's id;
# `seen_at` is Stripe's time of the snapshot, so an older event never overwrites a newer state.
# Regular (logged) tables: the pull cursor in sync_cursor assumes these rows survive a crash.


class StripePayment(Base):
    """A Stripe PaymentIntent as last seen: its order (our metadata) and the money it took."""

    __tablename__ = "stripe_payment"

    id: Mapped[str] = mapped_column(primary_key=True)  # pi_...
    order_id: Mapped[str | None] = mapped_column(index=True)  # metadata.order_id
    amount: Mapped[int] = mapped_column(BigInteger)
    amount_received: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str]
    latest_charge: Mapped[str | None]
    created: Mapped[datetime]
    seen_at: Mapped[datetime]


class StripeRefund(Base):
    """A Stripe refund as last seen (ours or one made in the Dashboard)."""

    __tablename__ = "stripe_refund"

    id: Mapped[str] = mapped_column(primary_key=True)  # re_...
    payment_intent_id: Mapped[str | None] = mapped_column(index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str]
    created: Mapped[datetime]
    seen_at: Mapped[datetime]


class StripeDispute(Base):
    """A Stripe dispute as last seen; `withdrawn` is what its balance transactions took out of
    our balance net of reinstatements (0 for an inquiry, or a dispute won)."""

    __tablename__ = "stripe_dispute"

    id: Mapped[str] = mapped_column(primary_key=True)  # dp_...
    payment_intent_id: Mapped[str | None] = mapped_column(index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    withdrawn: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str]
    created: Mapped[datetime]
    seen_at: Mapped[datetime]

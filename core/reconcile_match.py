"""Match the staged Stripe objects with our orders, ledger and refunds, in one set-based
statement (no loop per payment): every PaymentIntent that took money and every paid order comes
out matched, or with the reason it does not reconcile and the money at stake.

Reasons, checked in this order for a PaymentIntent (the first that holds is reported):
- `duplicate_charge`: another PaymentIntent already paid the same order (the one our ledger
  booked counts as the first, else the oldest) and this one's money was not given back;
- `missing_in_ledger`: Stripe holds money we never booked (a dropped `payment_intent.succeeded`,
  or a payment for no order of ours);
- `currency_mismatch` / `amount_mismatch`: Stripe took another currency or amount than the order;
- `refund_mismatch`: what Stripe refunded differs from our succeeded refunds for the order;
- `dispute_unrecorded`: a dispute Stripe has is not on our order's timeline, or what its balance
  transactions withdrew differs from our ledger's disputes account for the order.
And for an order: `missing_in_stripe`, paid in our books but no PaymentIntent of it succeeded
in Stripe. Each counts only once its newest fact (Stripe's `created`, our `paid_at`) is older
than the grace period, and orders only when paid since the staging tables are complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

REASONS = (
    "duplicate_charge",
    "missing_in_ledger",
    "currency_mismatch",
    "amount_mismatch",
    "refund_mismatch",
    "dispute_unrecorded",
    "missing_in_stripe",
)

UNRECONCILED_SQL = text(
    """
WITH stripe_refunded AS (
    -- Money Stripe gave back per PaymentIntent: succeeded refunds, as our refund rows count.
    SELECT payment_intent_id, sum(amount) AS amount, max(created) AS newest
      FROM stripe_refund
     WHERE status = 'succeeded'
     GROUP BY payment_intent_id
), stripe_disputed AS (
    SELECT payment_intent_id, array_agg(id ORDER BY id) AS ids, sum(amount) AS amount,
           sum(withdrawn) AS withdrawn, max(created) AS newest
      FROM stripe_dispute
     GROUP BY payment_intent_id
), our_refunded AS (
    SELECT order_id, sum(amount_minor) AS amount
      FROM refund
     WHERE status = 'succeeded'
     GROUP BY order_id
), our_disputed AS (
    -- What the ledger says disputes withdrew (debits of the disputes account), per order.
    SELECT t.order_id, sum(e.amount_minor) AS amount
      FROM ledger_txn t
      JOIN ledger_entry e ON e.txn_id = t.id
     WHERE t.kind = 'dispute' AND e.account = 'expenses:disputes'
     GROUP BY t.order_id
), taken AS (
    -- PaymentIntents that took money, with what came back; per order the booked one ranks first.
    SELECT sp.*,
           b.id IS NOT NULL AS booked,
           coalesce(r.amount, 0) AS refunded,
           d.ids AS dispute_ids,
           coalesce(d.amount, 0) AS disputed,
           coalesce(d.withdrawn, 0) AS withdrawn,
           greatest(sp.created, r.newest, d.newest) AS newest,
           row_number() OVER (
               PARTITION BY coalesce(sp.order_id, sp.id)
               ORDER BY b.id IS NOT NULL DESC, sp.created, sp.id
           ) AS nth
      FROM stripe_payment sp
      LEFT JOIN ledger_txn b ON b.source = 'payment:' || sp.id
      LEFT JOIN stripe_refunded r ON r.payment_intent_id = sp.id
      LEFT JOIN stripe_disputed d ON d.payment_intent_id = sp.id
     WHERE sp.status = 'succeeded'
), judged AS (
    SELECT p.*, o.id AS our_order, o.amount_minor AS our_amount, o.currency AS our_currency,
           coalesce(ro.amount, 0) AS our_refunded, coalesce(od.amount, 0) AS our_disputed,
           CASE
             WHEN p.nth > 1 THEN
               CASE WHEN p.amount_received > p.refunded THEN 'duplicate_charge' END
             WHEN NOT p.booked THEN
               CASE WHEN p.amount_received > p.refunded THEN 'missing_in_ledger' END
             -- a payment that did not match its order reconciles once it is given back
             WHEN p.currency <> o.currency AND p.amount_received > p.refunded
               THEN 'currency_mismatch'
             WHEN p.amount_received <> o.amount_minor AND p.amount_received > p.refunded
               THEN 'amount_mismatch'
             WHEN p.refunded <> coalesce(ro.amount, 0) THEN 'refund_mismatch'
             WHEN p.withdrawn <> coalesce(od.amount, 0)
               OR EXISTS (
                    -- a dispute id Stripe has that our order's timeline never opened
                    SELECT 1 FROM unnest(p.dispute_ids) AS dispute(id)
                     WHERE NOT EXISTS (
                           SELECT 1 FROM order_event ev
                            WHERE ev.order_id = o.id AND ev.kind = 'dispute_opened'
                              AND ev.data ->> 'dispute_id' = dispute.id))
               THEN 'dispute_unrecorded'
           END AS reason
      FROM taken p
      LEFT JOIN orders o ON o.id = p.order_id
      LEFT JOIN our_refunded ro ON ro.order_id = p.order_id
      LEFT JOIN our_disputed od ON od.order_id = p.order_id
     WHERE p.newest <= :cutoff
)
SELECT id AS subject, reason, currency,
       CASE reason
         WHEN 'currency_mismatch' THEN amount_received
         WHEN 'amount_mismatch' THEN abs(amount_received - our_amount)
         WHEN 'refund_mismatch' THEN abs(refunded - our_refunded)
         WHEN 'dispute_unrecorded' THEN greatest(disputed, abs(withdrawn - our_disputed))
         ELSE amount_received - refunded
       END AS amount_minor,
       jsonb_build_object(
           'reason', reason, 'payment_intent_id', id, 'order_id', order_id,
           'stripe', jsonb_build_object(
               'amount_received', amount_received, 'currency', currency,
               'refunded', refunded, 'disputes', dispute_ids, 'disputed', disputed,
               'withdrawn', withdrawn, 'charge', latest_charge,
               'created', created),
           'ours', jsonb_build_object(
               'order', our_order, 'booked', booked, 'amount', our_amount,
               'currency', our_currency, 'refunded', our_refunded, 'disputed', our_disputed)
       ) AS evidence
  FROM judged
 WHERE reason IS NOT NULL

UNION ALL

-- Paid in our books, but no PaymentIntent of the order succeeded in Stripe.
SELECT o.id, 'missing_in_stripe', o.currency, o.amount_minor - o.refunded_minor,
       jsonb_build_object(
           'reason', 'missing_in_stripe', 'payment_intent_id', o.payment_intent_id,
           'order_id', o.id,
           'stripe', jsonb_build_object('status', sp.status),
           'ours', jsonb_build_object(
               'amount', o.amount_minor, 'currency', o.currency, 'status', o.status,
               'paid_at', o.paid_at, 'refunded', o.refunded_minor))
  FROM orders o
  LEFT JOIN stripe_payment sp ON sp.id = o.payment_intent_id
 WHERE o.paid_at <= :cutoff
   AND o.paid_at >= :covered_since
   AND sp.status IS DISTINCT FROM 'succeeded'
"""
)


@dataclass(frozen=True)
class Unreconciled:
    """A PaymentIntent (`pi_...`) or order (`ord_...`) that does not reconcile, and why."""

    subject: str
    reason: str
    amount_minor: int
    currency: str
    evidence: dict[str, Any]


def unreconciled(
    session: Session, *, cutoff: datetime, covered_since: datetime
) -> list[Unreconciled]:
    """Every payment that does not reconcile as of `cutoff` (now minus the grace period)."""
    rows = session.execute(
        UNRECONCILED_SQL, {"cutoff": cutoff, "covered_since": covered_since}
    ).all()
    return [
        Unreconciled(r.subject, r.reason, int(r.amount_minor), r.currency, r.evidence) for r in rows
    ]

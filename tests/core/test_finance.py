"""The finance views (core/finance.py) against a real stack: orders paid through the real stripe
SDK against the sandbox, a partial refund through the admin API, a chargeback
(`pm_card_createDispute`), an EUR order of region `eu` settled in USD, a payment whose webhook
was dropped and one made outside dotshop (both unreconciled after a check run), and two
automatic payouts. The views' numbers are held against Stripe's own objects (balance
transactions, PaymentIntents, refunds, disputes, payouts, as the SDK returns them) and against
each other.

Stripe API reference: a BalanceTransaction's `amount`, `fee` and `net` are in the balance's
currency (an EUR charge settles as USD in a US account); `GET /v1/balance_transactions?payout=`
lists what an automatic payout covers, the payout's own transaction included.
"""

from __future__ import annotations

import pickle
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

import checks.payments
from core import finance, payouts
from core.errors import InvalidRequest, NotFound
from core.violations import Finding
from tests.e2e.conftest import Stack, stack  # noqa: F401  (the module's real stack)
from tests.e2e.helpers import admin, checkout, disputed_order, paid_order, skus_with_stock
from tests.e2e.test_balance_ledger import eu_paid_order
from tests.e2e.test_payouts import check as payout_check
from tests.e2e.test_payouts import run_payouts
from tests.e2e.test_reconcile import dropped
from tests.e2e.test_reconcile import reconcile as reconcile_check


def _day(epoch: int) -> date:
    return datetime.fromtimestamp(epoch, UTC).date()


@dataclass
class Scenario:
    refunded: dict  # checkout body of the partly refunded USD order
    refund_amount: int
    disputed: dict
    eu: dict
    dropped: dict  # its payment_intent.succeeded never reached us
    outside_pi: str  # a PaymentIntent made outside dotshop
    quiet_refund: dict  # paid, then refunded in Stripe with the refund's webhooks dropped
    quiet_refund_id: str
    found: dict[str, Finding]  # the unreconciled_payment run's findings by subject
    unbooked_txns: set[str]  # Stripe balance transactions our ledger never booked
    first_payout: dict
    later: dict  # paid after the first payout, two sandbox days later
    second_payout: dict
    stripe_intents: list[dict[str, Any]]
    stripe_txns: list[dict[str, Any]]

    @property
    def unbooked_pis(self) -> set[str]:
        """The payments our ledger never booked."""
        return {self.dropped["payment"]["payment_intent_id"], self.outside_pi}


def _all(listing: Any) -> list[dict[str, Any]]:
    return [o.to_dict() for o in listing.auto_paging_iter()]


@pytest.fixture(scope="module")
def scenario(stack: Stack) -> Scenario:  # noqa: F811
    skus = skus_with_stock(stack)
    client = stack.stripe_client()

    refunded = paid_order(stack, skus[0])
    part = refunded["amount"] // 3
    made = admin(
        stack,
        "POST",
        f"/admin/v1/orders/{refunded['order_id']}/refunds",
        json={"amount": part},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    assert made.status_code == 202, made.text
    stack.settle()
    disputed, _, _ = disputed_order(stack, skus[1])
    stack.settle()
    eu = eu_paid_order(stack, skus[2])

    lost = checkout(stack, [{"sku": skus[3], "quantity": 1}]).json()
    with dropped(stack):
        client.v1.payment_intents.confirm(
            lost["payment"]["payment_intent_id"], {"payment_method": "pm_card_visa"}
        )
    outside = client.v1.payment_intents.create(
        {"amount": 4321, "currency": "usd", "payment_method_types": ["card"]}
    )
    client.v1.payment_intents.confirm(outside.id, {"payment_method": "pm_card_visa"})
    quiet = paid_order(stack, skus[5])
    with dropped(stack):
        quiet_refund = client.v1.refunds.create(
            {"payment_intent": quiet["payment"]["payment_intent_id"], "amount": 300}
        )
    stack.settle()
    found = reconcile_check(stack)
    assert {s: f.evidence["reason"] for s, f in found.items()} == {
        lost["payment"]["payment_intent_id"]: "missing_in_ledger",
        outside.id: "missing_in_ledger",
        quiet["payment"]["payment_intent_id"]: "refund_mismatch",
    }
    unbooked_txns = {str(quiet_refund.balance_transaction)}
    for pi in (lost["payment"]["payment_intent_id"], outside.id):
        charge = client.v1.payment_intents.retrieve(pi, {"expand": ["latest_charge"]}).latest_charge
        unbooked_txns.add(charge.balance_transaction)  # type: ignore[union-attr]

    [first] = run_payouts(stack)
    payout_check(stack)
    later = paid_order(stack, skus[4])
    [second] = run_payouts(stack)
    with Session(stack.engine) as session:
        [pending], _ = finance.payouts(session, limit=1)
    # Reconciled by Stripe, its covered transactions not yet fetched by the check.
    assert (pending.id, pending.verification) == (second["id"], finance.AWAITING_CHECK)
    assert pending.categories == () and pending.difference_minor is None
    payout_check(stack)
    return Scenario(
        refunded,
        part,
        disputed,
        eu,
        lost,
        outside.id,
        quiet,
        quiet_refund.id,
        found,
        unbooked_txns,
        first,
        later,
        second,
        _all(client.v1.payment_intents.list({"limit": 100})),
        _all(client.v1.balance_transactions.list({"limit": 100})),
    )


@pytest.fixture
def session(stack: Stack) -> Iterable[Session]:  # noqa: F811
    with Session(stack.engine) as s:
        yield s


def _rows(rows: list[finance.DaySummary]) -> dict[tuple[date, str], finance.DaySummary]:
    return {(r.day, r.currency): r for r in rows}


def test_the_checks_read_are_the_ones_core_finance_names() -> None:
    assert finance.UNRECONCILED_CHECK == checks.payments.CHECK


def test_daily_summary_is_stripes_money_per_day_and_currency(
    stack: Stack,  # noqa: F811
    scenario: Scenario,
    session: Session,
) -> None:
    """Gross, refunds, disputes and fees per UTC day and currency are what Stripe's objects
    say; net + converted is the day's Stripe balance movement (the nets of the balance
    transactions we booked); payments are Stripe's succeeded PaymentIntents, matched or
    unreconciled."""
    client = stack.stripe_client()
    succeeded = [p for p in scenario.stripe_intents if p["status"] == "succeeded"]
    days = sorted({_day(p["created"]) for p in succeeded})
    summary = finance.daily_summary(session, start=days[0], end=days[-1] + timedelta(days=3))
    got = _rows(summary)

    expect: dict[tuple[date, str], Counter[str]] = defaultdict(Counter)
    for p in succeeded:
        key = (_day(p["created"]), p["currency"])
        expect[key]["payments"] += 1
        if p["id"] not in scenario.unbooked_pis:
            expect[key]["gross_minor"] += p["amount_received"]
        if p["id"] in scenario.found:  # a booked payment with an open violation is not matched
            expect[key]["unreconciled"] += 1
            expect[key]["unreconciled_minor"] += scenario.found[p["id"]].amount_minor or 0
        else:
            expect[key]["matched"] += 1
            expect[key]["matched_minor"] += p["amount_received"]
    for refund in _all(client.v1.refunds.list({"limit": 100})):
        if refund["id"] != scenario.quiet_refund_id:  # never reached our books
            key = (_day(refund["created"]), refund["currency"])
            expect[key]["refunds_minor"] += refund["amount"]
    for dispute in _all(client.v1.disputes.list({"limit": 100})):
        expect[(_day(dispute["created"]), dispute["currency"])]["disputes_minor"] += dispute[
            "amount"
        ]
    balance: Counter[tuple[date, str]] = Counter()
    for bt in scenario.stripe_txns:
        if bt["id"] in scenario.unbooked_txns or bt["reporting_category"] == "payout":
            continue
        expect[(_day(bt["created"]), bt["currency"])]["fees_minor"] += bt["fee"]
        balance[(_day(bt["created"]), bt["currency"])] += bt["net"]

    assert set(got) == set(expect)
    for key, row in got.items():
        fields = ("gross_minor", "refunds_minor", "disputes_minor", "fees_minor", "payments")
        fields += ("matched", "matched_minor", "unreconciled", "unreconciled_minor")
        assert {f: getattr(row, f) for f in fields} == {f: expect[key][f] for f in fields}, key
        assert row.net_minor == (
            row.gross_minor - row.refunds_minor - row.disputes_minor - row.fees_minor
        )
        assert row.payments == row.matched + row.unreconciled
        assert row.net_minor + row.converted_minor == balance[key], key

    # The EUR sale is EUR gross converted out of EUR; its fee and conversion are USD.
    eu_day = _day(next(p for p in succeeded if p["currency"] == "eur")["created"])
    assert got[(eu_day, "eur")].converted_minor == -scenario.eu["amount"]
    assert got[(eu_day, "eur")].net_minor + got[(eu_day, "eur")].converted_minor == 0


def test_daily_summary_filters_by_region_currency_and_days(
    scenario: Scenario, session: Session
) -> None:
    """Region `eu` keeps the EU order's EUR sale and its USD fee and conversion, nothing of US
    orders; `us` drops the payment of no order; a currency keeps that currency; a range that
    leaves out the first day leaves out its money."""
    first = min(_day(p["created"]) for p in scenario.stripe_intents)
    later_day = _day(
        next(
            p["created"]
            for p in scenario.stripe_intents
            if p["id"] == scenario.later["payment"]["payment_intent_id"]
        )
    )
    assert later_day > first  # the sandbox clock moved on for the payout
    end = later_day + timedelta(days=1)
    everything = _rows(finance.daily_summary(session, start=first, end=end))

    eu = _rows(finance.daily_summary(session, start=first, end=end, region="eu"))
    eu_bt = next(
        bt
        for bt in scenario.stripe_txns
        if bt["reporting_category"] == "charge" and bt.get("exchange_rate")
    )
    eu_day = _day(eu_bt["created"])
    assert set(eu) == {(eu_day, "eur"), (eu_day, "usd")}
    assert (eu[(eu_day, "eur")].gross_minor, eu[(eu_day, "eur")].matched) == (
        scenario.eu["amount"],
        1,
    )
    usd = eu[(eu_day, "usd")]
    assert (usd.gross_minor, usd.fees_minor, usd.converted_minor, usd.payments) == (
        0,
        eu_bt["fee"],
        eu_bt["amount"],
        0,
    )

    us = _rows(finance.daily_summary(session, start=first, end=end, region="us"))
    assert all(currency == "usd" for _, currency in us)
    for key, row in us.items():  # the US and EU parts of each USD day make up the whole
        whole, eu_part = everything[key], eu.get(key)
        assert row.fees_minor + (eu_part.fees_minor if eu_part else 0) == whole.fees_minor
        assert row.gross_minor == whole.gross_minor and row.matched == whole.matched
    day_us, day_all = us[(first, "usd")], everything[(first, "usd")]
    assert day_us.unreconciled == day_all.unreconciled - 1  # the outside payment has no order

    eur_only = finance.daily_summary(session, start=first, end=end, currency="EUR")
    assert [(r.day, r.currency) for r in eur_only] == [(eu_day, "eur")]

    later_only = _rows(finance.daily_summary(session, start=first + timedelta(days=1), end=end))
    assert set(later_only) == {(later_day, "usd")}
    assert later_only[(later_day, "usd")] == everything[(later_day, "usd")]
    assert later_only[(later_day, "usd")].gross_minor == scenario.later["amount"]

    with pytest.raises(InvalidRequest):
        finance.daily_summary(session, start=end, end=first)


def test_unreconciled_pages_and_filters(
    stack: Stack,  # noqa: F811
    scenario: Scenario,
    session: Session,
) -> None:
    """The open unreconciled payments, oldest first, paged by `starting_after`, with their
    order, PaymentIntent, money, age at the `now` asked, and who acknowledged them."""
    lost_pi = scenario.dropped["payment"]["payment_intent_id"]
    with stack.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE violation SET acknowledged_by = 'ada', acknowledged_at = now()"
                " WHERE subject = :s"
            ),
            {"s": lost_pi},
        )
    now = datetime.now(UTC)
    rows, more = finance.unreconciled(session, now=now)
    assert not more and {r.subject: r.reason for r in rows} == {
        s: f.evidence["reason"] for s, f in scenario.found.items()
    }
    assert rows == sorted(rows, key=lambda r: (r.first_seen, r.id))
    by_subject = {r.subject: r for r in rows}
    lost = by_subject[lost_pi]
    assert (lost.order_id, lost.payment_intent_id, lost.region) == (
        scenario.dropped["order_id"],
        lost_pi,
        "us",
    )
    assert (lost.amount_minor, lost.currency) == (scenario.dropped["amount"], "usd")
    assert lost.acknowledged_by == "ada" and lost.acknowledged_at is not None
    outside = by_subject[scenario.outside_pi]
    assert (outside.order_id, outside.region, outside.amount_minor) == (None, None, 4321)
    assert outside.acknowledged_by is None
    quiet = by_subject[scenario.quiet_refund["payment"]["payment_intent_id"]]
    assert (quiet.order_id, quiet.amount_minor) == (scenario.quiet_refund["order_id"], 300)

    later = lost.first_seen + timedelta(seconds=90)
    us, _ = finance.unreconciled(session, region="us", now=later)
    assert {r.subject for r in us} == set(scenario.found) - {scenario.outside_pi}
    assert {r.age_seconds for r in us} == {90}  # seen in one run

    first, more = finance.unreconciled(session, limit=2, now=now)
    assert more and first == rows[:2]
    rest, more = finance.unreconciled(session, limit=2, starting_after=first[-1].id, now=now)
    assert not more and rest == rows[2:]
    assert finance.unreconciled(session, currency="eur") == ([], False)
    assert finance.unreconciled(session, region="eu") == ([], False)
    with pytest.raises(NotFound):
        finance.unreconciled(session, starting_after="vio_unknown")
    with pytest.raises(InvalidRequest):
        finance.unreconciled(session, limit=0)


def test_payment_detail_shows_both_sides(
    stack: Stack,  # noqa: F811
    scenario: Scenario,
    session: Session,
) -> None:
    """By PaymentIntent or by order: the order, Stripe's staged objects and balance
    transactions, and our ledger; a payment of no order is Stripe's side only; None for ids
    nobody knows."""
    pi = scenario.refunded["payment"]["payment_intent_id"]
    detail = finance.payment_detail(session, pi)
    assert detail is not None and detail.order is not None
    assert (detail.order.id, detail.order.status, detail.order.refunded_minor) == (
        scenario.refunded["order_id"],
        "partially_refunded",
        scenario.refund_amount,
    )
    assert [p.id for p in detail.payments] == [pi]
    [stripe_refund] = stack.stripe_client().v1.refunds.list({"payment_intent": pi}).data
    assert [(r.id, r.amount, r.status) for r in detail.stripe_refunds] == [
        (stripe_refund.id, scenario.refund_amount, "succeeded")
    ]
    assert [r.stripe_refund_id for r in detail.refunds] == [stripe_refund.id]
    stripe_txns = {
        bt["id"]: bt
        for bt in scenario.stripe_txns
        if bt["source"] in (stripe_refund.id, detail.payments[0].latest_charge)
    }
    assert {b.id: (b.amount_minor, b.fee_minor, b.net_minor) for b in detail.balance_txns} == {
        i: (bt["amount"], bt["fee"], bt["net"]) for i, bt in stripe_txns.items()
    }
    # The payment, its charge's fee (balance transaction), the refund (no fee, no conversion).
    assert Counter(t.kind for t in detail.transactions) == Counter(
        ["payment", "stripe_settlement", "refund"]
    )
    assert all(sum(p.amount_minor for p in t.postings) == 0 for t in detail.transactions)
    assert detail.violations == ()

    assert pickle.loads(pickle.dumps(detail)) == detail  # the console caches it

    by_order = finance.payment_detail(session, scenario.refunded["order_id"])
    assert by_order is not None and by_order.transactions == detail.transactions
    assert by_order.balance_txns == detail.balance_txns

    disputed = finance.payment_detail(session, scenario.disputed["order_id"])
    assert disputed is not None and disputed.order is not None
    assert disputed.order.status == "disputed"
    [dispute] = disputed.disputes
    assert (dispute.amount, dispute.withdrawn) == (scenario.disputed["amount"],) * 2
    assert "dispute" in {b.reporting_category for b in disputed.balance_txns}

    lost = finance.payment_detail(session, scenario.dropped["payment"]["payment_intent_id"])
    assert lost is not None and lost.order is not None
    assert lost.order.status == "awaiting_payment" and lost.transactions == ()
    assert [p.status for p in lost.payments] == ["succeeded"]
    assert [v.reason for v in lost.violations] == ["missing_in_ledger"]

    outside = finance.payment_detail(session, scenario.outside_pi)
    assert outside is not None and outside.order is None
    assert [p.amount_received for p in outside.payments] == [4321]
    assert [v.subject for v in outside.violations] == [scenario.outside_pi]

    # A refund made in Stripe that never reached us: on Stripe's side only.
    quiet = finance.payment_detail(session, scenario.quiet_refund["order_id"])
    assert quiet is not None and quiet.order is not None and quiet.order.refunded_minor == 0
    assert [(r.id, r.amount) for r in quiet.stripe_refunds] == [(scenario.quiet_refund_id, 300)]
    assert quiet.refunds == () and "refund" not in {t.kind for t in quiet.transactions}
    assert [v.reason for v in quiet.violations] == ["refund_mismatch"]

    assert finance.payment_detail(session, "pi_unknown") is None
    assert finance.payment_detail(session, "ord_unknown") is None
    with pytest.raises(InvalidRequest):
        finance.payment_detail(session, "ch_123")


def test_payouts_are_stripes_payouts_checked_against_the_ledger(
    stack: Stack,  # noqa: F811
    scenario: Scenario,
    session: Session,
) -> None:
    """Each payout as Stripe has it (amount, currency, arrival, its own balance transaction),
    its composition per reporting category from `balance_transactions?payout=`, what our
    ledger holds for it (core.payouts.verify) and the difference: the first covers the two
    payments and the refund we never booked, the second matches."""
    client = stack.stripe_client()
    first, second = scenario.first_payout, scenario.second_payout
    rows, more = finance.payouts(session)
    assert not more and [r.id for r in rows] == [second["id"], first["id"]]
    assert pickle.loads(pickle.dumps(rows)) == rows  # the console caches them
    by_id = {r.id: r for r in rows}

    for payout in (first, second):
        row = by_id[payout["id"]]
        stripe_payout = client.v1.payouts.retrieve(payout["id"]).to_dict()
        assert (row.amount_minor, row.currency, row.status) == (
            stripe_payout["amount"],
            stripe_payout["currency"],
            stripe_payout["status"],
        )
        assert row.created == datetime.fromtimestamp(stripe_payout["created"], UTC)
        assert row.arrival_date == datetime.fromtimestamp(stripe_payout["arrival_date"], UTC)
        assert row.automatic is True and row.reconciled_at is not None
        assert row.balance_txn_id == stripe_payout["balance_transaction"]
        covered = [
            bt
            for bt in _all(client.v1.balance_transactions.list({"payout": payout["id"]}))
            if bt["reporting_category"] != "payout"
        ]
        stripe_by_category: Counter[str] = Counter()
        for bt in covered:
            stripe_by_category[bt["reporting_category"]] += bt["net"]
        assert {c.category: c.stripe_minor for c in row.categories} == stripe_by_category
        assert sum(c.count for c in row.categories) == len(covered)
        [(_, record)] = [(p, r) for p, r, _ in payouts.to_verify(session) if p == payout["id"]]
        verified = payouts.verify(session, payout["id"], record)
        assert {c.category: c.ledger_minor for c in row.categories} == verified.ledger
        assert row.difference_minor == verified.difference
        assert row.stripe_total_minor == row.amount_minor
        assert [line.balance_txn_id for line in finance.payout_lines(session, payout["id"])] == [
            bt["id"] for bt in covered
        ]

    mismatched, clean = by_id[first["id"]], by_id[second["id"]]
    # What Stripe paid out that our books miss, per category: the charges of the payments we
    # never booked and the refund we never heard of.
    missing: Counter[str] = Counter()
    for bt in scenario.stripe_txns:
        if bt["id"] in scenario.unbooked_txns:
            missing[bt["reporting_category"]] += bt["net"]
    assert (mismatched.verification, mismatched.difference_minor) == (
        finance.MISMATCHED,
        sum(missing.values()),
    )
    assert [c.category for c in mismatched.categories] == ["charge", "refund", "dispute"]
    assert {c.category: c.difference_minor for c in mismatched.categories} == {
        "charge": missing["charge"],
        "refund": missing["refund"],
        "dispute": 0,
    }
    assert (clean.verification, clean.difference_minor) == (finance.VERIFIED, 0)
    assert [(c.category, c.count, c.difference_minor) for c in clean.categories] == [
        ("charge", 1, 0)
    ]

    page, more = finance.payouts(session, limit=1)
    assert more and [r.id for r in page] == [second["id"]]
    page, more = finance.payouts(session, limit=1, starting_after=second["id"])
    assert not more and [r.id for r in page] == [first["id"]]
    first_day = mismatched.created.date()
    assert [r.id for r in finance.payouts(session, start=first_day, end=first_day)[0]] == [
        first["id"]
    ]
    assert [r.id for r in finance.payouts(session, start=first_day + timedelta(days=1))[0]] == [
        second["id"]
    ]
    assert finance.payouts(session, currency="eur") == ([], False)
    with pytest.raises(NotFound):
        finance.payouts(session, starting_after="po_unknown")


def test_payout_lines_tie_the_bank_line_to_orders(
    stack: Stack,  # noqa: F811
    scenario: Scenario,
    session: Session,
) -> None:
    """Every transaction the first payout covers, with its order: through our balance
    transaction record, or for a charge or refund we never booked through Stripe's
    PaymentIntent; a payment of no order has none."""
    lines = finance.payout_lines(session, scenario.first_payout["id"])
    orders_by_category: dict[str, set[str | None]] = defaultdict(set)
    for line in lines:
        orders_by_category[line.category].add(line.order_id)
        assert line.currency == "usd"
    assert orders_by_category == {
        "charge": {
            scenario.refunded["order_id"],
            scenario.disputed["order_id"],
            scenario.eu["order_id"],
            scenario.dropped["order_id"],
            scenario.quiet_refund["order_id"],
            None,
        },
        "refund": {scenario.refunded["order_id"], scenario.quiet_refund["order_id"]},
        "dispute": {scenario.disputed["order_id"]},
    }
    by_pi = {line.payment_intent_id: line for line in lines if line.category == "charge"}
    lost = by_pi[scenario.dropped["payment"]["payment_intent_id"]]
    assert (lost.recorded, lost.amount_minor) == (False, None)
    assert by_pi[scenario.outside_pi].order_id is None
    [quiet] = [
        line
        for line in lines
        if line.balance_txn_id in scenario.unbooked_txns and line.category == "refund"
    ]
    assert (quiet.recorded, quiet.payment_intent_id, quiet.order_id) == (
        False,
        scenario.quiet_refund["payment"]["payment_intent_id"],
        scenario.quiet_refund["order_id"],
    )
    stripe_net = {bt["id"]: bt["net"] for bt in scenario.stripe_txns}
    assert all(line.net_minor == stripe_net[line.balance_txn_id] for line in lines)
    assert all(
        line.recorded and line.fee_minor is not None
        for line in lines
        if line.balance_txn_id not in scenario.unbooked_txns
    )
    assert finance.payout_lines(session, "po_unknown") == []

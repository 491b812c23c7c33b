"""Benchmark of the set-based payment matching (`dotshop bench reconcile --payments N`).

It creates a scratch database on the configured server (DATABASE_URL, or the embedded one),
migrates it, loads N synthetic payments with COPY straight into the Stripe staging table and our
tables (orders, ledger, refunds, disputes), seeds one of each kind of mismatch every
`DEFECT_EVERY` payments, runs core.reconcile_match and drops the database again. It prints the
matching throughput next to that of a plain COPY of the same payment rows measured in the same
run, so the figure compares across machines, and checks that every seeded mismatch was found.
"""

from __future__ import annotations

import io
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import make_url, text
from sqlalchemy.orm import Session

from core.db import make_engine, normalize_url
from core.migrate import upgrade
from core.reconcile_match import unreconciled

DEFAULT_PAYMENTS = 20_000
# Out of every hundred payments, one of each reason is broken (7 %): enough to make the
# mismatches real work, few enough that matched payments dominate as they do in production.
DEFECT_EVERY = 100
DEFECTS = {
    1: "missing_in_ledger",
    2: "amount_mismatch",
    3: "currency_mismatch",
    4: "duplicate_charge",
    5: "refund_mismatch",
    6: "dispute_unrecorded",
    7: "missing_in_stripe",
}
MATCHED_REFUND, MATCHED_DISPUTE = 8, 9  # matched, but with refunds / a dispute on both sides
# Rows per COPY chunk: bounded memory whatever N.
CHUNK = 50_000
# Tables whose user triggers (append-only guards, deferred balance checks) are off while the
# scratch database loads: the benchmark measures matching, and the rows are balanced by design.
TRIGGERED = ("ledger_txn", "ledger_entry", "order_event", "orders")

COLUMNS = {
    "orders": "id, checkout_id, region, status, email, shipping_address, currency, amount_minor, "
    "refunded_minor, payment_intent_id, expires_at, paid_at",
    "ledger_txn": "id, source, kind, order_id, occurred_at",
    "ledger_entry": "txn_id, account, currency, amount_minor",
    "refund": "id, order_id, amount_minor, currency, status, stripe_refund_id",
    "stripe_refund": "id, payment_intent_id, amount, currency, status, created, seen_at",
    "stripe_dispute": "id, payment_intent_id, amount, withdrawn, currency, status, created, "
    "seen_at",
    "order_event": "order_id, kind, data",
}
PAYMENT_COLUMNS = (
    "id, order_id, amount, amount_received, currency, status, latest_charge, created, seen_at"
)


@dataclass(frozen=True)
class BenchResult:
    payments: int
    match_seconds: float
    copy_seconds: float
    seeded: Counter[str]
    found: Counter[str]

    @property
    def payments_per_second(self) -> float:
        return self.payments / self.match_seconds

    @property
    def copy_rows_per_second(self) -> float:
        return self.payments / self.copy_seconds

    def lines(self) -> list[str]:
        seeded, found = sum(self.seeded.values()), sum(self.found.values())
        per_reason = " ".join(f"{r}={self.found[r]}/{self.seeded[r]}" for r in sorted(self.seeded))
        return [
            f"reconcile: {self.payments} payments matched in {self.match_seconds:.3f} s "
            f"= {self.payments_per_second:,.0f} payments/s",
            f"baseline: COPY of the same {self.payments} payment rows in {self.copy_seconds:.3f} s "
            f"= {self.copy_rows_per_second:,.0f} rows/s",
            f"ratio: matching runs at {self.payments_per_second / self.copy_rows_per_second:.3f} "
            "of COPY's rate",
            f"mismatches: seeded {seeded}, found {found} ({per_reason})",
        ]


def _rows(n: int, at: str) -> Iterator[tuple[str, str]]:
    """(table, COPY text line) for payment i in 0..n-1, by the scheme in DEFECTS."""
    for i in range(n):
        kind = i % DEFECT_EVERY
        order, pi = f"ord_b{i:09d}", f"pi_b{i:09d}"
        amount = 1000 + (i % 50) * 100
        paid = kind != 1
        refunded = 100 if kind == MATCHED_REFUND else 0
        status = "paid" if paid else "awaiting_payment"
        yield (
            "orders",
            f"{order}\tchk_b{i:09d}\tus\t{status}\tb@example.com\t{{}}\tusd\t{amount}\t"
            f"{refunded}\t{pi}\t{at}\t{at if paid else chr(92) + 'N'}",
        )
        taken, currency = (amount - 100 if kind == 2 else amount), ("eur" if kind == 3 else "usd")
        if kind != 7:
            yield (
                "stripe_payment",
                f"{pi}\t{order}\t{taken}\t{taken}\t{currency}\tsucceeded\tch_b{i:09d}\t{at}\t{at}",
            )
        if kind == 4:
            yield (
                "stripe_payment",
                f"pi_d{i:09d}\t{order}\t{amount}\t{amount}\tusd\tsucceeded\tch_d{i:09d}\t{at}\t{at}",
            )
        if paid:
            txn = f"led_b{i:09d}"
            booked = "payment_mismatch" if kind in (2, 3) else "payment"
            yield "ledger_txn", f"{txn}\tpayment:{pi}\t{booked}\t{order}\t{at}"
            yield "ledger_entry", f"{txn}\tassets:stripe_balance\t{currency}\t{taken}"
            yield "ledger_entry", f"{txn}\trevenue:sales\t{currency}\t{-taken}"
        if kind in (5, MATCHED_REFUND):
            yield "stripe_refund", f"re_b{i:09d}\t{pi}\t100\tusd\tsucceeded\t{at}\t{at}"
        if kind == MATCHED_REFUND:
            yield "refund", f"rfd_b{i:09d}\t{order}\t100\tusd\tsucceeded\tre_b{i:09d}"
        if kind in (6, MATCHED_DISPUTE):
            yield (
                "stripe_dispute",
                f"dp_b{i:09d}\t{pi}\t{amount}\t{amount}\tusd\tneeds_response\t{at}\t{at}",
            )
        if kind == MATCHED_DISPUTE:
            txn = f"led_d{i:09d}"
            yield "order_event", f'{order}\tdispute_opened\t{{"dispute_id": "dp_b{i:09d}"}}'
            yield "ledger_txn", f"{txn}\ttxn:txn_d{i:09d}\tdispute\t{order}\t{at}"
            yield "ledger_entry", f"{txn}\texpenses:disputes\tusd\t{amount}"
            yield "ledger_entry", f"{txn}\tassets:stripe_balance\tusd\t{-amount}"


def seeded(n: int) -> Counter[str]:
    """How many of each mismatch `_rows(n)` seeds."""
    return Counter(DEFECTS[i % DEFECT_EVERY] for i in range(n) if i % DEFECT_EVERY in DEFECTS)


def _load(conn: psycopg.Connection, n: int, at: str) -> float:
    """COPY everything; returns the seconds the COPY of the payment rows alone took."""
    buffers: dict[str, io.StringIO] = {}
    counts: Counter[str] = Counter()
    copy_seconds = 0.0

    def flush(table: str) -> float:
        cols = PAYMENT_COLUMNS if table == "stripe_payment" else COLUMNS[table]
        started = time.perf_counter()
        with conn.cursor().copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
            copy.write(buffers.pop(table).getvalue())
        return time.perf_counter() - started

    def flush_all() -> float:
        # Parents before children (ledger_entry references ledger_txn); the payment rows first.
        parents = ("orders", "ledger_txn", "ledger_entry", "refund", "order_event")
        spent = 0.0
        for name in sorted(buffers, key=lambda t: parents.index(t) if t in parents else -1):
            elapsed = flush(name)
            spent += elapsed if name == "stripe_payment" else 0.0
        return spent

    for table, line in _rows(n, at):
        buffers.setdefault(table, io.StringIO()).write(line + "\n")
        counts[table] += 1
        if table == "orders" and counts["orders"] % CHUNK == 0:
            copy_seconds += flush_all()
    copy_seconds += flush_all()
    return copy_seconds


def _libpq(url: str, database: str | None = None) -> str:
    parsed = make_url(normalize_url(url)).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def run(server_url: str, payments: int, say: Callable[[str], None] = print) -> BenchResult:
    """The whole benchmark on a scratch database of `server_url`'s server."""
    name = f"dotshop_bench_{secrets.token_hex(4)}"
    with psycopg.connect(_libpq(server_url, "postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(normalize_url(server_url)).set(database=name)
        url_text = url.render_as_string(hide_password=False)
        upgrade(url_text)
        now = datetime.now(UTC)
        at = (now - timedelta(days=1)).isoformat()
        say(f"loading {payments} synthetic payments into {name} ...")
        with psycopg.connect(_libpq(url_text)) as conn:
            for table in TRIGGERED:
                conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            copy_seconds = _load(conn, payments, at)
            conn.execute("ANALYZE")
        engine = make_engine(url_text, pool_size=1)
        try:
            with Session(engine) as session:
                # The whole match is one statement: no timeout meant for requests applies.
                session.execute(text("SET statement_timeout = 0"))
                started = time.perf_counter()
                rows = unreconciled(session, cutoff=now, covered_since=now - timedelta(days=30))
                match_seconds = time.perf_counter() - started
        finally:
            engine.dispose()
    finally:
        with psycopg.connect(_libpq(server_url, "postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return BenchResult(
        payments, match_seconds, copy_seconds, seeded(payments), Counter(r.reason for r in rows)
    )


def main(payments: int = DEFAULT_PAYMENTS) -> int:
    """Run on DATABASE_URL's server (or the embedded one) and print the result; the exit code
    is 0 when every seeded mismatch was found, and found nothing else."""
    from core.db import database_url

    result = run(database_url(), payments, say=lambda m: print(m, file=sys.stderr))
    for line in result.lines():
        print(line)
    return 0 if result.found == result.seeded else 1

"""Payouts: the available balance leaving for the bank, manually (`POST /v1/payouts`) or on the
automatic schedule, which the sandbox runs on demand (`POST /_sandbox/payouts/run`).

An automatic run sweeps, per currency, every `available` balance transaction no payout has
covered yet into one payout whose amount is the sum of their nets; each covered transaction,
and the payout's own `payout` transaction, is then listed by
`GET /v1/balance_transactions?payout=po_...`. A run emits `payout.created`, `payout.paid` and
`payout.reconciliation_completed`; with the `extra` fault knob `stripe_payout_failure_code` set
(e.g. `account_closed`) it emits `payout.created` then `payout.failed`, and a `payout_failure`
transaction puts the money back in the balance for the next run."""

from __future__ import annotations

from typing import Any

from sandbox.stripe import balance
from sandbox.stripe.account import Account
from sandbox.stripe.errors import ApiError
from sandbox.stripe.forms import check_known, get_dict, get_enum, get_int, get_str
from sandbox.stripe.state import new_id

FAILURE_KNOB = "stripe_payout_failure_code"
# Stripe's documented payout failure codes and their messages (a subset).
FAILURE_MESSAGES = {
    "account_closed": "The bank account has been closed.",
    "account_frozen": "The bank account has been frozen.",
    "could_not_process": "The bank could not process this payout.",
    "insufficient_funds": "Your Stripe account has insufficient funds to cover the payout.",
    "invalid_account_number": "The routing number seems correct, but the account number is "
    "invalid.",
    "no_account": "The bank account details on file are probably incorrect.",
}
CREATE_PARAMS = {
    "amount",
    "currency",
    "description",
    "metadata",
    "method",
    "statement_descriptor",
    "expand",
}


def create_payout(acct: Account, params: dict[str, Any]) -> dict[str, Any]:
    """A manual payout: at most the available balance in that currency."""
    check_known(params, CREATE_PARAMS)
    amount = get_int(params, "amount", required=True, minimum=1) or 0
    currency = (get_str(params, "currency", required=True) or "").lower()
    method = get_enum(params, "method", ("standard", "instant"), default="standard") or "standard"
    with acct.store.lock:
        available = balance.totals(acct.store, acct.clock)["available"].get(currency, 0)
        if amount > available:
            raise ApiError.state(
                "You have insufficient funds in your Stripe account for this transfer. Your "
                f"available balance is {available} {currency}.",
                code="balance_insufficient",
                param="amount",
            )
        payout = _new(acct, amount, currency, automatic=False, method=method)
        payout["description"] = get_str(params, "description")
        payout["metadata"] = get_dict(params, "metadata") or {}
        payout["statement_descriptor"] = get_str(params, "statement_descriptor")
        acct.events.emit("payout.created", payout)
        _finish(acct, payout)
        return payout


def run_automatic(acct: Account) -> list[dict[str, Any]]:
    """One automatic payout per currency whose uncovered available net is positive."""
    with acct.store.lock:
        balance.settle(acct.store, acct.clock)
        by_currency: dict[str, list[dict[str, Any]]] = {}
        for txn in acct.store.tables["balance_transactions"].values():
            if txn["status"] == "available" and txn["_payout"] is None:
                by_currency.setdefault(txn["currency"], []).append(txn)
        payouts = []
        for currency, txns in sorted(by_currency.items()):
            amount = sum(t["net"] for t in txns)
            # A zero or negative balance is not paid out: it waits for more funds.
            if amount <= 0:
                continue
            payout = _new(acct, amount, currency, automatic=True, method="standard")
            for txn in txns:
                txn["_payout"] = payout["id"]
            acct.events.emit("payout.created", payout)
            _finish(acct, payout)
            payouts.append(payout)
        return payouts


def _new(
    acct: Account, amount: int, currency: str, *, automatic: bool, method: str
) -> dict[str, Any]:
    payout_id = new_id("po")
    txn = balance.record(
        acct,
        amount=-amount,
        currency=currency,
        source=payout_id,
        type_="payout",
        reporting_category="payout",
        description="STRIPE PAYOUT",
    )
    if automatic:
        txn["_payout"] = payout_id
    now = acct.clock.now()
    return acct.store.add(
        "payouts",
        {
            "id": payout_id,
            "object": "payout",
            "amount": amount,
            "application_fee": None,
            "application_fee_amount": None,
            "arrival_date": now,
            "automatic": automatic,
            "balance_transaction": txn["id"],
            "created": now,
            "currency": currency,
            "description": "STRIPE PAYOUT" if automatic else None,
            "destination": "ba_sandbox_default",
            "failure_balance_transaction": None,
            "failure_code": None,
            "failure_message": None,
            "livemode": False,
            "metadata": {},
            "method": method,
            "original_payout": None,
            "reconciliation_status": "in_progress" if automatic else "not_applicable",
            "reversed_by": None,
            "source_type": "card",
            "statement_descriptor": None,
            "status": "pending",
            "trace_id": None,
            "type": "bank_account",
        },
    )


def _finish(acct: Account, payout: dict[str, Any]) -> None:
    """The bank answers: the payout is paid (and, if automatic, reconciled) or it fails."""
    failure_code = acct.faults.config.extra.get(FAILURE_KNOB)
    if failure_code:
        _fail(acct, payout, str(failure_code))
        return
    payout["status"] = "paid"
    acct.events.emit("payout.paid", payout)
    if payout["automatic"]:
        payout["reconciliation_status"] = "completed"
        acct.events.emit("payout.reconciliation_completed", payout)


def _fail(acct: Account, payout: dict[str, Any], failure_code: str) -> None:
    txn = balance.record(
        acct,
        amount=payout["amount"],
        currency=payout["currency"],
        source=payout["id"],
        type_="payout_failure",
        reporting_category="payout_reversal",
        description="STRIPE PAYOUT FAILURE",
    )
    # Returned funds are back at once, so the next run can pay them out again.
    txn.update(available_on=txn["created"], status="available")
    payout.update(
        status="failed",
        failure_code=failure_code,
        failure_message=FAILURE_MESSAGES.get(failure_code, "The payout failed."),
        failure_balance_transaction=txn["id"],
    )
    acct.events.emit("payout.failed", payout)

"""The /v1 API surface: which method and path run which operation, and how lists filter."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from sandbox.stripe import balance, disputes, payments, payouts, refunds
from sandbox.stripe.account import Account
from sandbox.stripe.errors import ApiError
from sandbox.stripe.events import event_types_filter
from sandbox.stripe.forms import check_known, get_bool, get_dict, get_list, get_str
from sandbox.stripe.listing import LIST_PARAMS, created_filter, list_object, search_object
from sandbox.stripe.state import render


@dataclass
class Call:
    acct: Account
    params: dict[str, Any]
    args: dict[str, str]
    host: str


Handler = Callable[[Call], dict[str, Any]]


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


ROUTES: list[Route] = []


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)

    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, re.compile(f"^{regex}$"), handler))
        return handler

    return register


def match(method: str, path: str) -> tuple[Handler, dict[str, str]]:
    for candidate in ROUTES:
        found = candidate.pattern.match(path)
        if found and candidate.method == method:
            return candidate.handler, found.groupdict()
    raise ApiError(
        404,
        "invalid_request_error",
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or "
        "we can help at https://support.stripe.com/.",
        stored=False,
    )


# --- generic retrieve / list ----------------------------------------------------------------


def _retrieve(call: Call, table: str, extra: set[str] | None = None) -> dict[str, Any]:
    check_known(call.params, {"expand", *(extra or set())})
    with call.acct.store.lock:
        return render(call.acct.store.get(table, call.args["id"]))


def _list(
    call: Call,
    table: str,
    url: str,
    filters: dict[str, str],
    extra: Callable[[dict[str, Any]], bool] | None = None,
    extra_params: set[str] | None = None,
) -> dict[str, Any]:
    """A list endpoint; `filters` maps a query parameter to the field it must equal."""
    check_known(call.params, LIST_PARAMS | set(filters) | (extra_params or set()))
    created = created_filter(call.params)
    wanted = {f: get_str(call.params, p) for p, f in filters.items() if p in call.params}
    items = [
        o
        for o in call.acct.store.newest_first(table)
        if created(o)
        and all(o.get(f) == v for f, v in wanted.items())
        and (extra is None or extra(o))
    ]
    page = list_object(items, call.params, url)
    with call.acct.store.lock:  # a dispute may be opened off-request meanwhile
        page["data"] = [render(o) for o in page["data"]]
    return page


def _search(call: Call, table: str, url: str, fields: set[str]) -> dict[str, Any]:
    check_known(call.params, {"query", "limit", "page", "expand"})
    result = search_object(call.acct.store.newest_first(table), call.params, url, fields)
    with call.acct.store.lock:
        result["data"] = [render(o) for o in result["data"]]
    return result


# --- PaymentIntents -------------------------------------------------------------------------

PI_SEARCH_FIELDS = {"amount", "created", "currency", "customer", "metadata", "status"}
CHARGE_SEARCH_FIELDS = {
    "amount",
    "created",
    "currency",
    "customer",
    "disputed",
    "metadata",
    "payment_intent",
    "refunded",
    "status",
}


@route("POST", "/v1/payment_intents")
def create_pi(call: Call) -> dict[str, Any]:
    return render(payments.create_payment_intent(call.acct, call.params, call.host))


@route("GET", "/v1/payment_intents")
def list_pis(call: Call) -> dict[str, Any]:
    return _list(call, "payment_intents", "/v1/payment_intents", {"customer": "customer"})


@route("GET", "/v1/payment_intents/search")
def search_pis(call: Call) -> dict[str, Any]:
    return _search(call, "payment_intents", "/v1/payment_intents/search", PI_SEARCH_FIELDS)


@route("GET", "/v1/payment_intents/{id}")
def retrieve_pi(call: Call) -> dict[str, Any]:
    return _retrieve(call, "payment_intents", {"client_secret"})


@route("POST", "/v1/payment_intents/{id}")
def update_pi(call: Call) -> dict[str, Any]:
    return render(payments.update_payment_intent(call.acct, call.args["id"], call.params))


@route("POST", "/v1/payment_intents/{id}/confirm")
def confirm_pi(call: Call) -> dict[str, Any]:
    pi = payments.confirm_payment_intent(call.acct, call.args["id"], call.params, call.host)
    return render(pi)


@route("POST", "/v1/payment_intents/{id}/capture")
def capture_pi(call: Call) -> dict[str, Any]:
    return render(payments.capture_payment_intent(call.acct, call.args["id"], call.params))


@route("POST", "/v1/payment_intents/{id}/cancel")
def cancel_pi(call: Call) -> dict[str, Any]:
    return render(payments.cancel_payment_intent(call.acct, call.args["id"], call.params))


@route("GET", "/v1/payment_methods/{id}")
def retrieve_pm(call: Call) -> dict[str, Any]:
    return _retrieve(call, "payment_methods")


# --- Charges, Refunds, Disputes, Balance ----------------------------------------------------


@route("GET", "/v1/charges")
def list_charges(call: Call) -> dict[str, Any]:
    filters = {"payment_intent": "payment_intent", "customer": "customer"}
    return _list(call, "charges", "/v1/charges", filters)


@route("GET", "/v1/charges/search")
def search_charges(call: Call) -> dict[str, Any]:
    return _search(call, "charges", "/v1/charges/search", CHARGE_SEARCH_FIELDS)


@route("GET", "/v1/charges/{id}")
def retrieve_charge(call: Call) -> dict[str, Any]:
    return _retrieve(call, "charges")


@route("POST", "/v1/refunds")
def create_refund(call: Call) -> dict[str, Any]:
    return render(refunds.create_refund(call.acct, call.params))


@route("GET", "/v1/refunds")
def list_refunds(call: Call) -> dict[str, Any]:
    filters = {"charge": "charge", "payment_intent": "payment_intent"}
    return _list(call, "refunds", "/v1/refunds", filters)


@route("GET", "/v1/refunds/{id}")
def retrieve_refund(call: Call) -> dict[str, Any]:
    return _retrieve(call, "refunds")


@route("POST", "/v1/refunds/{id}")
def update_refund(call: Call) -> dict[str, Any]:
    return render(refunds.update_refund(call.acct, call.args["id"], call.params))


@route("GET", "/v1/disputes")
def list_disputes(call: Call) -> dict[str, Any]:
    filters = {"charge": "charge", "payment_intent": "payment_intent"}
    return _list(call, "disputes", "/v1/disputes", filters)


@route("GET", "/v1/disputes/{id}")
def retrieve_dispute(call: Call) -> dict[str, Any]:
    return _retrieve(call, "disputes")


@route("POST", "/v1/disputes/{id}")
def update_dispute(call: Call) -> dict[str, Any]:
    return render(disputes.update_dispute(call.acct, call.args["id"], call.params))


@route("POST", "/v1/disputes/{id}/close")
def close_dispute(call: Call) -> dict[str, Any]:
    return render(disputes.close_dispute(call.acct, call.args["id"], call.params))


@route("GET", "/v1/balance_transactions")
def list_balance_transactions(call: Call) -> dict[str, Any]:
    balance.settle(call.acct.store, call.acct.clock)
    filters = {"source": "source", "type": "type", "currency": "currency"}
    payout_id = get_str(call.params, "payout")
    if payout_id is not None:
        with call.acct.store.lock:
            payout = call.acct.store.get("payouts", payout_id, param="payout")
        if not payout["automatic"]:
            raise ApiError.invalid(
                "Balance transaction history can only be filtered on automatic payouts, not "
                "manual ones.",
                param="payout",
            )
    return _list(
        call,
        "balance_transactions",
        "/v1/balance_transactions",
        filters,
        extra=None if payout_id is None else lambda t: t["_payout"] == payout_id,
        extra_params={"payout"},
    )


@route("GET", "/v1/balance_transactions/{id}")
def retrieve_balance_transaction(call: Call) -> dict[str, Any]:
    balance.settle(call.acct.store, call.acct.clock)
    return _retrieve(call, "balance_transactions")


@route("GET", "/v1/balance")
def retrieve_balance(call: Call) -> dict[str, Any]:
    check_known(call.params, {"expand"})
    sums = balance.totals(call.acct.store, call.acct.clock)
    currencies = sorted(set(sums["available"]) | set(sums["pending"]))
    return {
        "object": "balance",
        "available": [{"amount": sums["available"].get(c, 0), "currency": c} for c in currencies],
        "livemode": False,
        "pending": [{"amount": sums["pending"].get(c, 0), "currency": c} for c in currencies],
    }


# --- Payouts --------------------------------------------------------------------------------


@route("POST", "/v1/payouts")
def create_payout(call: Call) -> dict[str, Any]:
    return render(payouts.create_payout(call.acct, call.params))


@route("GET", "/v1/payouts")
def list_payouts(call: Call) -> dict[str, Any]:
    return _list(call, "payouts", "/v1/payouts", {"status": "status", "destination": "destination"})


@route("GET", "/v1/payouts/{id}")
def retrieve_payout(call: Call) -> dict[str, Any]:
    return _retrieve(call, "payouts")


# --- Events and webhook endpoints -----------------------------------------------------------


@route("GET", "/v1/events")
def list_events(call: Call) -> dict[str, Any]:
    types = event_types_filter(call.params)
    return _list(call, "events", "/v1/events", {}, extra=types, extra_params={"type", "types"})


@route("GET", "/v1/events/{id}")
def retrieve_event(call: Call) -> dict[str, Any]:
    return _retrieve(call, "events")


ENDPOINT_PARAMS = {"url", "enabled_events", "description", "metadata", "api_version", "expand"}


def _enabled_events(call: Call, required: bool) -> list[str] | None:
    events = get_list(call.params, "enabled_events")
    if events is None and required:
        raise ApiError.missing("enabled_events")
    return events


def _url(call: Call) -> str:
    url = get_str(call.params, "url", required=True) or ""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ApiError.invalid(f"Invalid URL: {url}", param="url", code="url_invalid")
    return url


@route("POST", "/v1/webhook_endpoints")
def create_endpoint(call: Call) -> dict[str, Any]:
    check_known(call.params, ENDPOINT_PARAMS | {"connect"})
    url = _url(call)
    endpoint = call.acct.events.add_endpoint(
        url,
        _enabled_events(call, required=True) or [],
        description=get_str(call.params, "description"),
        metadata=get_dict(call.params, "metadata") or {},
    )
    # The only time Stripe shows the signing secret.
    return {**render(endpoint), "secret": endpoint["_secret"]}


@route("GET", "/v1/webhook_endpoints")
def list_endpoints(call: Call) -> dict[str, Any]:
    return _list(call, "webhook_endpoints", "/v1/webhook_endpoints", {})


@route("GET", "/v1/webhook_endpoints/{id}")
def retrieve_endpoint(call: Call) -> dict[str, Any]:
    return _retrieve(call, "webhook_endpoints")


@route("POST", "/v1/webhook_endpoints/{id}")
def update_endpoint(call: Call) -> dict[str, Any]:
    check_known(call.params, ENDPOINT_PARAMS | {"disabled"})
    with call.acct.store.lock:
        endpoint = call.acct.store.get("webhook_endpoints", call.args["id"])
        if "url" in call.params:
            endpoint["url"] = _url(call)
        if "enabled_events" in call.params:
            endpoint["enabled_events"] = _enabled_events(call, required=True)
        if "disabled" in call.params:
            endpoint["status"] = "disabled" if get_bool(call.params, "disabled") else "enabled"
        if "description" in call.params:
            endpoint["description"] = get_str(call.params, "description") or None
        return render(endpoint)


@route("DELETE", "/v1/webhook_endpoints/{id}")
def delete_endpoint(call: Call) -> dict[str, Any]:
    with call.acct.store.lock:
        endpoint = call.acct.store.get("webhook_endpoints", call.args["id"])
        del call.acct.store.tables["webhook_endpoints"][endpoint["id"]]
    return {"id": endpoint["id"], "object": "webhook_endpoint", "deleted": True}

"""orders / order, orderCreate, orderCancel, refundCreate (`@idempotent`)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from graphql import GraphQLResolveInfo

from sandbox.shopify.graphql import quantities, search
from sandbox.shopify.graphql.connections import connection
from sandbox.shopify.graphql.context import Context
from sandbox.shopify.graphql.gids import datetime_z, gid, parse_gid
from sandbox.shopify.graphql.idempotency import run_once
from sandbox.shopify.graphql.resolvers.catalog import variant_view
from sandbox.shopify.http import ShopifyError

CENTS = Decimal("0.01")


def _bag(amount: Any, currency: str) -> dict[str, Any]:
    """The sandbox converts nothing: shop money is the presentment money."""
    money = {"amount": str(Decimal(str(amount)).quantize(CENTS)), "currencyCode": currency}
    return {"shopMoney": money, "presentmentMoney": money}


def _tax_view(tax: dict[str, Any], currency: str) -> dict[str, Any]:
    return {
        "title": tax["title"],
        "rate": tax["rate"],
        "ratePercentage": round(tax["rate"] * 100, 4),
        "priceSet": _bag(tax["price"], currency),
    }


def _refunded(body: dict[str, Any]) -> Decimal:
    return sum((Decimal(r["amount"]) for r in body["refunds"]), Decimal(0))


def refund_view(refund: dict[str, Any], currency: str) -> dict[str, Any]:
    return {
        "id": gid("Refund", refund["id"]),
        "legacyResourceId": refund["id"],
        "createdAt": datetime_z(refund["created_at"]),
        "note": refund["note"],
        "totalRefundedSet": _bag(refund["amount"], currency),
    }


def _line_view(ctx: Context, line: dict[str, Any], currency: str) -> dict[str, Any]:
    variant_id = line["variant_id"]
    return {
        "id": gid("LineItem", line["id"]),
        "title": line["title"],
        "name": line["name"],
        "sku": line["sku"] or None,
        "quantity": line["quantity"],
        "currentQuantity": line["current_quantity"],
        "variant": lambda info: (
            variant_view(ctx, variant_id) if variant_id in ctx.store.variants else None
        ),
        "originalUnitPriceSet": _bag(line["price"], currency),
        "taxLines": [_tax_view(t, currency) for t in line.get("tax_lines", [])],
        "customAttributes": [
            {"key": p.get("name"), "value": p.get("value")} for p in line["properties"]
        ],
    }


def order_view(ctx: Context, order_id: int) -> dict[str, Any]:
    body = ctx.store.orders[order_id].body
    currency = body["currency"]
    lines = {line["id"]: line for line in body["line_items"]}
    taxes = body.get("tax_lines", []) + [
        t for li in body["line_items"] for t in li.get("tax_lines", [])
    ]
    return {
        "id": gid("Order", order_id),
        "legacyResourceId": order_id,
        "name": body["name"],
        "email": body["email"] or None,
        "createdAt": datetime_z(body["created_at"]),
        "updatedAt": datetime_z(body["updated_at"]),
        "processedAt": datetime_z(body["processed_at"]),
        "cancelledAt": datetime_z(body["cancelled_at"]),
        "cancelReason": body["cancel_reason"].upper() if body["cancel_reason"] else None,
        "closed": bool(body["closed_at"]),
        "test": body["test"],
        "currencyCode": currency,
        "presentmentCurrencyCode": body["presentment_currency"],
        "displayFinancialStatus": body["financial_status"].upper(),
        "sourceName": body["source_name"],
        "sourceIdentifier": body["source_identifier"],
        "note": body["note"],
        "tags": [t.strip() for t in body["tags"].split(",") if t.strip()],
        "taxesIncluded": body["taxes_included"],
        "customAttributes": [
            {"key": a.get("name"), "value": a.get("value")} for a in body["note_attributes"]
        ],
        "subtotalPriceSet": _bag(body["subtotal_price"], currency),
        "totalTaxSet": _bag(body["total_tax"], currency),
        "totalPriceSet": _bag(body["total_price"], currency),
        "totalRefundedSet": _bag(_refunded(body), currency),
        "taxLines": [_tax_view(t, currency) for t in taxes],
        "refunds": lambda info, first=None: [
            refund_view(r, currency) for r in body["refunds"][:first]
        ],
        "lineItems": lambda info, **args: connection(
            sorted(lines),
            lambda i: i,
            lambda i: _line_view(ctx, lines[i], currency),
            args,
            ctx.in_bulk,
        ),
    }


# ------------------------------------------------------------------ queries


def _state(body: dict[str, Any]) -> str:
    return "cancelled" if body["cancelled_at"] else "closed" if body["closed_at"] else "open"


ORDER_FILTERS = {
    "id": lambda b: b["id"],
    "name": lambda b: [b["name"], b["name"].lstrip("#")],
    "email": lambda b: b["email"],
    "status": _state,
    "financial_status": lambda b: b["financial_status"],
    "tag": lambda b: [t.strip() for t in b["tags"].split(",") if t.strip()],
    "source_identifier": lambda b: b["source_identifier"],
    "source_name": lambda b: b["source_name"],
    "test": lambda b: str(b["test"]).lower(),
    "created_at": lambda b: search.stamp(b["created_at"]),
    "updated_at": lambda b: search.stamp(b["updated_at"]),
    "processed_at": lambda b: search.stamp(b["processed_at"]),
}


def _default_fields(body: dict[str, Any]) -> list[str]:
    """Bare words match the order's name, email and custom attribute values."""
    return [body["name"], body["email"], *(a.get("value") or "" for a in body["note_attributes"])]


def orders(_: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    ctx: Context = info.context
    groups = search.parse(args.get("query"))
    found = [
        oid
        for oid in sorted(ctx.store.orders)
        if search.matches(ctx.store.orders[oid].body, groups, ORDER_FILTERS, _default_fields)
    ]
    return connection(found, lambda o: o, lambda o: order_view(ctx, o), args, ctx.in_bulk)


def order(_: Any, info: GraphQLResolveInfo, id: str) -> dict[str, Any] | None:
    ctx: Context = info.context
    oid = parse_gid("Order", id)
    return order_view(ctx, oid) if oid in ctx.store.orders else None


# ------------------------------------------------------------------ orderCreate


def _amount(money_bag: dict[str, Any] | None) -> str | None:
    if not money_bag:
        return None
    chosen = money_bag.get("presentmentMoney") or money_bag["shopMoney"]
    return str(chosen["amount"])


def _taxes(lines: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [
        {
            "title": t["title"],
            "rate": str(t.get("rate") or 0),
            "price": _amount(t.get("priceSet")) or "0",
        }
        for t in lines or []
    ]


def _rest_body(order_input: dict[str, Any], options: dict[str, Any] | None) -> dict[str, Any]:
    """orderCreate's input as the shared store's (REST-shaped) order body."""
    line_items = []
    for line in order_input.get("lineItems") or []:
        variant = line.get("variantId")
        line_items.append(
            {
                "variant_id": parse_gid("ProductVariant", variant) if variant else None,
                "title": line.get("title"),
                "sku": line.get("sku"),
                "quantity": line["quantity"],
                "price": _amount(line.get("priceSet")),
                "tax_lines": _taxes(line.get("taxLines")),
                "requires_shipping": line.get("requiresShipping", True),
                "taxable": line.get("taxable", True),
            }
        )
    behaviour = ((options or {}).get("inventoryBehaviour") or "BYPASS").lower()
    status = order_input.get("financialStatus")
    return {
        "line_items": line_items,
        "currency": order_input.get("presentmentCurrency") or order_input.get("currency") or "USD",
        "email": order_input.get("email"),
        "note_attributes": [
            {"name": a["key"], "value": a["value"]}
            for a in order_input.get("customAttributes") or []
        ],
        "tax_lines": _taxes(order_input.get("taxLines")),
        "taxes_included": order_input.get("taxesIncluded", False),
        "financial_status": status.lower() if status else None,
        "source_identifier": order_input.get("sourceIdentifier"),
        "source_name": order_input.get("sourceName"),
        "note": order_input.get("note"),
        "tags": order_input.get("tags"),
        "test": order_input.get("test", False),
        "processed_at": order_input.get("processedAt"),
        "inventory_behaviour": behaviour,
    }


def _user_errors(error: ShopifyError, prefix: list[str]) -> list[dict[str, Any]]:
    if not isinstance(error.errors, dict):
        return [{"code": "INVALID", "field": None, "message": str(error.errors)}]
    out = []
    for name, messages in error.errors.items():
        for message in messages if isinstance(messages, list) else [messages]:
            code = "INVENTORY_NOT_ENOUGH" if "out of stock" in str(message) else "INVALID"
            field = [*prefix, "lineItems" if name == "line_items" else name]
            out.append({"code": code, "field": field, "message": str(message)})
    return out


def order_create(
    _: Any, info: GraphQLResolveInfo, order: dict[str, Any], options: dict[str, Any] | None = None
) -> dict[str, Any]:
    ctx: Context = info.context
    try:
        created = ctx.store.create_order(_rest_body(order, options))
    except ShopifyError as error:
        return {"order": None, "userErrors": _user_errors(error, ["order"])}
    return {"order": order_view(ctx, created["id"]), "userErrors": []}


# ------------------------------------------------------------------ orderCancel


def order_cancel(_: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    ctx: Context = info.context
    order_id = parse_gid("Order", args["orderId"])
    errors: list[dict[str, Any]] = []
    # The store knows Shopify's REST reasons; STAFF is GraphQL-only and recorded as "other".
    reason = args["reason"].lower() if args["reason"] != "STAFF" else "other"
    with ctx.store._lock:
        record = ctx.store.orders.get(order_id)
        if record is None:
            errors.append(
                {"code": "NOT_FOUND", "field": ["orderId"], "message": "Order does not exist"}
            )
        else:
            try:
                ctx.store.cancel_order(
                    order_id,
                    restock=args["restock"],
                    reason=reason,
                    amount=record.body["total_price"] if args.get("refund") else None,
                )
            except ShopifyError as error:
                errors = [dict(e, code="INVALID") for e in _user_errors(error, [])]
    job = None if errors else {"id": gid("Job", uuid.uuid4()), "done": True}
    return {"job": job, "orderCancelUserErrors": errors, "userErrors": errors}


# ------------------------------------------------------------------ refundCreate


def _refund(ctx: Context, input_: dict[str, Any]) -> dict[str, Any]:
    store = ctx.store
    order_id = parse_gid("Order", input_["orderId"])
    record = store.orders.get(order_id)
    if record is None:
        return _refund_error(["orderId"], "Order does not exist")
    body = record.body
    amount = sum(
        (
            Decimal(str(t["amount"]))
            for t in input_.get("transactions") or []
            if t["kind"] == "REFUND"
        ),
        Decimal(0),
    )
    if amount < 0 or _refunded(body) + amount > Decimal(body["total_price"]):
        return _refund_error(
            ["transactions"], "The refund amount is greater than the refundable amount."
        )
    lines = {line["id"]: line for line in body["line_items"]}
    restocks = []
    for i, item in enumerate(input_.get("refundLineItems") or []):
        line = lines.get(parse_gid("LineItem", item["lineItemId"]))
        if line is None or not 0 < item["quantity"] <= line["current_quantity"]:
            return _refund_error(["refundLineItems", str(i)], "Invalid line item or quantity.")
        restocks.append((line, item))
    for line, item in restocks:
        line["current_quantity"] -= item["quantity"]
        if item.get("restockType") in ("RETURN", "CANCEL", "LEGACY_RESTOCK") and line["variant_id"]:
            _restock(ctx, record, line, item)
    refund = {
        "id": store.next_id("refund"),
        "created_at": store.timestamp(),
        "note": input_.get("note"),
        "amount": str(amount.quantize(CENTS)),
    }
    body["refunds"].append(refund)
    fully = _refunded(body) >= Decimal(body["total_price"])
    body["financial_status"] = "refunded" if fully else "partially_refunded"
    body["updated_at"] = store.timestamp()
    return {
        "refund": refund_view(refund, body["currency"]),
        "order": order_view(ctx, order_id),
        "userErrors": [],
    }


def _restock(ctx: Context, record: Any, line: dict[str, Any], item: dict[str, Any]) -> None:
    """Refunded units go back to `available`: first out of what the order still had committed
    (unshipped units), the rest as returned goods."""
    store = ctx.store
    variant = store.variants.get(line["variant_id"])
    if variant is None:  # deleted since the order: nothing left to restock
        return
    item_id = variant["inventory_item_id"]
    wanted = item["quantity"]
    claims = []
    for claimed_item, location_id, qty in record.claims:
        taken = min(qty, wanted) if claimed_item == item_id else 0
        wanted -= taken
        if qty - taken:
            claims.append((claimed_item, location_id, qty - taken))
    record.claims = claims
    stocked = [loc for i, loc in store.levels if i == item_id]
    location_id = parse_gid("Location", item.get("locationId")) or min(stocked, default=None)
    if (item_id, location_id) in store.levels:
        quantities.apply(store, item_id, location_id, "available", item["quantity"])
        quantities.announce(store, item_id, location_id)


def _refund_error(field: list[str], message: str) -> dict[str, Any]:
    return {"refund": None, "order": None, "userErrors": [{"field": field, "message": message}]}


def refund_create(_: Any, info: GraphQLResolveInfo, input: dict[str, Any]) -> dict[str, Any]:
    ctx: Context = info.context
    return run_once(
        info,
        {"input": input},
        lambda: _refund(ctx, input),
        lambda message: _refund_error(["idempotencyKey"], message),
    )

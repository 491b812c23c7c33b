"""The Admin REST API under /admin/api/<version>/: URL shapes, JSON envelopes and status codes
as the ShopifyAPI library (pyactiveresource) expects them."""

from __future__ import annotations

from typing import Any

from sandbox.shopify.events import TOPICS
from sandbox.shopify.http import Request, Response, Router, ShopifyError
from sandbox.shopify.pagination import paginate, request_filters
from sandbox.shopify.store import ShopStore, parse_time


def _split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def _ids(value: str | None) -> list[int] | None:
    parts = _split(value)
    if parts is None:
        return None
    try:
        return [int(p) for p in parts]
    except ValueError as exc:
        raise ShopifyError(400, {"ids": "expected a comma-separated list of ids"}) from exc


def _int(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise ShopifyError(400, {name: "expected an integer"}) from exc


def _only_fields(request: Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    fields = _split(request.param("fields"))
    if not fields:
        return items
    return [{k: v for k, v in item.items() if k in fields} for item in items]


def _body(request: Request, root: str) -> dict[str, Any]:
    data = request.json()
    if not isinstance(data, dict) or not isinstance(data.get(root), dict):
        raise ShopifyError(400, {root: "Required parameter missing or invalid"})
    return data[root]


def _page(request: Request, root: str, items: list[dict[str, Any]], cursor: Any) -> Response:
    page, headers = paginate(request, items, lambda item: item["id"], cursor)
    return Response(200, {root: _only_fields(request, page)}, headers)


def build_router(store: ShopStore) -> Router:
    router = Router()

    # -------------------------------------------------------------- products
    product_filters = ("ids", "since_id", "handle", "updated_at_min", "product_type", "status")

    def product_query(request: Request) -> tuple[list[dict[str, Any]], Any]:
        filters, cursor = request_filters(request, product_filters)
        updated_min = filters.get("updated_at_min")
        items = store.list_products(
            ids=_ids(filters.get("ids")),
            since_id=_int(filters.get("since_id"), "since_id"),
            handle=_split(filters.get("handle")),
            updated_at_min=parse_time(updated_min, "updated_at_min") if updated_min else None,
            product_type=filters.get("product_type"),
            status=_split(filters.get("status")),
        )
        return items, cursor

    def list_products(request: Request, version: str) -> Response:
        items, cursor = product_query(request)
        return _page(request, "products", items, cursor)

    def count_products(request: Request, version: str) -> Response:
        items, _ = product_query(request)
        return Response(200, {"count": len(items)})

    def get_product(request: Request, version: str, product_id: int) -> Response:
        product = store.get_product(product_id)
        return Response(200, {"product": _only_fields(request, [product])[0]})

    def create_product(request: Request, version: str) -> Response:
        return Response(201, {"product": store.create_product(_body(request, "product"))})

    def update_product(request: Request, version: str, product_id: int) -> Response:
        return Response(
            200, {"product": store.update_product(product_id, _body(request, "product"))}
        )

    def delete_product(request: Request, version: str, product_id: int) -> Response:
        store.delete_product(product_id)
        return Response(200, {})

    def product_variants(request: Request, version: str, product_id: int) -> Response:
        return Response(200, {"variants": store.list_variants(product_id)})

    prefix = "/admin/api/{version}"
    router.add("GET", f"{prefix}/products.json", list_products)
    router.add("GET", f"{prefix}/products/count.json", count_products)
    router.add("POST", f"{prefix}/products.json", create_product)
    router.add("GET", f"{prefix}/products/{{product_id}}.json", get_product)
    router.add("PUT", f"{prefix}/products/{{product_id}}.json", update_product)
    router.add("DELETE", f"{prefix}/products/{{product_id}}.json", delete_product)
    router.add("GET", f"{prefix}/products/{{product_id}}/variants.json", product_variants)

    # -------------------------------------------------------------- variants
    def get_variant(request: Request, version: str, variant_id: int, **_: Any) -> Response:
        return Response(200, {"variant": store.get_variant(variant_id)})

    def update_variant(request: Request, version: str, variant_id: int, **_: Any) -> Response:
        return Response(
            200, {"variant": store.update_variant(variant_id, _body(request, "variant"))}
        )

    router.add("GET", f"{prefix}/variants/{{variant_id}}.json", get_variant)
    router.add("PUT", f"{prefix}/variants/{{variant_id}}.json", update_variant)
    # Variant.save() addresses the variant under its product.
    router.add("GET", f"{prefix}/products/{{product_id}}/variants/{{variant_id}}.json", get_variant)
    router.add(
        "PUT", f"{prefix}/products/{{product_id}}/variants/{{variant_id}}.json", update_variant
    )

    # -------------------------------------------------------------- inventory items
    def list_items(request: Request, version: str) -> Response:
        filters, cursor = request_filters(request, ("ids",))
        ids = _ids(filters.get("ids"))
        if ids is None:
            raise ShopifyError(422, {"ids": ["Required parameter missing or invalid"]})
        return _page(request, "inventory_items", store.list_inventory_items(ids), cursor)

    def get_item(request: Request, version: str, item_id: int) -> Response:
        return Response(200, {"inventory_item": store.get_inventory_item(item_id)})

    def update_item(request: Request, version: str, item_id: int) -> Response:
        body = _body(request, "inventory_item")
        return Response(200, {"inventory_item": store.update_inventory_item(item_id, body)})

    router.add("GET", f"{prefix}/inventory_items.json", list_items)
    router.add("GET", f"{prefix}/inventory_items/{{item_id}}.json", get_item)
    router.add("PUT", f"{prefix}/inventory_items/{{item_id}}.json", update_item)

    # -------------------------------------------------------------- locations
    def list_locations(request: Request, version: str) -> Response:
        return Response(
            200, {"locations": [store.get_location(i) for i in sorted(store.locations)]}
        )

    def count_locations(request: Request, version: str) -> Response:
        return Response(200, {"count": len(store.locations)})

    def get_location(request: Request, version: str, location_id: int) -> Response:
        return Response(200, {"location": store.get_location(location_id)})

    def location_levels(request: Request, version: str, location_id: int) -> Response:
        store.get_location(location_id)
        _, cursor = request_filters(request, ())
        levels = store.list_levels(None, [location_id])
        page, headers = paginate(request, levels, lambda lv: lv["inventory_item_id"], cursor)
        return Response(200, {"inventory_levels": page}, headers)

    router.add("GET", f"{prefix}/locations.json", list_locations)
    router.add("GET", f"{prefix}/locations/count.json", count_locations)
    router.add("GET", f"{prefix}/locations/{{location_id}}.json", get_location)
    router.add("GET", f"{prefix}/locations/{{location_id}}/inventory_levels.json", location_levels)

    # -------------------------------------------------------------- inventory levels
    def list_levels(request: Request, version: str) -> Response:
        filters, cursor = request_filters(request, ("inventory_item_ids", "location_ids"))
        item_ids = _ids(filters.get("inventory_item_ids"))
        location_ids = _ids(filters.get("location_ids"))
        if item_ids is None and location_ids is None:
            raise ShopifyError(
                422, {"base": ["inventory_item_ids or location_ids must be specified"]}
            )
        levels = store.list_levels(item_ids, location_ids)
        # Levels have no id of their own: page by (location, item) packed into one sort key.
        page, headers = paginate(
            request,
            levels,
            lambda lv: lv["location_id"] * 10**15 + lv["inventory_item_id"] % 10**15,
            cursor,
        )
        return Response(200, {"inventory_levels": page}, headers)

    def set_level(request: Request, version: str) -> Response:
        body = request.json()
        level = store.set_level(
            body.get("location_id"), body.get("inventory_item_id"), body.get("available")
        )
        return Response(200, {"inventory_level": level})

    def adjust_level(request: Request, version: str) -> Response:
        body = request.json()
        level = store.adjust_level(
            body.get("location_id"),
            body.get("inventory_item_id"),
            body.get("available_adjustment"),
        )
        return Response(200, {"inventory_level": level})

    def connect_level(request: Request, version: str) -> Response:
        body = request.json()
        level, created = store.connect_level(body.get("location_id"), body.get("inventory_item_id"))
        return Response(201 if created else 200, {"inventory_level": level})

    def delete_level(request: Request, version: str) -> Response:
        store.disconnect_level(request.param("location_id"), request.param("inventory_item_id"))
        return Response(204, None)

    router.add("GET", f"{prefix}/inventory_levels.json", list_levels)
    router.add("POST", f"{prefix}/inventory_levels/set.json", set_level)
    router.add("POST", f"{prefix}/inventory_levels/adjust.json", adjust_level)
    router.add("POST", f"{prefix}/inventory_levels/connect.json", connect_level)
    router.add("DELETE", f"{prefix}/inventory_levels.json", delete_level)

    # -------------------------------------------------------------- orders
    order_filters = ("status", "ids", "since_id", "financial_status")

    def order_query(request: Request) -> tuple[list[dict[str, Any]], Any]:
        filters, cursor = request_filters(request, order_filters)
        items = store.list_orders(
            status=filters.get("status") or "open",
            ids=_ids(filters.get("ids")),
            since_id=_int(filters.get("since_id"), "since_id"),
            financial_status=filters.get("financial_status"),
        )
        return items, cursor

    def list_orders(request: Request, version: str) -> Response:
        items, cursor = order_query(request)
        return _page(request, "orders", items, cursor)

    def count_orders(request: Request, version: str) -> Response:
        items, _ = order_query(request)
        return Response(200, {"count": len(items)})

    def create_order(request: Request, version: str) -> Response:
        return Response(201, {"order": store.create_order(_body(request, "order"))})

    def get_order(request: Request, version: str, order_id: int) -> Response:
        return Response(200, {"order": _only_fields(request, [store.get_order(order_id)])[0]})

    def cancel_order(request: Request, version: str, order_id: int) -> Response:
        # The library's order.cancel(restock=True) sends options as query parameters; other
        # clients send a JSON body. Accept both.
        body = request.json() if request.body.strip() else {}
        restock = body.get("restock", request.param("restock"))
        order = store.cancel_order(
            order_id,
            restock=str(restock).lower() in ("true", "1"),
            reason=body.get("reason") or request.param("reason"),
            amount=body.get("amount") or request.param("amount"),
        )
        return Response(200, {"order": order})

    router.add("GET", f"{prefix}/orders.json", list_orders)
    router.add("GET", f"{prefix}/orders/count.json", count_orders)
    router.add("POST", f"{prefix}/orders.json", create_order)
    router.add("GET", f"{prefix}/orders/{{order_id}}.json", get_order)
    router.add("POST", f"{prefix}/orders/{{order_id}}/cancel.json", cancel_order)

    # -------------------------------------------------------------- webhook subscriptions
    def list_webhooks(request: Request, version: str) -> Response:
        filters, cursor = request_filters(request, ("topic", "address"))
        items = store.list_webhooks(filters.get("topic"), filters.get("address"))
        return _page(request, "webhooks", items, cursor)

    def count_webhooks(request: Request, version: str) -> Response:
        return Response(200, {"count": len(store.list_webhooks(request.param("topic")))})

    def create_webhook(request: Request, version: str) -> Response:
        webhook = store.create_webhook(_body(request, "webhook"), TOPICS, version)
        return Response(201, {"webhook": webhook})

    def get_webhook(request: Request, version: str, webhook_id: int) -> Response:
        return Response(200, {"webhook": store.get_webhook(webhook_id)})

    def delete_webhook(request: Request, version: str, webhook_id: int) -> Response:
        store.delete_webhook(webhook_id)
        return Response(200, {})

    router.add("GET", f"{prefix}/webhooks.json", list_webhooks)
    router.add("GET", f"{prefix}/webhooks/count.json", count_webhooks)
    router.add("POST", f"{prefix}/webhooks.json", create_webhook)
    router.add("GET", f"{prefix}/webhooks/{{webhook_id}}.json", get_webhook)
    router.add("DELETE", f"{prefix}/webhooks/{{webhook_id}}.json", delete_webhook)

    # -------------------------------------------------------------- shop
    def get_shop(request: Request, version: str) -> Response:
        return Response(200, {"shop": store.shop_json()})

    router.add("GET", f"{prefix}/shop.json", get_shop)
    return router

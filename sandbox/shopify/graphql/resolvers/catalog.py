"""Products, variants, inventory items and levels, locations: the read side of the catalog."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError, GraphQLResolveInfo

from sandbox.shopify.graphql import quantities, search
from sandbox.shopify.graphql.connections import connection
from sandbox.shopify.graphql.context import Context
from sandbox.shopify.graphql.gids import datetime_z, gid, parse_gid
from sandbox.shopify.store import DEFAULT_LOCATION_ID


def _tags(value: str) -> list[str]:
    return [t.strip() for t in (value or "").split(",") if t.strip()]


# ------------------------------------------------------------------ views


def product_view(ctx: Context, product_id: int) -> dict[str, Any]:
    product = ctx.store.products[product_id]
    variant_ids = list(product["variant_ids"])
    return {
        "id": gid("Product", product_id),
        "legacyResourceId": product_id,
        "title": product["title"],
        "handle": product["handle"],
        "status": product["status"].upper(),
        "productType": product["product_type"],
        "descriptionHtml": product.get("body_html") or "",
        "featuredImage": _featured_image(product),
        "vendor": product["vendor"],
        "tags": _tags(product["tags"]),
        "createdAt": datetime_z(product["created_at"]),
        "updatedAt": datetime_z(product["updated_at"]),
        "totalInventory": lambda info: sum(
            _variant_stock(ctx, ctx.store.variants[v]) for v in variant_ids
        ),
        "variants": lambda info, **args: connection(
            sorted(variant_ids), lambda v: v, lambda v: variant_view(ctx, v), args, ctx.in_bulk
        ),
    }


def _featured_image(product: dict[str, Any]) -> dict[str, Any] | None:
    images = product.get("images") or []
    if not images:
        return None
    first = images[0]
    return {"id": gid("ProductImage", first["id"]), "url": first["src"], "altText": first["alt"]}


# The euro area prices in EUR; every other country (the US here) in the shop's USD.
EURO_AREA = frozenset({"AT", "BE", "DE", "ES", "FI", "FR", "IE", "IT", "NL", "PT"})


def _contextual_price(variant: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """The price a buyer in `context.country` pays: the variant's price in that market's
    currency when one is set, else the shop-currency price (Shopify would convert it)."""
    currency = "eur" if context.get("country") in EURO_AREA else "usd"
    prices = variant.get("presentment_prices_minor") or {}
    if currency not in prices:
        return {"price": {"amount": variant["price"], "currencyCode": "USD"}}
    amount = f"{prices[currency] // 100}.{prices[currency] % 100:02d}"
    return {"price": {"amount": amount, "currencyCode": currency.upper()}}


def _variant_stock(ctx: Context, variant: dict[str, Any]) -> int:
    item_id = variant["inventory_item_id"]
    return sum(lv.available for (i, _), lv in ctx.store.levels.items() if i == item_id)


def variant_view(ctx: Context, variant_id: int) -> dict[str, Any]:
    variant = ctx.store.variants[variant_id]
    return {
        "id": gid("ProductVariant", variant_id),
        "legacyResourceId": variant_id,
        "sku": variant["sku"] or None,
        "title": variant["title"],
        "position": variant["position"],
        "price": variant["price"],
        "contextualPricing": lambda info, context: _contextual_price(variant, context),
        "inventoryPolicy": variant["inventory_policy"].upper(),
        "inventoryQuantity": lambda info: _variant_stock(ctx, variant),
        "createdAt": datetime_z(variant["created_at"]),
        "updatedAt": datetime_z(variant["updated_at"]),
        "product": lambda info: product_view(ctx, variant["product_id"]),
        "inventoryItem": lambda info: item_view(ctx, variant["inventory_item_id"]),
    }


def item_view(ctx: Context, item_id: int) -> dict[str, Any]:
    item = ctx.store.inventory_items[item_id]

    def levels(info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
        # By location, not by scanning every level: a bulk read of 100,000 items stays linear.
        locations = sorted(loc for loc in ctx.store.locations if (item_id, loc) in ctx.store.levels)
        found = _filter(ctx, [(item_id, loc) for loc in locations], args.get("query"))
        return connection(
            [loc for _, loc in found], lambda loc: loc, lambda loc: level_view(ctx, item_id, loc),
            args, ctx.in_bulk,
        )  # fmt: skip

    def level(info: GraphQLResolveInfo, locationId: str) -> dict[str, Any] | None:
        location_id = parse_gid("Location", locationId)
        return _level_or_none(ctx, item_id, location_id)

    return {
        "id": gid("InventoryItem", item_id),
        "legacyResourceId": item_id,
        "sku": item["sku"] or None,
        "tracked": item["tracked"],
        "createdAt": datetime_z(item["created_at"]),
        "updatedAt": datetime_z(item["updated_at"]),
        "variant": lambda info: variant_view(ctx, ctx.variant_of_item(item_id)),
        "inventoryLevel": level,
        "inventoryLevels": levels,
    }


def _level_or_none(
    ctx: Context, item_id: int | None, location_id: int | None
) -> dict[str, Any] | None:
    if item_id is None or location_id is None or (item_id, location_id) not in ctx.store.levels:
        return None
    return level_view(ctx, item_id, location_id)


def level_view(ctx: Context, item_id: int, location_id: int) -> dict[str, Any]:
    level = ctx.store.levels[(item_id, location_id)]
    handle = f"{location_id}?inventory_item_id={item_id}"

    def named(info: GraphQLResolveInfo, names: list[str]) -> list[dict[str, Any]]:
        unknown = [n for n in names if n not in quantities.NAMES + quantities.UNTRACKED]
        if unknown:
            raise GraphQLError(f"Invalid quantity name(s): {', '.join(unknown)}")
        return [
            {
                "id": gid("InventoryQuantity", f"{handle}&name={name}"),
                "name": name,
                "quantity": quantities.quantity(ctx.store, item_id, location_id, name),
                "updatedAt": datetime_z(level.updated_at),
            }
            for name in names
        ]

    return {
        "id": gid("InventoryLevel", handle),
        "createdAt": datetime_z(level.created_at),
        "updatedAt": datetime_z(level.updated_at),
        "item": lambda info: item_view(ctx, item_id),
        "location": lambda info: location_view(ctx, location_id),
        "quantities": named,
    }


def location_view(ctx: Context, location_id: int) -> dict[str, Any]:
    location = ctx.store.locations[location_id]

    def levels(info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
        pinned = search.required_values(search.parse(args.get("query")), "inventory_item_id")
        if pinned is None:
            items = sorted(i for i, loc in ctx.store.levels if loc == location_id)
        else:
            ids = {int(v) for v in pinned if v.isdigit()}
            items = sorted(i for i in ids if (i, location_id) in ctx.store.levels)
        found = _filter(ctx, [(i, location_id) for i in items], args.get("query"))
        return connection(
            [i for i, _ in found], lambda i: i, lambda i: level_view(ctx, i, location_id),
            args, ctx.in_bulk,
        )  # fmt: skip

    def level(info: GraphQLResolveInfo, inventoryItemId: str) -> dict[str, Any] | None:
        return _level_or_none(ctx, parse_gid("InventoryItem", inventoryItemId), location_id)

    return {
        "id": gid("Location", location_id),
        "legacyResourceId": location_id,
        "name": location["name"],
        "isActive": location["active"],
        "fulfillsOnlineOrders": True,
        "address": {
            "address1": location["address1"],
            "city": location["city"],
            "zip": location["zip"],
            "countryCode": location["country_code"],
            "provinceCode": location["province_code"],
        },
        "inventoryLevel": level,
        "inventoryLevels": levels,
    }


def _filter(
    ctx: Context, levels: list[tuple[int, int]], query: str | None
) -> list[tuple[int, int]]:
    groups = search.parse(query)
    fields = {
        "updated_at": lambda k: search.stamp(ctx.store.levels[k].updated_at),
        "created_at": lambda k: search.stamp(ctx.store.levels[k].created_at),
        "inventory_item_id": lambda k: k[0],
        "location_id": lambda k: k[1],
    }
    return [k for k in levels if search.matches(k, groups, fields, lambda k: [])]


# ------------------------------------------------------------------ root fields


def products(_: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    ctx: Context = info.context
    store = ctx.store
    fields = {
        "id": lambda p: p["id"],
        "title": lambda p: p["title"],
        "handle": lambda p: p["handle"],
        "status": lambda p: p["status"],
        "product_type": lambda p: p["product_type"],
        "vendor": lambda p: p["vendor"],
        "tag": lambda p: _tags(p["tags"]),
        "sku": lambda p: [store.variants[v]["sku"] for v in p["variant_ids"]],
        "created_at": lambda p: search.stamp(p["created_at"]),
        "updated_at": lambda p: search.stamp(p["updated_at"]),
    }
    groups = search.parse(args.get("query"))
    found = [
        pid
        for pid in sorted(store.products)
        if search.matches(store.products[pid], groups, fields, lambda p: [p["title"]])
    ]
    return connection(found, lambda p: p, lambda p: product_view(ctx, p), args, ctx.in_bulk)


def product_variants(_: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    ctx: Context = info.context
    store = ctx.store
    fields = {
        "id": lambda v: v["id"],
        "sku": lambda v: v["sku"],
        "title": lambda v: v["title"],
        "product_id": lambda v: v["product_id"],
        "inventory_item_id": lambda v: v["inventory_item_id"],
        "created_at": lambda v: search.stamp(v["created_at"]),
        "updated_at": lambda v: search.stamp(v["updated_at"]),
    }
    groups = search.parse(args.get("query"))
    found = [
        vid
        for vid in sorted(store.variants)
        if search.matches(store.variants[vid], groups, fields, lambda v: [v["sku"], v["title"]])
    ]
    return connection(found, lambda v: v, lambda v: variant_view(ctx, v), args, ctx.in_bulk)


def inventory_items(_: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    ctx: Context = info.context
    store = ctx.store
    fields = {
        "id": lambda i: i["id"],
        "sku": lambda i: i["sku"],
        "created_at": lambda i: search.stamp(i["created_at"]),
        "updated_at": lambda i: search.stamp(i["updated_at"]),
    }
    groups = search.parse(args.get("query"))
    found = [
        iid
        for iid in sorted(store.inventory_items)
        if search.matches(store.inventory_items[iid], groups, fields, lambda i: [i["sku"]])
    ]
    return connection(found, lambda i: i, lambda i: item_view(ctx, i), args, ctx.in_bulk)


def locations(_: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    ctx: Context = info.context
    fields = {"id": lambda loc: loc["id"], "name": lambda loc: loc["name"]}
    groups = search.parse(args.get("query"))
    found = [
        lid
        for lid in sorted(ctx.store.locations)
        if search.matches(ctx.store.locations[lid], groups, fields, lambda loc: [loc["name"]])
    ]
    return connection(found, lambda i: i, lambda i: location_view(ctx, i), args, ctx.in_bulk)


def product(_: Any, info: GraphQLResolveInfo, id: str) -> dict[str, Any] | None:
    ctx: Context = info.context
    pid = parse_gid("Product", id)
    return product_view(ctx, pid) if pid in ctx.store.products else None


def product_variant(_: Any, info: GraphQLResolveInfo, id: str) -> dict[str, Any] | None:
    ctx: Context = info.context
    vid = parse_gid("ProductVariant", id)
    return variant_view(ctx, vid) if vid in ctx.store.variants else None


def inventory_item(_: Any, info: GraphQLResolveInfo, id: str) -> dict[str, Any] | None:
    ctx: Context = info.context
    iid = parse_gid("InventoryItem", id)
    return item_view(ctx, iid) if iid in ctx.store.inventory_items else None


def inventory_level(_: Any, info: GraphQLResolveInfo, id: str) -> dict[str, Any] | None:
    location_id = parse_gid("InventoryLevel", id)
    item = id.split("inventory_item_id=", 1)[-1] if "inventory_item_id=" in id else ""
    return _level_or_none(info.context, int(item) if item.isdigit() else None, location_id)


def location(_: Any, info: GraphQLResolveInfo, id: str | None = None) -> dict[str, Any] | None:
    ctx: Context = info.context
    # Without an id Shopify answers the shop's primary location.
    lid = DEFAULT_LOCATION_ID if id is None else parse_gid("Location", id)
    return location_view(ctx, lid) if lid in ctx.store.locations else None


def shop(_: Any, info: GraphQLResolveInfo) -> dict[str, Any]:
    data = info.context.store.shop_json()
    return {
        "id": gid("Shop", data["id"]),
        "name": data["name"],
        "myshopifyDomain": data["myshopify_domain"],
        "currencyCode": data["currency"],
        "ianaTimezone": data["iana_timezone"],
    }

"""The shop's state in memory and every operation on it, with Shopify's rules and JSON shapes.

One lock guards everything; operations are short. Each change that Shopify announces by webhook
calls `emit(topic, payload)` while the lock is held, so webhooks are queued in the order the
changes happened.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from sandbox.catalog import CatalogProduct
from sandbox.shopify.http import ShopifyError, invalid, not_found

Emit = Callable[[str, dict[str, Any]], None]

# Shopify ids are large integers; distinct ranges per resource make mix-ups obvious in tests.
ID_BASES = {
    "product": 8_100_000_000_000,
    "variant": 44_100_000_000_000,
    "inventory_item": 46_100_000_000_000,
    "image": 35_100_000_000_000,
    "option": 10_100_000_000_000,
    "order": 5_600_000_000_000,
    "line_item": 13_600_000_000_000,
    "webhook": 1_200_000_000,
    "adjustment_group": 9_100_000_000,
    "refund": 9_500_000_000,
    "bulk_operation": 3_300_000_000,
}
DEFAULT_LOCATION_ID = 1
LOCATIONS = (
    {"id": 1, "name": "Warehouse", "address1": "1 Dock Road", "city": "Newark", "zip": "07114",
     "province": "New Jersey", "country": "US", "country_code": "US", "province_code": "NJ"},
    {"id": 2, "name": "Paris Boutique", "address1": "12 Rue Saint-Honoré", "city": "Paris",
     "zip": "75001", "province": None, "country": "FR", "country_code": "FR",
     "province_code": None},
)  # fmt: skip
VENDOR = "dotshop"
FIRST_ORDER_NUMBER = 1001
# Shopify's documented cancel reasons (REST orders/{id}/cancel.json; default "other").
CANCEL_REASONS = ("customer", "fraud", "inventory", "declined", "other")
INVENTORY_BEHAVIOURS = ("bypass", "decrement_ignoring_policy", "decrement_obeying_policy")
# Shopify's default for API-created orders: inventory is NOT claimed unless asked for.
DEFAULT_INVENTORY_BEHAVIOUR = "bypass"
PRODUCT_FIELDS = ("title", "body_html", "vendor", "product_type", "handle", "tags", "status")
VARIANT_FIELDS = (
    "title", "price", "sku", "position", "inventory_policy", "compare_at_price", "option1",
    "option2", "option3", "barcode", "grams", "weight", "weight_unit", "taxable",
    "requires_shipping", "inventory_management", "fulfillment_service",
)  # fmt: skip


def gid(kind: str, id_: int | str) -> str:
    return f"gid://shopify/{kind}/{id_}"


def money(value: Any, field_name: str = "price") -> str:
    """Shopify's money strings: "129.00"."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise invalid(field_name, "is not a number") from exc
    if amount < 0:
        raise invalid(field_name, "must be greater than or equal to 0")
    return str(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def minor_to_money(minor: int) -> str:
    return str((Decimal(minor) / 100).quantize(Decimal("0.01")))


def handleize(title: str) -> str:
    out = "".join(c.lower() if c.isalnum() else "-" for c in title)
    return "-".join(part for part in out.split("-") if part)


def parse_time(value: str, field_name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ShopifyError(400, {field_name: "is not a valid date"}) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass
class Level:
    available: int
    updated_at: str
    created_at: str
    # Units set aside (GraphQL `reserved`): on hand, but no channel may sell them.
    reserved: int = 0


@dataclass
class IdempotencyRecord:
    """What an `@idempotent(key:)` mutation answered the first time, and for which arguments."""

    fingerprint: str
    result: Any


@dataclass
class OrderRecord:
    body: dict[str, Any]
    # (inventory_item_id, location_id, quantity) claimed at creation; given back on restock.
    claims: list[tuple[int, int, int]] = field(default_factory=list)


class ShopStore:
    def __init__(
        self,
        emit: Emit | None = None,
        now: Callable[[], datetime] | None = None,
        shop_domain: str = "dotshop-demo.myshopify.com",
    ) -> None:
        self._lock = threading.RLock()
        self.shop_domain = shop_domain
        self._emit = emit or (lambda topic, payload: None)
        self._now = now or (lambda: datetime.now(UTC))
        self.clear()

    # ---------------------------------------------------------------- lifecycle

    def clear(self) -> None:
        with self._lock:
            self._ids = {kind: itertools.count(base + 1) for kind, base in ID_BASES.items()}
            self.products: dict[int, dict[str, Any]] = {}
            self.variants: dict[int, dict[str, Any]] = {}
            self.inventory_items: dict[int, dict[str, Any]] = {}
            self.levels: dict[tuple[int, int], Level] = {}
            self.orders: dict[int, OrderRecord] = {}
            self.webhooks: dict[int, dict[str, Any]] = {}
            # (mutation, idempotency key) -> the original result (GraphQL `@idempotent`).
            self.idempotency: dict[tuple[str, str], IdempotencyRecord] = {}
            self.next_order_number = FIRST_ORDER_NUMBER
            stamp = self.timestamp()
            self.locations = {
                loc["id"]: {
                    **loc,
                    "address2": None,
                    "phone": None,
                    "created_at": stamp,
                    "updated_at": stamp,
                    "country_name": loc["country"],
                    "legacy": False,
                    "active": True,
                    "admin_graphql_api_id": gid("Location", loc["id"]),
                    "localized_country_name": loc["country"],
                    "localized_province_name": loc["province"],
                }
                for loc in LOCATIONS
            }

    def seed(self, catalog: Iterable[CatalogProduct]) -> None:
        """Load the demo catalog silently (no webhooks), stocked at the default location."""
        with self._lock:
            for item in catalog:
                body = {
                    "title": item.title,
                    "body_html": f"<p>{item.description}</p>",
                    "product_type": item.category,
                    "handle": item.handle,
                    "tags": item.category,
                    "images": [{"src": item.image_url, "alt": item.title}],
                    "options": [{"name": name} for name in item.option_names],
                    "variants": [
                        {
                            "title": v.title,
                            "sku": v.sku,
                            "price": minor_to_money(v.prices["usd"]),
                            **{f"option{i}": val for i, val in enumerate(v.options.values(), 1)},
                            "inventory_quantity": v.stock,
                            "presentment_prices_minor": dict(v.prices),
                        }
                        for v in item.variants
                    ],
                }
                self._create_product(body)

    def timestamp(self) -> str:
        """Now, ISO-8601 in whole seconds like Shopify's REST `updated_at`: two changes within
        one second share a timestamp, so a consumer cannot order them by it (and must not)."""
        return self._now().astimezone(UTC).replace(microsecond=0).isoformat()

    def _next_id(self, kind: str) -> int:
        return next(self._ids[kind])

    def next_id(self, kind: str) -> int:
        """A fresh id of `kind` (see ID_BASES), for resources kept outside this module."""
        with self._lock:
            return self._next_id(kind)

    # ---------------------------------------------------------------- serialisation

    def _variant_json(self, variant: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in variant.items() if k != "presentment_prices_minor"}
        qty = sum(
            level.available
            for (item_id, _), level in self.levels.items()
            if item_id == variant["inventory_item_id"]
        )
        out["inventory_quantity"] = qty
        out["old_inventory_quantity"] = qty
        # Shopify lists one entry per enabled currency (REST: include-presentment-prices).
        out["presentment_prices"] = [
            {
                "price": {"amount": minor_to_money(minor), "currency_code": currency.upper()},
                "compare_at_price": None,
            }
            for currency, minor in variant.get("presentment_prices_minor", {}).items()
        ]
        return out

    def product_json(self, product_id: int) -> dict[str, Any]:
        product = self.products[product_id]
        out = copy.deepcopy({k: v for k, v in product.items() if k != "variant_ids"})
        out["variants"] = [self._variant_json(self.variants[vid]) for vid in product["variant_ids"]]
        for image in out["images"]:
            image["variant_ids"] = []
        out["image"] = out["images"][0] if out["images"] else None
        return out

    def level_json(self, item_id: int, location_id: int) -> dict[str, Any]:
        level = self.levels[(item_id, location_id)]
        return {
            "inventory_item_id": item_id,
            "location_id": location_id,
            "available": level.available,
            "updated_at": level.updated_at,
            "admin_graphql_api_id": gid(
                "InventoryLevel", f"{location_id}?inventory_item_id={item_id}"
            ),
        }

    # ---------------------------------------------------------------- products

    def list_products(
        self,
        ids: list[int] | None = None,
        since_id: int | None = None,
        handle: list[str] | None = None,
        updated_at_min: datetime | None = None,
        product_type: str | None = None,
        status: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        with self._lock:
            out = []
            for pid in sorted(self.products):
                product = self.products[pid]
                if ids is not None and pid not in ids:
                    continue
                if since_id is not None and pid <= since_id:
                    continue
                if handle is not None and product["handle"] not in handle:
                    continue
                if product_type is not None and product["product_type"] != product_type:
                    continue
                if status is not None and product["status"] not in status:
                    continue
                if updated_at_min is not None and (
                    parse_time(product["updated_at"], "updated_at") < updated_at_min
                ):
                    continue
                out.append(self.product_json(pid))
            return out

    def get_product(self, product_id: int) -> dict[str, Any]:
        with self._lock:
            if product_id not in self.products:
                raise not_found()
            return self.product_json(product_id)

    def create_product(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            product_id = self._create_product(body)
            out = self.product_json(product_id)
            self._emit("products/create", out)
            return out

    def _create_product(self, body: dict[str, Any]) -> int:
        title = (body.get("title") or "").strip()
        if not title:
            raise invalid("title", "can't be blank")
        handle = body.get("handle") or handleize(title)
        if any(p["handle"] == handle for p in self.products.values()):
            # Shopify de-duplicates handles by suffixing a counter.
            n = 1
            while any(p["handle"] == f"{handle}-{n}" for p in self.products.values()):
                n += 1
            handle = f"{handle}-{n}"
        stamp = self.timestamp()
        product_id = self._next_id("product")
        status = body.get("status", "active")
        if status not in ("active", "draft", "archived"):
            raise invalid("status", "is not included in the list")
        product = {
            "id": product_id,
            "title": title,
            "body_html": body.get("body_html"),
            "vendor": body.get("vendor") or VENDOR,
            "product_type": body.get("product_type") or "",
            "created_at": stamp,
            "handle": handle,
            "updated_at": stamp,
            "published_at": stamp if status == "active" else None,
            "template_suffix": None,
            "published_scope": "global",
            "tags": _tags(body.get("tags")),
            "status": status,
            "admin_graphql_api_id": gid("Product", product_id),
            "options": [],
            "images": [],
            "variant_ids": [],
        }
        self.products[product_id] = product
        variants = body.get("variants") or [{"title": "Default Title", "option1": "Default Title"}]
        for position, variant in enumerate(variants, 1):
            self._create_variant(product, variant, position, stamp)
        self._set_options(product, body.get("options"))
        for position, image in enumerate(body.get("images") or [], 1):
            product["images"].append(self._image(product_id, image, position, stamp))
        return product_id

    def _set_options(self, product: dict[str, Any], options: list[Any] | None) -> None:
        names = [
            (o.get("name") if isinstance(o, dict) else str(o)) or f"Option{i}"
            for i, o in enumerate(options or [], 1)
        ][:3] or ["Title"]
        variants = [self.variants[vid] for vid in product["variant_ids"]]
        old = {o["name"]: o["id"] for o in product.get("options", [])}
        product["options"] = [
            {
                "id": old.get(name) or self._next_id("option"),
                "product_id": product["id"],
                "name": name,
                "position": i,
                "values": list(
                    dict.fromkeys(v[f"option{i}"] for v in variants if v.get(f"option{i}"))
                ),
            }
            for i, name in enumerate(names, 1)
        ]

    def _image(
        self, product_id: int, image: dict[str, Any], position: int, stamp: str
    ) -> dict[str, Any]:
        src = image.get("src")
        if not src:
            raise invalid("image", "src can't be blank")
        image_id = self._next_id("image")
        return {
            "id": image_id,
            "alt": image.get("alt"),
            "position": position,
            "product_id": product_id,
            "created_at": stamp,
            "updated_at": stamp,
            "admin_graphql_api_id": gid("ProductImage", image_id),
            "width": 2048,
            "height": 2048,
            "src": src,
        }

    def _create_variant(
        self, product: dict[str, Any], body: dict[str, Any], position: int, stamp: str
    ) -> dict[str, Any]:
        variant_id = self._next_id("variant")
        item_id = self._next_id("inventory_item")
        options = [body.get(f"option{i}") for i in (1, 2, 3)]
        title = body.get("title") or " / ".join(o for o in options if o) or "Default Title"
        variant = {
            "id": variant_id,
            "product_id": product["id"],
            "title": title,
            "price": money(body.get("price", "0.00")),
            "position": position,
            "inventory_policy": body.get("inventory_policy", "deny"),
            "compare_at_price": body.get("compare_at_price"),
            "option1": options[0] or (None if any(options) else "Default Title"),
            "option2": options[1],
            "option3": options[2],
            "created_at": stamp,
            "updated_at": stamp,
            "taxable": body.get("taxable", True),
            "barcode": body.get("barcode"),
            "fulfillment_service": "manual",
            "grams": body.get("grams", 0),
            "inventory_management": body.get("inventory_management", "shopify"),
            "requires_shipping": body.get("requires_shipping", True),
            "sku": body.get("sku") or "",
            "weight": body.get("weight", 0.0),
            "weight_unit": body.get("weight_unit", "kg"),
            "inventory_item_id": item_id,
            "image_id": None,
            "admin_graphql_api_id": gid("ProductVariant", variant_id),
            "presentment_prices_minor": dict(body.get("presentment_prices_minor") or {}),
        }
        if variant["inventory_policy"] not in ("deny", "continue"):
            raise invalid("inventory_policy", "is not included in the list")
        if not variant["presentment_prices_minor"]:
            cents = int(Decimal(variant["price"]) * 100)
            variant["presentment_prices_minor"] = {"usd": cents}
        self.variants[variant_id] = variant
        product["variant_ids"].append(variant_id)
        self.inventory_items[item_id] = {
            "id": item_id,
            "sku": variant["sku"],
            "created_at": stamp,
            "updated_at": stamp,
            "requires_shipping": variant["requires_shipping"],
            "cost": None,
            "country_code_of_origin": None,
            "province_code_of_origin": None,
            "harmonized_system_code": None,
            "tracked": variant["inventory_management"] == "shopify",
            "country_harmonized_system_codes": [],
            "admin_graphql_api_id": gid("InventoryItem", item_id),
        }
        # New variants are stocked at the default location (Shopify connects the primary one).
        self.levels[(item_id, DEFAULT_LOCATION_ID)] = Level(
            int(body.get("inventory_quantity") or 0), stamp, stamp
        )
        return variant

    def update_product(self, product_id: int, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            product = self.products.get(product_id)
            if product is None:
                raise not_found()
            if "title" in body and not (body["title"] or "").strip():
                raise invalid("title", "can't be blank")
            if "status" in body and body["status"] not in ("active", "draft", "archived"):
                raise invalid("status", "is not included in the list")
            stamp = self.timestamp()
            for name in PRODUCT_FIELDS:
                if name in body:
                    product[name] = _tags(body[name]) if name == "tags" else body[name]
            if "variants" in body:
                self._replace_variants(product, body["variants"], stamp)
            if "options" in body or "variants" in body:
                self._set_options(product, body.get("options") or product["options"])
            if "images" in body:
                product["images"] = [
                    self._image(product_id, image, position, stamp)
                    for position, image in enumerate(body["images"] or [], 1)
                ]
            product["updated_at"] = stamp
            out = self.product_json(product_id)
            self._emit("products/update", out)
            return out

    def _replace_variants(
        self, product: dict[str, Any], variants: list[dict[str, Any]], stamp: str
    ) -> None:
        """Shopify semantics: listed ids are updated, entries without id created, the rest
        deleted with their inventory items."""
        keep = []
        for position, body in enumerate(variants, 1):
            vid = body.get("id")
            if vid:
                if int(vid) not in product["variant_ids"]:
                    raise invalid("variants", f"variant {vid} does not belong to this product")
                self._apply_variant(self.variants[int(vid)], body, stamp)
                self.variants[int(vid)]["position"] = position
                keep.append(int(vid))
            else:
                keep.append(self._create_variant(product, body, position, stamp)["id"])
        for vid in [v for v in product["variant_ids"] if v not in keep]:
            self._delete_variant(vid)
        product["variant_ids"] = keep

    def _apply_variant(self, variant: dict[str, Any], body: dict[str, Any], stamp: str) -> None:
        for name in VARIANT_FIELDS:
            if name in body:
                value = money(body[name], name) if name == "price" else body[name]
                variant[name] = value
        if "price" in body:
            # Shopify's price is the shop-currency price; keep that presentment price in step.
            variant["presentment_prices_minor"]["usd"] = int(Decimal(variant["price"]) * 100)
        if "inventory_policy" in body and body["inventory_policy"] not in ("deny", "continue"):
            raise invalid("inventory_policy", "is not included in the list")
        if "sku" in body:
            self.inventory_items[variant["inventory_item_id"]]["sku"] = body["sku"]
        variant["updated_at"] = stamp

    def _delete_variant(self, variant_id: int) -> None:
        variant = self.variants.pop(variant_id)
        item_id = variant["inventory_item_id"]
        self.inventory_items.pop(item_id, None)
        for key in [k for k in self.levels if k[0] == item_id]:
            del self.levels[key]

    def delete_product(self, product_id: int) -> None:
        with self._lock:
            product = self.products.pop(product_id, None)
            if product is None:
                raise not_found()
            for vid in product["variant_ids"]:
                self._delete_variant(vid)
            self._emit("products/delete", {"id": product_id})

    # ---------------------------------------------------------------- variants

    def get_variant(self, variant_id: int) -> dict[str, Any]:
        with self._lock:
            if variant_id not in self.variants:
                raise not_found()
            return self._variant_json(self.variants[variant_id])

    def list_variants(self, product_id: int) -> list[dict[str, Any]]:
        with self._lock:
            if product_id not in self.products:
                raise not_found()
            return [
                self._variant_json(self.variants[v])
                for v in self.products[product_id]["variant_ids"]
            ]

    def update_variant(self, variant_id: int, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            variant = self.variants.get(variant_id)
            if variant is None:
                raise not_found()
            stamp = self.timestamp()
            self._apply_variant(variant, body, stamp)
            product = self.products[variant["product_id"]]
            product["updated_at"] = stamp
            self._set_options(product, product["options"])
            # A variant change is announced as an update of its product, like Shopify does.
            self._emit("products/update", self.product_json(product["id"]))
            return self._variant_json(variant)

    def variant_by_sku(self, sku: str) -> dict[str, Any]:
        with self._lock:
            for variant in self.variants.values():
                if variant["sku"] == sku:
                    return variant
            raise not_found()

    # ---------------------------------------------------------------- inventory

    def get_inventory_item(self, item_id: int) -> dict[str, Any]:
        with self._lock:
            if item_id not in self.inventory_items:
                raise not_found()
            return dict(self.inventory_items[item_id])

    def list_inventory_items(self, ids: list[int]) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(self.inventory_items[i]) for i in sorted(set(ids) & set(self.inventory_items))
            ]

    def update_inventory_item(self, item_id: int, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            item = self.inventory_items.get(item_id)
            if item is None:
                raise not_found()
            for name in ("sku", "cost", "tracked", "requires_shipping", "country_code_of_origin"):
                if name in body:
                    item[name] = money(body[name], "cost") if name == "cost" else body[name]
            item["updated_at"] = self.timestamp()
            return dict(item)

    def get_location(self, location_id: int) -> dict[str, Any]:
        with self._lock:
            if location_id not in self.locations:
                raise not_found()
            return dict(self.locations[location_id])

    def list_levels(
        self, item_ids: list[int] | None, location_ids: list[int] | None
    ) -> list[dict[str, Any]]:
        with self._lock:
            keys = sorted(
                (loc, item)
                for item, loc in self.levels
                if (item_ids is None or item in item_ids)
                and (location_ids is None or loc in location_ids)
            )
            return [self.level_json(item, loc) for loc, item in keys]

    def _check_pair(self, location_id: Any, item_id: Any) -> tuple[int, int]:
        try:
            location_id, item_id = int(location_id), int(item_id)
        except (TypeError, ValueError) as exc:
            raise ShopifyError(
                422, {"base": ["location_id and inventory_item_id are required"]}
            ) from exc
        if location_id not in self.locations:
            raise ShopifyError(422, {"location_id": ["Location not found"]})
        if item_id not in self.inventory_items:
            raise ShopifyError(422, {"inventory_item_id": ["Inventory item not found"]})
        return location_id, item_id

    def set_level(self, location_id: Any, item_id: Any, available: Any) -> dict[str, Any]:
        with self._lock:
            location_id, item_id = self._check_pair(location_id, item_id)
            if not isinstance(available, int) or isinstance(available, bool):
                raise ShopifyError(422, {"available": ["must be an integer"]})
            stamp = self.timestamp()
            level = self.levels.get((item_id, location_id))
            if level is None:  # set.json connects an unconnected location on the fly
                self.levels[(item_id, location_id)] = Level(available, stamp, stamp)
            else:
                level.available, level.updated_at = available, stamp
            return self._level_changed(item_id, location_id)

    def adjust_level(self, location_id: Any, item_id: Any, delta: Any) -> dict[str, Any]:
        with self._lock:
            location_id, item_id = self._check_pair(location_id, item_id)
            if not isinstance(delta, int) or isinstance(delta, bool):
                raise ShopifyError(422, {"available_adjustment": ["must be an integer"]})
            level = self.levels.get((item_id, location_id))
            if level is None:
                raise ShopifyError(
                    422, ["Inventory item does not have inventory tracking enabled at location"]
                )
            level.available += delta
            level.updated_at = self.timestamp()
            return self._level_changed(item_id, location_id)

    def connect_level(self, location_id: Any, item_id: Any) -> tuple[dict[str, Any], bool]:
        """(level, created): connecting twice returns the existing level."""
        with self._lock:
            location_id, item_id = self._check_pair(location_id, item_id)
            if (item_id, location_id) in self.levels:
                return self.level_json(item_id, location_id), False
            stamp = self.timestamp()
            self.levels[(item_id, location_id)] = Level(0, stamp, stamp)
            return self.level_json(item_id, location_id), True

    def disconnect_level(self, location_id: Any, item_id: Any) -> None:
        with self._lock:
            location_id, item_id = self._check_pair(location_id, item_id)
            if self.levels.pop((item_id, location_id), None) is None:
                raise not_found()

    def sell_elsewhere(
        self, sku: str | None, item_id: int | None, location_id: int | None, delta: int
    ) -> dict[str, Any]:
        """Stock moved by another sales channel (POS, marketplace): adjust and announce it."""
        with self._lock:
            if sku is not None:
                item_id = self.variant_by_sku(sku)["inventory_item_id"]
            if item_id is None:
                raise ShopifyError(422, {"base": ["sku or inventory_item_id is required"]})
            if location_id is None:
                connected = sorted(loc for item, loc in self.levels if item == item_id)
                location_id = connected[0] if connected else DEFAULT_LOCATION_ID
            return self.adjust_level(location_id, item_id, delta)

    def _level_changed(self, item_id: int, location_id: int) -> dict[str, Any]:
        out = self.level_json(item_id, location_id)
        self._emit("inventory_levels/update", out)
        return out

    # ---------------------------------------------------------------- orders

    def create_order(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            lines = body.get("line_items") or []
            if not lines:
                raise invalid("line_items", "must have at least one line item")
            behaviour = body.get("inventory_behaviour") or DEFAULT_INVENTORY_BEHAVIOUR
            if behaviour not in INVENTORY_BEHAVIOURS:
                raise invalid("inventory_behaviour", "is not included in the list")
            resolved = [self._resolve_line(line) for line in lines]
            claims = self._claims(resolved, behaviour)
            stamp = self.timestamp()
            order_id = self._next_id("order")
            number = self.next_order_number
            self.next_order_number += 1
            currency = (body.get("currency") or "USD").upper()
            line_json = [self._line_json(variant, line) for variant, line in resolved]
            subtotal = sum(Decimal(li["price"]) * li["quantity"] for li in line_json)
            tax_lines = [_tax_line(t) for t in body.get("tax_lines") or []]
            taxes = [t for li in line_json for t in li["tax_lines"]] + tax_lines
            total_tax = sum((Decimal(t["price"]) for t in taxes), Decimal(0))
            taxes_included = bool(body.get("taxes_included", False))
            total = subtotal if taxes_included else subtotal + total_tax
            order = {
                "id": order_id,
                "admin_graphql_api_id": gid("Order", order_id),
                "name": f"#{number}",
                "order_number": number,
                "number": number - 1000,
                "email": body.get("email") or "",
                "created_at": stamp,
                "updated_at": stamp,
                "processed_at": body.get("processed_at") or stamp,
                "closed_at": None,
                "cancelled_at": None,
                "cancel_reason": None,
                "confirmed": True,
                "test": bool(body.get("test", False)),
                "currency": currency,
                "presentment_currency": currency,
                "financial_status": body.get("financial_status") or "paid",
                "fulfillment_status": None,
                "subtotal_price": str(subtotal.quantize(Decimal("0.01"))),
                "total_line_items_price": str(subtotal.quantize(Decimal("0.01"))),
                "total_price": str(total.quantize(Decimal("0.01"))),
                "total_tax": str(total_tax.quantize(Decimal("0.01"))),
                "total_discounts": "0.00",
                "taxes_included": taxes_included,
                "tax_lines": tax_lines,
                "refunds": [],
                "note": body.get("note"),
                "note_attributes": list(body.get("note_attributes") or []),
                "tags": _tags(body.get("tags")),
                "source_name": body.get("source_name") or "api",
                "source_identifier": body.get("source_identifier"),
                "line_items": line_json,
                "shipping_address": body.get("shipping_address"),
                "billing_address": body.get("billing_address"),
                "customer": body.get("customer"),
                "transactions": body.get("transactions") or [],
            }
            self.orders[order_id] = OrderRecord(order, claims)
            for item_id, location_id, qty in claims:
                level = self.levels[(item_id, location_id)]
                level.available -= qty
                level.updated_at = self.timestamp()
            self._emit("orders/create", copy.deepcopy(order))
            for item_id, location_id, _ in claims:
                self._level_changed(item_id, location_id)
            return copy.deepcopy(order)

    def _resolve_line(self, line: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        quantity = line.get("quantity", 1)
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            raise invalid("line_items", "quantity must be greater than or equal to 1")
        if line.get("variant_id") is not None:
            variant = self.variants.get(int(line["variant_id"]))
            if variant is None:
                raise invalid("line_items", f"variant {line['variant_id']} does not exist")
            return variant, line
        if not line.get("title") or line.get("price") is None:
            # A custom line item needs a title and a price; it never touches inventory.
            raise invalid("line_items", "variant_id or title and price are required")
        return None, line

    def _claims(
        self, resolved: list[tuple[dict[str, Any] | None, dict[str, Any]]], behaviour: str
    ) -> list[tuple[int, int, int]]:
        """Where each line's units come from; raises 422 (claiming nothing) when the order
        cannot be fulfilled under `decrement_obeying_policy`."""
        if behaviour == "bypass":
            return []
        wanted: dict[int, int] = {}
        variants: dict[int, dict[str, Any]] = {}
        for variant, line in resolved:
            if variant is None or variant["inventory_management"] != "shopify":
                continue
            item_id = variant["inventory_item_id"]
            wanted[item_id] = wanted.get(item_id, 0) + line.get("quantity", 1)
            variants[item_id] = variant
        claims = []
        for item_id, qty in wanted.items():
            locations = sorted(loc for item, loc in self.levels if item == item_id)
            if not locations:
                raise invalid("line_items", f"{variants[item_id]['sku']} is not stocked anywhere")
            must_obey = (
                behaviour == "decrement_obeying_policy"
                and variants[item_id]["inventory_policy"] == "deny"
            )
            enough = [loc for loc in locations if self.levels[(item_id, loc)].available >= qty]
            if must_obey and not enough:
                best = max(self.levels[(item_id, loc)].available for loc in locations)
                raise invalid(
                    "line_items",
                    f"{variants[item_id]['sku']} is out of stock: {best} available, {qty} ordered",
                )
            claims.append((item_id, (enough or locations)[0], qty))
        return claims

    def _line_json(self, variant: dict[str, Any] | None, line: dict[str, Any]) -> dict[str, Any]:
        line_id = self._next_id("line_item")
        quantity = line.get("quantity", 1)
        if variant is None:
            price = money(line["price"])
            return {
                "id": line_id,
                "admin_graphql_api_id": gid("LineItem", line_id),
                "variant_id": None,
                "product_id": None,
                "title": line["title"],
                "name": line["title"],
                "variant_title": None,
                "sku": line.get("sku"),
                "quantity": quantity,
                "current_quantity": quantity,
                "fulfillable_quantity": quantity,
                "price": price,
                "requires_shipping": line.get("requires_shipping", True),
                "taxable": line.get("taxable", True),
                "grams": 0,
                "gift_card": False,
                "properties": line.get("properties") or [],
                "tax_lines": [_tax_line(t) for t in line.get("tax_lines") or []],
            }
        product = self.products[variant["product_id"]]
        price = money(line["price"]) if line.get("price") is not None else variant["price"]
        return {
            "id": line_id,
            "admin_graphql_api_id": gid("LineItem", line_id),
            "variant_id": variant["id"],
            "product_id": product["id"],
            "title": product["title"],
            "name": f"{product['title']} - {variant['title']}",
            "variant_title": variant["title"],
            "sku": variant["sku"],
            "vendor": product["vendor"],
            "quantity": quantity,
            "current_quantity": quantity,
            "fulfillable_quantity": quantity,
            "price": price,
            "requires_shipping": variant["requires_shipping"],
            "taxable": variant["taxable"],
            "grams": variant["grams"],
            "gift_card": False,
            "variant_inventory_management": variant["inventory_management"],
            "properties": line.get("properties") or [],
            "tax_lines": [_tax_line(t) for t in line.get("tax_lines") or []],
        }

    def get_order(self, order_id: int) -> dict[str, Any]:
        with self._lock:
            if order_id not in self.orders:
                raise not_found()
            return copy.deepcopy(self.orders[order_id].body)

    def list_orders(
        self,
        status: str = "open",
        ids: list[int] | None = None,
        since_id: int | None = None,
        financial_status: str | None = None,
    ) -> list[dict[str, Any]]:
        if status not in ("open", "closed", "cancelled", "any"):
            raise ShopifyError(400, {"status": "is not a valid status"})
        with self._lock:
            out = []
            for oid in sorted(self.orders):
                order = self.orders[oid].body
                state = (
                    "cancelled"
                    if order["cancelled_at"]
                    else "closed"
                    if order["closed_at"]
                    else "open"
                )
                if status != "any" and state != status:
                    continue
                if ids is not None and oid not in ids:
                    continue
                if since_id is not None and oid <= since_id:
                    continue
                if financial_status not in (None, "any", order["financial_status"]):
                    continue
                out.append(copy.deepcopy(order))
            return out

    def cancel_order(
        self, order_id: int, restock: bool, reason: str | None, amount: Any = None
    ) -> dict[str, Any]:
        with self._lock:
            record = self.orders.get(order_id)
            if record is None:
                raise not_found()
            order = record.body
            if (reason or "other") not in CANCEL_REASONS:
                raise invalid("reason", "is not included in the list")
            if order["cancelled_at"]:
                raise ShopifyError(422, {"base": ["Order has already been cancelled"]})
            stamp = self.timestamp()
            order["cancelled_at"] = stamp
            order["closed_at"] = stamp
            order["updated_at"] = stamp
            order["cancel_reason"] = reason or "other"
            if amount is not None and order["financial_status"] in ("paid", "partially_paid"):
                order["financial_status"] = "refunded"
            restocked = record.claims if restock else []
            for item_id, location_id, qty in restocked:
                level = self.levels.get((item_id, location_id))
                if level is not None:  # the item may have been deleted since
                    level.available += qty
                    level.updated_at = self.timestamp()
            record.claims = [] if restock else record.claims
            self._emit("orders/cancelled", copy.deepcopy(order))
            for item_id, location_id, _ in restocked:
                if (item_id, location_id) in self.levels:
                    self._level_changed(item_id, location_id)
            return copy.deepcopy(order)

    # ---------------------------------------------------------------- webhook subscriptions

    def create_webhook(
        self, body: dict[str, Any], topics: Iterable[str], api_version: str
    ) -> dict[str, Any]:
        with self._lock:
            topic, address = body.get("topic"), body.get("address")
            errors: dict[str, list[str]] = {}
            if topic not in topics:
                errors["topic"] = ["Invalid topic specified."]
            if not address or not str(address).startswith(("http://", "https://")):
                errors["address"] = ["is invalid"]
            if (body.get("format") or "json") != "json":
                errors["format"] = ["is not supported (json only in the sandbox)"]
            if any(w["topic"] == topic and w["address"] == address for w in self.webhooks.values()):
                errors["address"] = ["for this topic has already been taken"]
            if errors:
                raise ShopifyError(422, errors)
            stamp = self.timestamp()
            webhook_id = self._next_id("webhook")
            webhook = {
                "id": webhook_id,
                "address": address,
                "topic": topic,
                "created_at": stamp,
                "updated_at": stamp,
                "format": "json",
                "fields": list(body.get("fields") or []),
                "metafield_namespaces": [],
                "api_version": api_version,
                "private_metafield_namespaces": [],
                "admin_graphql_api_id": gid("WebhookSubscription", webhook_id),
            }
            self.webhooks[webhook_id] = webhook
            return dict(webhook)

    def list_webhooks(
        self, topic: str | None = None, address: str | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(w)
                for _, w in sorted(self.webhooks.items())
                if topic in (None, w["topic"]) and address in (None, w["address"])
            ]

    def get_webhook(self, webhook_id: int) -> dict[str, Any]:
        with self._lock:
            if webhook_id not in self.webhooks:
                raise not_found()
            return dict(self.webhooks[webhook_id])

    def delete_webhook(self, webhook_id: int) -> None:
        with self._lock:
            if self.webhooks.pop(webhook_id, None) is None:
                raise not_found()

    def subscribers(self, topic: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(w) for w in self.webhooks.values() if w["topic"] == topic]

    # ---------------------------------------------------------------- shop

    def shop_json(self) -> dict[str, Any]:
        location = self.locations[DEFAULT_LOCATION_ID]
        return {
            "id": 1,
            "name": "dotshop demo",
            "email": "ops@dotshop.example",
            "domain": self.shop_domain,
            "myshopify_domain": self.shop_domain,
            "currency": "USD",
            "enabled_presentment_currencies": ["USD", "EUR"],
            "country_code": location["country_code"],
            "iana_timezone": "Etc/UTC",
            "timezone": "(GMT+00:00) Etc/UTC",
            "primary_location_id": DEFAULT_LOCATION_ID,
            "plan_name": "sandbox",
            "multi_location_enabled": True,
        }

    # ---------------------------------------------------------------- export

    def export(self) -> dict[str, Any]:
        with self._lock:
            return {
                "products": [self.product_json(pid) for pid in sorted(self.products)],
                "inventory_items": [self.inventory_items[i] for i in sorted(self.inventory_items)],
                "inventory_levels": [self.level_json(i, loc) for i, loc in sorted(self.levels)],
                "locations": [self.locations[i] for i in sorted(self.locations)],
                "orders": [copy.deepcopy(self.orders[o].body) for o in sorted(self.orders)],
                "webhooks": [dict(self.webhooks[w]) for w in sorted(self.webhooks)],
            }


def _tags(value: Any) -> str:
    """Shopify stores tags as one comma-separated string, whatever it was given."""
    if value is None:
        return ""
    parts = value if isinstance(value, list) else str(value).split(",")
    return ", ".join(p.strip() for p in parts if str(p).strip())


def _tax_line(tax: dict[str, Any]) -> dict[str, Any]:
    """A tax line as charged: Shopify keeps the amount given, it does not recompute it."""
    return {
        "title": tax.get("title") or "Tax",
        "rate": float(tax.get("rate") or 0),
        "price": money(tax.get("price", "0.00"), "tax_lines"),
    }

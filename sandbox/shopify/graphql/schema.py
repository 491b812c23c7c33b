"""The executable schema: schema.graphql (the contract) plus the root resolvers bound to it."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from graphql import GraphQLScalarType, GraphQLSchema, build_schema

from sandbox.shopify.graphql.resolvers import bulk, catalog, inventory, orders, webhooks

ROOT_RESOLVERS = {
    "Query": {
        "shop": catalog.shop,
        "products": catalog.products,
        "product": catalog.product,
        "productVariants": catalog.product_variants,
        "productVariant": catalog.product_variant,
        "inventoryItems": catalog.inventory_items,
        "inventoryItem": catalog.inventory_item,
        "inventoryLevel": catalog.inventory_level,
        "locations": catalog.locations,
        "location": catalog.location,
        "orders": orders.orders,
        "order": orders.order,
        "webhookSubscriptions": webhooks.webhook_subscriptions,
        "currentBulkOperation": bulk.current_bulk_operation,
    },
    "Mutation": {
        "inventoryAdjustQuantities": inventory.inventory_adjust_quantities,
        "inventoryMoveQuantities": inventory.inventory_move_quantities,
        "inventorySetQuantities": inventory.inventory_set_quantities,
        "orderCreate": orders.order_create,
        "orderCancel": orders.order_cancel,
        "refundCreate": orders.refund_create,
        "webhookSubscriptionCreate": webhooks.webhook_subscription_create,
        "bulkOperationRunQuery": bulk.bulk_operation_run_query,
    },
}


def _decimal_string(value: Any) -> str:
    """Decimal and Money travel as strings ("129.00"), whatever number the client sent."""
    return str(Decimal(str(value)))


def build() -> GraphQLSchema:
    schema = build_schema((Path(__file__).with_name("schema.graphql")).read_text())
    for type_name, fields in ROOT_RESOLVERS.items():
        root = schema.get_type(type_name)
        for name, resolver in fields.items():
            root.fields[name].resolve = resolver  # type: ignore[union-attr]
    # Shopify serialises 64-bit ids as strings: JSON numbers lose precision beyond 2**53.
    unsigned: GraphQLScalarType = schema.get_type("UnsignedInt64")  # type: ignore[assignment]
    unsigned.serialize = str  # type: ignore[method-assign]
    for name in ("Decimal", "Money"):
        scalar: GraphQLScalarType = schema.get_type(name)  # type: ignore[assignment]
        scalar.serialize = _decimal_string  # type: ignore[method-assign]
        scalar.parse_value = _decimal_string  # type: ignore[method-assign]
    return schema


SCHEMA = build()

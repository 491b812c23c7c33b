"""webhookSubscriptionCreate / webhookSubscriptions over the same subscriptions REST manages:
one list, so a subscription made either way receives every change made either way."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLResolveInfo

from sandbox.shopify.events import TOPICS
from sandbox.shopify.graphql.connections import connection
from sandbox.shopify.graphql.context import Context
from sandbox.shopify.graphql.gids import datetime_z, gid
from sandbox.shopify.http import ShopifyError


def rest_topic(topic: str) -> str:
    """INVENTORY_LEVELS_UPDATE -> inventory_levels/update."""
    resource, _, action = topic.lower().rpartition("_")
    return f"{resource}/{action}"


def graphql_topic(topic: str) -> str:
    return topic.replace("/", "_").upper()


def subscription_view(webhook: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": gid("WebhookSubscription", webhook["id"]),
        "legacyResourceId": webhook["id"],
        "topic": graphql_topic(webhook["topic"]),
        "uri": webhook["address"],
        "format": webhook["format"].upper(),
        "includeFields": webhook["fields"],
        "createdAt": datetime_z(webhook["created_at"]),
        "updatedAt": datetime_z(webhook["updated_at"]),
    }


def webhook_subscription_create(
    _: Any,
    info: GraphQLResolveInfo,
    topic: str,
    webhookSubscription: dict[str, Any],
) -> dict[str, Any]:
    ctx: Context = info.context
    spec = webhookSubscription
    body = {
        "topic": rest_topic(topic),
        "address": spec.get("uri") or spec.get("callbackUrl"),
        "format": (spec.get("format") or "JSON").lower(),
        "fields": spec.get("includeFields") or [],
    }
    try:
        webhook = ctx.store.create_webhook(body, TOPICS, ctx.version)
    except ShopifyError as error:
        errors = error.errors if isinstance(error.errors, dict) else {"base": [str(error.errors)]}
        return {
            "webhookSubscription": None,
            "userErrors": [
                {"field": ["webhookSubscription", "uri" if name == "address" else name],
                 "message": f"{'Address' if name == 'address' else name.capitalize()} {m}"}
                for name, messages in errors.items()
                for m in messages
            ],
        }  # fmt: skip
    return {"webhookSubscription": subscription_view(webhook), "userErrors": []}


def webhook_subscriptions(_: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    ctx: Context = info.context
    topics = {rest_topic(t) for t in args.get("topics") or []}
    found = [w for w in ctx.store.list_webhooks() if not topics or w["topic"] in topics]
    by_id = {w["id"]: w for w in found}
    return connection(
        sorted(by_id), lambda i: i, lambda i: subscription_view(by_id[i]), args, ctx.in_bulk
    )

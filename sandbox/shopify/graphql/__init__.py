"""A subset of Shopify's GraphQL Admin API over the sandbox's one shared store: catalog and
inventory reads, inventory state mutations with `@idempotent` and `changeFromQuantity`, orders,
refunds, webhook subscriptions, bulk queries, and calculated-cost throttling."""

from sandbox.shopify.graphql.bulk import FILES_PREFIX, send_jsonl
from sandbox.shopify.graphql.endpoint import GraphQLEndpoint

__all__ = ["FILES_PREFIX", "GraphQLEndpoint", "send_jsonl"]

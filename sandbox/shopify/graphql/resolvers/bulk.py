"""bulkOperationRunQuery and currentBulkOperation."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLResolveInfo

from sandbox.shopify.graphql.context import Context


def bulk_operation_run_query(
    _: Any,
    info: GraphQLResolveInfo,
    query: str,
    groupObjects: bool = True,
) -> dict[str, Any]:
    ctx: Context = info.context
    operation, errors = ctx.bulk.start(query, ctx)
    return {"bulkOperation": operation, "userErrors": errors}


def current_bulk_operation(
    _: Any, info: GraphQLResolveInfo, type: str = "QUERY"
) -> dict[str, Any] | None:
    ctx: Context = info.context
    # Only bulk queries exist in the sandbox; there is never a current bulk mutation.
    return ctx.bulk.current() if type == "QUERY" else None

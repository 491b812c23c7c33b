"""POST /admin/api/<version>/graphql.json: version, calculated cost and throttling, execution.

Throttled and over-cost requests are answered 200 with `errors` (code THROTTLED or
MAX_COST_EXCEEDED) and nothing executed; every answer carries `extensions.cost`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from graphql import DocumentNode, GraphQLError, execute, get_operation_ast, parse, validate

from sandbox.shopify.graphql.bulk import FILES_PREFIX, BulkOperations
from sandbox.shopify.graphql.context import Context
from sandbox.shopify.graphql.cost import MAX_QUERY_COST, QueryCost
from sandbox.shopify.graphql.schema import SCHEMA
from sandbox.shopify.graphql.throttle import CostBucket
from sandbox.shopify.graphql.versions import served_version
from sandbox.shopify.http import Request, Response, ShopifyError
from sandbox.shopify.store import ShopStore

RATE_LIMITS_DOC = "https://shopify.dev/api/usage/rate-limits"
# Distinct query texts kept parsed and validated: a client sends the same few again and again.
PREPARED_QUERIES = 256


@functools.lru_cache(maxsize=PREPARED_QUERIES)
def prepared(query: str) -> tuple[DocumentNode | None, list[dict[str, Any]]]:
    """The query parsed and validated against the schema once per text (an AST is never
    changed by execution): the document, or None with the errors to answer."""
    try:
        document = parse(query)
    except GraphQLError as error:
        return None, [error.formatted]
    return document, [e.formatted for e in validate(SCHEMA, document)]


class GraphQLEndpoint:
    def __init__(
        self, store: ShopStore, clock: Callable[[], float], now: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.now = now
        self.bucket = CostBucket(clock)
        self.bulk = BulkOperations(SCHEMA, store, now)

    def reset(self) -> None:
        self.bucket.reset()
        self.bulk.reset()

    def handle(self, request: Request, version: str, token: str) -> Response:
        served = served_version(version, self.now().date())
        if served is None or request.method != "POST":
            return Response(404, {"errors": "Not Found"})
        headers = [("X-Shopify-API-Version", served)]
        body = request.json()
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, str) or not query.strip():
            raise ShopifyError(400, {"query": "Required parameter missing or invalid"})
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            raise ShopifyError(400, {"variables": "must be an object"})
        operation_name = body.get("operationName")
        document, problems = prepared(query)
        if document is None or problems:
            return Response(200, {"errors": problems}, headers)
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            error = GraphQLError("An operation name is required")
            return Response(200, {"errors": [error.formatted]}, headers)

        cost = QueryCost(SCHEMA, document, operation, variables)
        requested = cost.requested()
        if requested > MAX_QUERY_COST:
            message = (
                f"Query cost is {requested}, which exceeds the single query max cost limit"
                f" ({MAX_QUERY_COST})."
            )
            extensions = {"code": "MAX_COST_EXCEEDED", "cost": requested, "maxCost": MAX_QUERY_COST}
            error = {"message": message, "extensions": extensions}
            return Response(200, {"errors": [error], **self._cost(token, requested, None)}, headers)
        if not self.bucket.take(token, requested):
            error = {
                "message": "Throttled",
                "extensions": {"code": "THROTTLED", "documentation": RATE_LIMITS_DOC},
            }
            return Response(200, {"errors": [error], **self._cost(token, requested, None)}, headers)

        context = Context(self.store, served, request.base_url, bulk=self.bulk)
        with self.store._lock:  # one execution sees (and changes) one consistent shop
            result = execute(
                SCHEMA,
                document,
                variable_values=variables,
                operation_name=operation_name,
                context_value=context,
            )
        actual = cost.actual(result.data)
        self.bucket.give_back(token, requested - actual)
        out: dict[str, Any] = {}
        if result.errors:
            out["errors"] = [e.formatted for e in result.errors]
        out["data"] = result.data
        out.update(self._cost(token, requested, actual))
        return Response(200, out, headers)

    def _cost(self, token: str, requested: int, actual: int | None) -> dict[str, Any]:
        return {
            "extensions": {
                "cost": {
                    "requestedQueryCost": requested,
                    "actualQueryCost": actual,
                    "throttleStatus": self.bucket.status(token).as_json(),
                }
            }
        }

    def result_file(self, path: str) -> bytes | None:
        """The JSONL of a completed bulk operation (`/_sandbox/bulk-operations/<n>.jsonl`)."""
        name = path[len(FILES_PREFIX) :]
        number = name.removesuffix(".jsonl")
        return self.bulk.file(int(number)) if number.isdigit() and name.endswith(".jsonl") else None

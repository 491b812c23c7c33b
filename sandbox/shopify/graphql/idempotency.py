"""`@idempotent(key:)` on the mutations that take it (shopify.dev "Implementing idempotency";
changelog "Making idempotency mandatory for inventory adjustments and refund mutations").

Same key and same arguments: the original result, nothing changes a second time. Same key with
other arguments: IDEMPOTENCY_KEY_PARAMETER_MISMATCH. No key from 2026-04 on: a BAD_REQUEST error
for that field at run time (the schema cannot say the directive is required). A result that
carries user errors changed nothing and is not recorded, so a retry runs again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from graphql import GraphQLError, GraphQLResolveInfo, GraphQLString, value_from_ast

from sandbox.shopify.graphql.versions import strict_inventory
from sandbox.shopify.store import IdempotencyRecord, ShopStore

MISSING = "The @idempotent directive is required for this mutation but was not provided."
MISMATCH = "The same idempotency key cannot be used with different operation parameters."


def key_of(info: GraphQLResolveInfo) -> str | None:
    for directive in info.field_nodes[0].directives:
        if directive.name.value == "idempotent":
            argument = next(a for a in directive.arguments if a.name.value == "key")
            key = value_from_ast(argument.value, GraphQLString, info.variable_values)
            if not key or not str(key).strip():
                raise GraphQLError(
                    "The idempotency key can't be blank.", extensions={"code": "BAD_REQUEST"}
                )
            return str(key)
    return None


def run_once(
    info: GraphQLResolveInfo,
    arguments: dict[str, Any],
    mutate: Callable[[], dict[str, Any]],
    mismatch: Callable[[str], dict[str, Any]],
) -> dict[str, Any]:
    """Run `mutate` (which returns the payload) at most once per key, under the store's lock so
    that a concurrent retry waits for the original and then replays it."""
    context = info.context
    store: ShopStore = context.store
    key = key_of(info)
    if key is None:
        if strict_inventory(context.version):
            raise GraphQLError(MISSING, extensions={"code": "BAD_REQUEST"})
        with store._lock:
            return mutate()
    fingerprint = hashlib.sha256(
        json.dumps([info.field_name, arguments], sort_keys=True, default=str).encode()
    ).hexdigest()
    with store._lock:
        record = store.idempotency.get((info.field_name, key))
        if record is not None:
            return record.result if record.fingerprint == fingerprint else mismatch(MISMATCH)
        payload = mutate()
        if not payload.get("userErrors"):
            store.idempotency[(info.field_name, key)] = IdempotencyRecord(fingerprint, payload)
        return payload

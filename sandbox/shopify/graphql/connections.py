"""Relay connections as Shopify pages them: `first`/`after` (or `last`/`before`) over a stable
sort key, opaque cursors, `pageInfo`, at most 250 nodes a page."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from graphql import GraphQLError

T = TypeVar("T")
MAX_PAGE_SIZE = 250  # Shopify refuses larger pages (shopify.dev "Paginating results with GraphQL")


def encode_cursor(last_id: int) -> str:
    return base64.b64encode(json.dumps({"last_id": last_id}).encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        return int(json.loads(base64.b64decode(cursor, validate=True))["last_id"])
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise GraphQLError("Invalid cursor for current pagination sort.") from exc


def page_size(first: int | None, last: int | None, bulk: bool) -> int | None:
    """How many nodes this page holds; None inside a bulk operation (everything)."""
    if bulk:
        return None
    if first is None and last is None:
        raise GraphQLError("you must provide one of first or last")
    size = first if first is not None else last
    if size is None or size < 0 or size > MAX_PAGE_SIZE:
        raise GraphQLError(f"The first or last argument must be between 0 and {MAX_PAGE_SIZE}.")
    return size


def connection(
    items: Sequence[T],
    key: Callable[[T], int],
    view: Callable[[T], dict[str, Any]],
    args: dict[str, Any],
    bulk: bool = False,
) -> dict[str, Any]:
    """One page of `items` (already filtered and sorted ascending by `key`)."""
    first, last = args.get("first"), args.get("last")
    size = page_size(first, last, bulk)
    ordered = list(reversed(items)) if args.get("reverse") else list(items)
    position = {key(item): i for i, item in enumerate(ordered)}
    start, stop = 0, len(ordered)
    if args.get("after"):
        start = _index_after(position, decode_cursor(args["after"]), bool(args.get("reverse")))
    if args.get("before"):
        stop = position.get(decode_cursor(args["before"]), stop)
    window = ordered[start:stop]
    if size is not None:
        window = window[:size] if first is not None else window[max(0, len(window) - size) :]
    lo = start if not window else position[key(window[0])]
    hi = stop if not window else position[key(window[-1])] + 1
    edges = [{"cursor": encode_cursor(key(item)), "node": view(item)} for item in window]
    return {
        "edges": edges,
        "nodes": [edge["node"] for edge in edges],
        "pageInfo": {
            "hasNextPage": hi < len(ordered),
            "hasPreviousPage": lo > 0,
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }


def _index_after(position: dict[int, int], cursor_id: int, reverse: bool) -> int:
    if cursor_id in position:
        return position[cursor_id] + 1
    # The node behind the cursor is gone (deleted since): continue after where it sorted.
    return sum(1 for k in position if (k >= cursor_id if reverse else k <= cursor_id))

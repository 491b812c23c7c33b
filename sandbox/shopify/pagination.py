"""Shopify's cursor pagination: an opaque `page_info` that carries the filters and the position,
and a `Link` header with `rel="next"` / `rel="previous"` URLs.

The ShopifyAPI library splits the header on ", " and "; " and follows the URLs verbatim, so the
cursor is URL-safe base64 and the URLs contain neither separator.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from sandbox.shopify.http import Request, ShopifyError

T = TypeVar("T")
DEFAULT_LIMIT = 50
MAX_LIMIT = 250


@dataclass
class Cursor:
    filters: dict[str, Any]  # the filters of the first request, replayed on every page
    after: int | None = None  # next page: ids greater than this
    before: int | None = None  # previous page: ids smaller than this

    def encode(self) -> str:
        raw = json.dumps({"f": self.filters, "a": self.after, "b": self.before}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            return cls(dict(data["f"]), data["a"], data["b"])
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise ShopifyError(400, {"page_info": "Invalid value."}) from exc


def page_limit(request: Request) -> int:
    limit = request.int_param("limit", DEFAULT_LIMIT) or DEFAULT_LIMIT
    if limit < 1:
        raise ShopifyError(400, {"limit": "must be at least 1"})
    return min(limit, MAX_LIMIT)


def request_filters(request: Request, names: Sequence[str]) -> tuple[dict[str, Any], Cursor]:
    """The filters in force: from the cursor when `page_info` is given (Shopify ignores other
    filters then), else from the query string."""
    token = request.param("page_info")
    if token:
        cursor = Cursor.decode(token)
        return cursor.filters, cursor
    filters = {}
    for name in names:
        values = request.query.get(name) or request.query.get(f"{name}[]")
        if values:
            filters[name] = ",".join(values)
    return filters, Cursor(filters)


def paginate(
    request: Request,
    items: Sequence[T],
    key: Callable[[T], int],
    cursor: Cursor,
) -> tuple[list[T], list[tuple[str, str]]]:
    """One page of `items` (already filtered and sorted by `key`) plus the Link header."""
    limit = page_limit(request)
    if cursor.before is not None:
        earlier = [item for item in items if key(item) < cursor.before]
        page = earlier[-limit:]
    else:
        page = [item for item in items if cursor.after is None or key(item) > cursor.after][:limit]
    links = []
    if page:
        first, last = key(page[0]), key(page[-1])
        if any(key(item) > last for item in items):
            links.append((_url(request, limit, Cursor(cursor.filters, after=last)), "next"))
        paged = cursor.after is not None or cursor.before is not None
        if paged and any(key(item) < first for item in items):
            links.append((_url(request, limit, Cursor(cursor.filters, before=first)), "previous"))
    if not links:
        return page, []
    value = ", ".join(f'<{url}>; rel="{rel}"' for url, rel in links)
    return page, [("Link", value)]


def _url(request: Request, limit: int, cursor: Cursor) -> str:
    query = {"limit": limit, "page_info": cursor.encode()}
    fields = request.param("fields")
    if fields:
        query["fields"] = fields
    return f"{request.base_url}{request.path}?{urlencode(query)}"

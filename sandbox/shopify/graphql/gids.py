"""Global ids (`gid://shopify/<Type>/<id>`) and Shopify's DateTime strings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

PREFIX = "gid://shopify/"


def gid(kind: str, id_: int | str) -> str:
    return f"{PREFIX}{kind}/{id_}"


def parse_gid(kind: str, value: Any) -> int | None:
    """The numeric id of a `gid://shopify/<kind>/<n>`; None when it names another type or no
    number (Shopify then finds nothing, it does not fail the query)."""
    text = str(value or "")
    head = f"{PREFIX}{kind}/"
    if not text.startswith(head):
        return None
    tail = text[len(head) :].split("?", 1)[0]
    return int(tail) if tail.isdigit() else None


def datetime_z(value: str | None) -> str | None:
    """The store's ISO-8601 (`+00:00`) as GraphQL's DateTime (`Z`, whole seconds)."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")

"""List objects (`limit`, `starting_after`, `ending_before`, `created` ranges) and the search
query language subset (`metadata['k']:'v'`, `status:'succeeded'`, `amount>100`, AND/OR)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sandbox.stripe.errors import ApiError
from sandbox.stripe.forms import get_int, get_str

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
LIST_PARAMS = {"limit", "starting_after", "ending_before", "created", "expand"}


def created_filter(params: dict[str, Any], field: str = "created") -> Callable[[dict], bool]:
    """`created=123` or `created[gt|gte|lt|lte]=123`."""
    spec = params.get(field)
    if spec is None:
        return lambda _o: True
    if isinstance(spec, str):
        spec = {"eq": spec}
    if not isinstance(spec, dict):
        raise ApiError.invalid(f"Invalid {field}", param=field)
    bounds: dict[str, int] = {}
    for op in spec:
        if op not in ("eq", "gt", "gte", "lt", "lte"):
            raise ApiError.invalid(
                f"Received unknown parameter: {field}[{op}]", param=f"{field}[{op}]"
            )
        bounds[op] = get_int(spec, op, required=True) or 0
    checks = {
        "eq": lambda v, b: v == b,
        "gt": lambda v, b: v > b,
        "gte": lambda v, b: v >= b,
        "lt": lambda v, b: v < b,
        "lte": lambda v, b: v <= b,
    }
    return lambda o: all(checks[op](o[field], b) for op, b in bounds.items())


def _limit(params: dict[str, Any]) -> int:
    limit = get_int(params, "limit")
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError.invalid(
            "Invalid limit: must be between 1 and 100.", param="limit", code="parameter_invalid"
        )
    return limit


def list_object(items: list[dict[str, Any]], params: dict[str, Any], url: str) -> dict[str, Any]:
    """One page of `items` (already filtered, newest first) as Stripe's list object."""
    limit = _limit(params)
    after = get_str(params, "starting_after")
    before = get_str(params, "ending_before")
    ids = [o["id"] for o in items]
    if after:
        if after not in ids:
            raise ApiError.not_found("object", after, param="starting_after")
        rest = items[ids.index(after) + 1 :]
        page, has_more = rest[:limit], len(rest) > limit
    elif before:
        if before not in ids:
            raise ApiError.not_found("object", before, param="ending_before")
        head = items[: ids.index(before)]
        page, has_more = head[-limit:], len(head) > limit
    else:
        page, has_more = items[:limit], len(items) > limit
    return {"object": "list", "data": page, "has_more": has_more, "url": url}


# --- search ---------------------------------------------------------------------------------

_CLAUSE = re.compile(
    r"""\s*(?P<neg>-)?(?P<field>[a-z_]+)(?:\[(?P<q>['"])(?P<key>[^'"]+)(?P=q)\])?"""
    r"""\s*(?P<op>>=|<=|:|>|<)\s*"""
    r"""(?:(?P<vq>['"])(?P<str>[^'"]*)(?P=vq)|(?P<num>-?\d+)|(?P<null>null))\s*""",
)
_JOINER = re.compile(r"\s+(AND|OR)\s+")


def parse_query(query: str, fields: set[str]) -> Callable[[dict[str, Any]], bool]:
    """Compile a Stripe search query (the subset we speak) into a predicate."""
    parts = _JOINER.split(query.strip())
    clauses, joiners = parts[0::2], set(parts[1::2])
    if len(joiners) > 1:
        raise ApiError.invalid(
            "Search queries cannot mix AND and OR.", param="query", code="parameter_invalid"
        )
    predicates = [_clause(text, fields) for text in clauses]
    if joiners == {"OR"}:
        return lambda o: any(p(o) for p in predicates)
    return lambda o: all(p(o) for p in predicates)


def _clause(text: str, fields: set[str]) -> Callable[[dict[str, Any]], bool]:
    match = _CLAUSE.fullmatch(text)
    if not match:
        raise ApiError.invalid(
            f"Could not parse the search query near: {text!r}",
            param="query",
            code="parameter_invalid",
        )
    field, key, op = match["field"], match["key"], match["op"]
    if field not in fields or (key is not None) != (field == "metadata"):
        raise ApiError.invalid(f"Field {field!r} is not supported in this search.", param="query")
    wanted: Any = (
        None if match["null"] else int(match["num"]) if match["num"] is not None else match["str"]
    )
    negate = bool(match["neg"])

    def value_of(obj: dict[str, Any]) -> Any:
        return obj.get("metadata", {}).get(key) if key is not None else obj.get(field)

    def test(obj: dict[str, Any]) -> bool:
        value = value_of(obj)
        if op == ":":
            if isinstance(value, bool):
                result = str(value).lower() == str(wanted).lower()
            elif isinstance(value, int) and isinstance(wanted, int):
                result = value == wanted
            else:
                result = value == wanted if wanted is None else str(value) == str(wanted)
        else:
            if not isinstance(value, int) or not isinstance(wanted, int):
                return False
            result = {
                ">": value > wanted,
                "<": value < wanted,
                ">=": value >= wanted,
                "<=": value <= wanted,
            }[op]
        return result != negate

    return test


def search_object(
    items: list[dict[str, Any]], params: dict[str, Any], url: str, fields: set[str]
) -> dict[str, Any]:
    """Stripe's `search_result`: newest first, `page` is an opaque cursor (here: an offset)."""
    query = get_str(params, "query", required=True) or ""
    predicate = parse_query(query, fields)
    limit = _limit(params)
    page_token = get_str(params, "page")
    offset = 0
    if page_token:
        if not page_token.startswith("page_") or not page_token[5:].isdigit():
            raise ApiError.invalid("Invalid page token.", param="page")
        offset = int(page_token[5:])
    matched = [o for o in items if predicate(o)]
    page = matched[offset : offset + limit]
    has_more = len(matched) > offset + limit
    return {
        "object": "search_result",
        "data": page,
        "has_more": has_more,
        "next_page": f"page_{offset + limit}" if has_more else None,
        "url": url,
    }

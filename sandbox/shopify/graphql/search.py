"""Shopify's search syntax for the `query:` argument (shopify.dev "Shopify API search syntax"):
terms joined by AND (implicit) or OR, `field:value`, comparators `:>` `:>=` `:<` `:<=`, quoted
values, `-` or NOT to negate, and bare words matched against a resource's default fields."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from graphql import GraphQLError

TOKEN = re.compile(r"""(-?)(?:(\w+):(>=|<=|>|<)?)?("[^"]*"|'[^']*'|\S+)""")


@dataclass(frozen=True)
class Term:
    field: str | None  # None: a bare word, matched against the default fields
    comparator: str  # "=", ">", ">=", "<", "<="
    value: str
    negated: bool


def parse(query: str | None) -> list[list[Term]]:
    """Disjunctive form: a list of OR-groups, each a list of ANDed terms."""
    groups: list[list[Term]] = [[]]
    negate_next = False
    for match in TOKEN.finditer(query or ""):
        minus, field, comparator, raw = match.groups()
        if field is None and raw in ("AND", "OR", "NOT"):
            if raw == "OR":
                groups.append([])
            negate_next = raw == "NOT"
            continue
        value = raw[1:-1] if raw[:1] in "\"'" and raw[-1:] == raw[:1] and len(raw) > 1 else raw
        groups[-1].append(Term(field, comparator or "=", value, bool(minus) or negate_next))
        negate_next = False
    return [group for group in groups if group] or [[]]


def required_values(groups: list[list[Term]], field: str) -> set[str] | None:
    """The values `field` must equal for a resource to match, when every OR-group pins it
    (`inventory_item_id:1 OR inventory_item_id:2`); None when some group leaves it open. Lets a
    resolver look those resources up instead of testing every one."""
    wanted: set[str] = set()
    for group in groups:
        pins = [t for t in group if t.field == field and t.comparator == "=" and not t.negated]
        if not pins:
            return None
        wanted.add(pins[0].value)  # the other terms are checked on what is looked up
    return wanted


def matches(
    resource: Any,
    groups: list[list[Term]],
    fields: Mapping[str, Callable[[Any], Any]],
    default: Callable[[Any], list[str]],
) -> bool:
    return any(all(_term(resource, t, fields, default) for t in group) for group in groups)


def _term(
    resource: Any,
    term: Term,
    fields: Mapping[str, Callable[[Any], Any]],
    default: Callable[[Any], list[str]],
) -> bool:
    if term.field is None:
        needle = term.value.lower().rstrip("*")
        hit = any(needle in text.lower() for text in default(resource) if text)
    elif term.field in fields:
        hit = _compare(fields[term.field](resource), term)
    else:
        # Shopify ignores filters it does not know for the resource (and warns in the
        # response's `search` extension); the sandbox matches nothing instead, loudly safe.
        raise GraphQLError(f"Unsupported search field '{term.field}' in the sandbox")
    return hit != term.negated


def _compare(actual: Any, term: Term) -> bool:
    values = actual if isinstance(actual, list | tuple | set) else [actual]
    return any(_compare_one(v, term) for v in values if v is not None)


def _compare_one(actual: Any, term: Term) -> bool:
    if isinstance(actual, datetime):
        wanted: Any = parse_time(term.value)
    elif isinstance(actual, int) and not isinstance(actual, bool):
        wanted = int(term.value) if term.value.lstrip("-").isdigit() else None
        if wanted is None:
            return False
    else:
        actual, wanted = str(actual).lower(), term.value.lower()
        if term.comparator == "=" and wanted.endswith("*"):
            return actual.startswith(wanted[:-1])
    return {
        "=": actual == wanted,
        ">": actual > wanted,
        ">=": actual >= wanted,
        "<": actual < wanted,
        "<=": actual <= wanted,
    }[term.comparator]


def parse_time(value: str) -> datetime:
    """`2026-04-01`, `2026-04-01T10:00:00Z` or with an offset; naive means UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise GraphQLError(f"Invalid date in search query: '{value}'") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def stamp(value: str | None) -> datetime | None:
    return parse_time(value) if value else None

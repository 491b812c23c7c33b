"""Stripe's form encoding: bracket notation (`metadata[k]=v`, `types[]=card`, `types[0]=card`,
`options[card][x]=y`) into nested dicts and lists, plus typed readers that fail like Stripe."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from sandbox.stripe.errors import ApiError

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


def parse_form(raw: str) -> dict[str, Any]:
    """Decode an application/x-www-form-urlencoded body or query string into nested params."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        match = _KEY.match(key)
        if not match:
            raise ApiError.invalid(f"Invalid parameter name: {key}", param=key)
        parts = [match.group(1), *_PART.findall(match.group(2))]
        node = root
        for part in parts[:-1]:
            # `a[][b]` has no index to group by: each occurrence starts a new element.
            name = str(len(node)) if part == "" else part
            child = node.get(name)
            if not isinstance(child, dict):
                child = {}
                node[name] = child
            node = child
        last = parts[-1]
        node[str(len(node)) if last == "" else last] = value
    return _listify(root)


def _listify(node: Any) -> Any:
    """Dicts whose keys are all indexes become lists, ordered by index."""
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def check_known(params: dict[str, Any], allowed: set[str]) -> None:
    """Stripe rejects parameters it does not know; so do we (it catches adapter typos)."""
    for name in params:
        if name not in allowed:
            raise ApiError.invalid(
                f"Received unknown parameter: {name}", param=name, code="parameter_unknown"
            )


def get_str(params: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise ApiError.missing(name)
        return None
    if not isinstance(value, str):
        raise ApiError.invalid(f"Invalid string: {value!r}", param=name, code="parameter_invalid")
    return value


def get_int(
    params: dict[str, Any], name: str, *, required: bool = False, minimum: int | None = None
) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise ApiError.missing(name)
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ApiError.invalid(
            f"Invalid integer: {value}", param=name, code="parameter_invalid_integer"
        ) from None
    if minimum is not None and number < minimum:
        raise ApiError.invalid(
            f"This value must be greater than or equal to {minimum}.",
            param=name,
            code="parameter_invalid_integer",
        )
    return number


def get_bool(params: dict[str, Any], name: str, default: bool = False) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return default
    if value in ("true", "false"):
        return value == "true"
    raise ApiError.invalid(f"Invalid boolean: {value}", param=name, code="parameter_invalid")


def get_enum(
    params: dict[str, Any], name: str, choices: tuple[str, ...], default: str | None = None
) -> str | None:
    value = get_str(params, name)
    if value is None or value == "":
        return default
    if value not in choices:
        raise ApiError.invalid(
            f"Invalid {name}: must be one of {', '.join(choices)}",
            param=name,
            code="parameter_invalid",
        )
    return value


def get_list(params: dict[str, Any], name: str) -> list[Any] | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        # `expand=x` (no brackets) is accepted by Stripe as a one-element list.
        return [value] if value else []
    if not isinstance(value, list):
        raise ApiError.invalid(f"Invalid array: {name}", param=name, code="parameter_invalid")
    return value


def get_dict(params: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = params.get(name)
    if value is None:
        return None
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise ApiError.invalid(f"Invalid hash: {name}", param=name, code="parameter_invalid")
    return value


def merge_metadata(current: dict[str, str], update: dict[str, Any] | None) -> dict[str, str]:
    """Stripe merges metadata keys; an empty value deletes its key."""
    merged = dict(current)
    for key, value in (update or {}).items():
        if not isinstance(value, str):
            raise ApiError.invalid("Invalid metadata value", param=f"metadata[{key}]")
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged

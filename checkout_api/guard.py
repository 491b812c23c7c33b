"""Hostile input stops at the door, for every route (storefront, admin and webhooks alike): an
ASGI layer in front of Litestar that refuses, with a 4xx in our error shape, what would
otherwise reach PostgreSQL or a recursive parser and come back as a 500.

- the path and query string: percent-decoded, they must be UTF-8 without control characters
  (no id, handle or cursor of ours has one; PostgreSQL text cannot hold NUL at all);
- a body: at most MAX_BODY_BYTES, UTF-8 (RFC 8259 section 8.1), nested at most MAX_JSON_DEPTH
  deep, and no NUL in any JSON string or key (text and jsonb columns refuse it).

Other control characters inside JSON strings are the wire schema's business (schemas.py):
a Shopify product description legitimately carries newlines, an email never does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from core.errors import (
    DotshopError,
    InvalidCharacters,
    InvalidJson,
    InvalidRequest,
    RequestTooLarge,
)

# A checkout is three levels deep; Stripe and Shopify payloads stay well under 20. Deeper JSON
# only serves to exhaust a recursive decoder.
MAX_JSON_DEPTH = 32

# Request bodies larger than this are refused before parsing (a checkout is a few KiB).
MAX_BODY_BYTES = 64 * 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NUL = "\x00"


def _target_problem(scope: dict[str, Any]) -> DotshopError | None:
    """Why the path or query string is refused, or None."""
    # Some servers and test clients leave the query string on raw_path.
    raw_path = (scope.get("raw_path") or scope["path"].encode()).partition(b"?")[0]
    try:
        path = unquote_to_bytes(raw_path).decode()
        query = scope.get("query_string", b"").decode()
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        return InvalidCharacters("The URL is not valid UTF-8.")
    if _CONTROL.search(path):
        return InvalidCharacters("The URL path contains control characters.")
    for name, value in pairs:
        if _CONTROL.search(name) or _CONTROL.search(value):
            return InvalidCharacters("A query parameter contains control characters.", param=name)
    return None


def _depth_exceeds(text: str, limit: int) -> bool:
    """True when brackets outside strings nest deeper than `limit` (a linear scan: no parser
    recursion happens before the depth is known to be safe)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _nul_path(value: Any) -> str | None:
    """Where a NUL sits in decoded JSON (`lines.0.sku`), or None; iterative, depth is bounded."""
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:
        where, item = pending.pop()
        if isinstance(item, str):
            if _NUL in item:
                return where or "body"
        elif isinstance(item, dict):
            for key, child in item.items():
                inner = f"{where}.{key}".lstrip(".")
                if _NUL in key:
                    return inner
                pending.append((inner, child))
        elif isinstance(item, list):
            pending.extend((f"{where}.{i}".lstrip("."), child) for i, child in enumerate(item))
    return None


def _body_problem(body: bytes) -> DotshopError | None:
    """Why the body is refused, or None. A body that is not JSON at all passes: its route
    answers that (invalid_json, or a webhook's signature check)."""
    if not body:
        return None
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return InvalidJson("The request body is not valid UTF-8.")
    if _depth_exceeds(text, MAX_JSON_DEPTH):
        return InvalidJson(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.")
    if _NUL not in text and "\\u0000" not in text:
        return None
    try:
        decoded = json.loads(text)
    except ValueError:
        return InvalidJson("The request body is not valid JSON.") if _NUL in text else None
    where = _nul_path(decoded)
    if where is not None:
        return InvalidRequest(
            "The request is not valid.",
            errors=[{"key": where, "message": "NUL characters are not allowed"}],
        )
    return None


Receive = Callable[[], Any]


async def _read_body(receive: Receive) -> tuple[bytes, list[dict[str, Any]]] | None:
    """The whole body and the messages it came in; None when it exceeds MAX_BODY_BYTES."""
    chunks: list[bytes] = []
    messages: list[dict[str, Any]] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), messages


class InputGuard:
    """Wraps the Litestar app; what it refuses never reaches a handler."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = _target_problem(scope)
        if problem is not None:
            await _refuse(problem, send)
            return
        read = await _read_body(receive)
        if read is None:
            await _refuse(RequestTooLarge(), send)
            return
        body, messages = read
        problem = _body_problem(body)
        if problem is not None:
            await _refuse(problem, send)
            return
        replay = iter(messages)

        async def receive_again() -> dict[str, Any]:
            return next(replay, None) or await receive()

        await self.app(scope, receive_again, send)


async def _refuse(error: DotshopError, send: Any) -> None:
    body = json.dumps({"error": error.to_dict()}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.http_status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

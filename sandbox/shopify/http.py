"""Just enough HTTP for the stand-in: a parsed request, a JSON response, and a regex router.

Raw ASGI (rather than a framework) because fidelity lives in details a framework normalises
away: Shopify's `.json` path suffixes, `ids[]=` query arrays as the ShopifyAPI library sends
them, and response header names in Shopify's exact case (the library's `Limits` looks up
`X-Shopify-Shop-Api-Call-Limit` case-sensitively).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs


class ShopifyError(Exception):
    """An error answered as Shopify does: `{"errors": ...}` with an HTTP status."""

    def __init__(self, status: int, errors: Any) -> None:
        super().__init__(f"{status}: {errors}")
        self.status = status
        self.errors = errors


def not_found() -> ShopifyError:
    return ShopifyError(404, "Not Found")


def invalid(field_name: str, message: str) -> ShopifyError:
    return ShopifyError(422, {field_name: [message]})


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    base_url: str  # scheme://host[:port] as the client addressed us (for Link headers)

    @classmethod
    def from_scope(cls, scope: dict, body: bytes) -> Request:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host") or "{}:{}".format(*scope.get("server") or ("127.0.0.1", 80))
        return cls(
            method=scope["method"],
            path=scope["path"],
            query=parse_qs(scope.get("query_string", b"").decode("latin-1")),
            headers=headers,
            body=body,
            base_url=f"{scope.get('scheme', 'http')}://{host}",
        )

    def json(self) -> Any:
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise ShopifyError(400, "Bad Request: body is not valid JSON") from exc

    def param(self, name: str) -> str | None:
        values = self.query.get(name) or self.query.get(f"{name}[]")
        return values[-1] if values else None

    def id_list(self, name: str) -> list[int] | None:
        """`ids=1,2` (Shopify's documented form) or `ids[]=1&ids[]=2` (what the library sends)."""
        raw = self.query.get(name, []) + self.query.get(f"{name}[]", [])
        if not raw:
            return None
        try:
            return [int(part) for value in raw for part in value.split(",") if part.strip()]
        except ValueError as exc:
            raise ShopifyError(400, {name: "expected a comma-separated list of ids"}) from exc

    def int_param(self, name: str, default: int | None = None) -> int | None:
        value = self.param(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError as exc:
            raise ShopifyError(400, {name: "expected an integer"}) from exc


@dataclass
class Response:
    status: int = 200
    body: Any = None
    headers: list[tuple[str, str]] = field(default_factory=list)

    def encode(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode()


Handler = Callable[..., Response]


class Router:
    """Routes `METHOD path` by regex; named groups become keyword arguments (ints for `id`s)."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler, str]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        def group(m: re.Match[str]) -> str:
            name = m.group(1)
            return f"(?P<{name}>\\d+)" if name.endswith("id") else f"(?P<{name}>[^/]+)"

        regex = re.sub(
            r"\{(\w+)\}", group, re.escape(pattern).replace("\\{", "{").replace("\\}", "}")
        )
        self._routes.append((method, re.compile(f"^{regex}$"), handler, f"{method} {pattern}"))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, Any], str] | None:
        for route_method, regex, handler, name in self._routes:
            found = regex.match(path)
            if found and route_method == method:
                args = {
                    key: int(value) if key.endswith("id") else value
                    for key, value in found.groupdict().items()
                }
                return handler, args, name
        return None


async def send_response(send: Callable[[dict], Any], response: Response) -> None:
    body = response.encode()
    headers = [(b"Content-Type", b"application/json; charset=utf-8")]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    headers.append((b"Content-Length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

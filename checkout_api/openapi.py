"""Keep /schema honest about the answers every route can give: the input guard, the
idempotency-key hook, the admin bearer guard and a database outage apply across routes, so
they are documented here, once, rather than on each handler."""

from __future__ import annotations

from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
)

ERROR_BODY = Reference("#/components/schemas/ErrorBody")

# status -> what the cross-cutting layers answer with it, on every route.
EVERY_ROUTE = {
    "400": "invalid_characters / invalid_json / idempotency_key_missing / idempotency_key_invalid",
    "413": "request_too_large",
    "422": "invalid_request",
    "503": "database_unavailable (retry after Retry-After seconds)",
}
ADMIN_ROUTE = {"401": "unauthorized (a valid admin bearer token is required)"}
ROUTE_WITH_ID = {"404": "not_found"}


def _error(description: str, status: str) -> OpenAPIResponse:
    headers = None
    if status == "503":
        headers = {"Retry-After": OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING))}
    return OpenAPIResponse(
        description=description,
        headers=headers,
        content={"application/json": OpenAPIMediaType(schema=ERROR_BODY)},
    )


def _merge(theirs: str, ours: str) -> str:
    """`a / b` + `b / c` -> `a / b / c`: each error code named once."""
    parts = theirs.split(" / ")
    return " / ".join(parts + [part for part in ours.split(" / ") if part not in parts])


def _is_error_body(response: OpenAPIResponse) -> bool:
    media = (response.content or {}).get("application/json")
    return media is not None and media.schema == ERROR_BODY


def _operations(schema: OpenAPI) -> list[tuple[str, Operation]]:
    found = []
    for path, item in (schema.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(item, method)
            if operation is not None:
                found.append((path, operation))
    return found


def document_cross_cutting_answers(schema: OpenAPI) -> None:
    """Add the shared error answers to every operation (Litestar's own generic 400, which
    describes a body we never send, is replaced), and describe raw JSON bodies (handlers that
    replay stored idempotent responses return bytes) as JSON objects, not strings."""
    for path, operation in _operations(schema):
        answers = dict(EVERY_ROUTE)
        if path.startswith("/admin/"):
            answers.update(ADMIN_ROUTE)
        if "{" in path:
            answers.update(ROUTE_WITH_ID)
        responses = operation.responses or {}
        for status, description in answers.items():
            existing = responses.get(status)
            if existing is None or not _is_error_body(existing):
                responses[status] = _error(description, status)
            else:
                # A handler documented its own errors under this status: keep them, add ours.
                merged = _error(_merge(existing.description, description), status)
                existing.description, existing.headers = merged.description, merged.headers
        for response in responses.values():
            media = (response.content or {}).get("application/json")
            if isinstance(media, OpenAPIMediaType) and media.schema == Schema(
                type=OpenAPIType.STRING
            ):
                media.schema = Schema(type=OpenAPIType.OBJECT)
        operation.responses = responses

"""Bulk query operations (shopify.dev "Perform bulk operations with the GraphQL Admin API").

`bulkOperationRunQuery` takes a query whose connections are read whole (no `first` needed),
runs it in the background and writes JSONL: one line per node, nested connections' nodes on
lines of their own with `__parentId` set to their parent's id, written after the parent.
`currentBulkOperation` reports progress; `url` serves the file (null when nothing matched).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from graphql import GraphQLError, GraphQLSchema, execute, parse, validate

from sandbox.shopify.graphql.context import Context
from sandbox.shopify.graphql.gids import datetime_z, gid
from sandbox.shopify.store import ShopStore

FILES_PREFIX = "/_sandbox/bulk-operations/"


def _nodes(value: Any) -> list[dict[str, Any]] | None:
    """The nodes of a connection's result, or None when `value` is not a connection."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("edges"), list):
        return [edge["node"] for edge in value["edges"] if edge.get("node") is not None]
    if isinstance(value.get("nodes"), list):
        return list(value["nodes"])
    return None


def _split(value: dict[str, Any], children: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """`value` without its connections (however deep in nested objects), which are collected
    into `children`: their nodes become lines of their own."""
    inline: dict[str, Any] = {}
    for key, item in value.items():
        nodes = _nodes(item)
        if nodes is not None:
            children.append(nodes)
        elif isinstance(item, dict):
            inline[key] = _split(item, children)
        else:
            inline[key] = item
    return inline


def jsonl_lines(node: dict[str, Any], parent_id: str | None) -> Iterator[dict[str, Any]]:
    children: list[list[dict[str, Any]]] = []
    line = _split(node, children)
    if children and "id" not in line:
        raise GraphQLError(
            "The parent 'node' field for a nested connection must select the 'id' field."
        )
    if parent_id is not None:
        line["__parentId"] = parent_id
    yield line
    for nodes in children:
        for child in nodes:
            yield from jsonl_lines(child, line["id"])


class BulkOperations:
    def __init__(
        self, schema: GraphQLSchema, store: ShopStore, now: Callable[[], datetime]
    ) -> None:
        self.schema = schema
        self.store = store
        self.now = now
        self._lock = threading.Lock()
        self._operations: dict[int, dict[str, Any]] = {}
        self._files: dict[int, bytes] = {}
        self._current: int | None = None

    def reset(self) -> None:
        with self._lock:
            self._operations.clear()
            self._files.clear()
            self._current = None

    def current(self) -> dict[str, Any] | None:
        with self._lock:
            return dict(self._operations[self._current]) if self._current else None

    def file(self, operation_id: int) -> bytes | None:
        with self._lock:
            return self._files.get(operation_id)

    def start(self, query: str, ctx: Context) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        try:
            document = parse(query)
        except GraphQLError as error:
            return None, [
                {
                    "code": "INVALID",
                    "field": ["query"],
                    "message": f"Invalid bulk query: {error.message}",
                }
            ]
        problems = validate(self.schema, document)
        if problems:
            return None, [
                {
                    "code": "INVALID",
                    "field": ["query"],
                    "message": f"Invalid bulk query: {p.message}",
                }
                for p in problems
            ]
        operation_id = self.store.next_id("bulk_operation")
        operation = {
            "id": gid("BulkOperation", operation_id),
            "status": "CREATED",
            "type": "QUERY",
            "errorCode": None,
            "createdAt": datetime_z(self.now().isoformat()),
            "completedAt": None,
            "objectCount": 0,
            "rootObjectCount": 0,
            "fileSize": None,
            "url": None,
            "partialDataUrl": None,
            "query": query,
        }
        with self._lock:
            self._operations[operation_id] = operation
            self._current = operation_id
        worker = Context(self.store, ctx.version, ctx.base_url, bulk=self, in_bulk=True)
        threading.Thread(
            target=self._run, args=(operation_id, document, worker), daemon=True, name="bulk-op"
        ).start()
        return dict(operation), []

    def _update(self, operation_id: int, **changes: Any) -> None:
        with self._lock:
            if operation_id in self._operations:  # a reset may have forgotten it meanwhile
                self._operations[operation_id].update(changes)

    def _run(self, operation_id: int, document: Any, ctx: Context) -> None:
        self._update(operation_id, status="RUNNING")
        try:
            with self.store._lock:
                result = execute(self.schema, document, context_value=ctx)
            if result.errors:
                raise result.errors[0]
            roots = [n for value in (result.data or {}).values() for n in _nodes(value) or []]
            lines = [line for node in roots for line in jsonl_lines(node, None)]
        except Exception:
            self._update(operation_id, status="FAILED", errorCode="INTERNAL_SERVER_ERROR")
            return
        body = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
        with self._lock:
            if operation_id not in self._operations:
                return
            if lines:
                self._files[operation_id] = body
        self._update(
            operation_id,
            status="COMPLETED",
            completedAt=datetime_z(self.now().isoformat()),
            objectCount=len(lines),
            rootObjectCount=len(roots),
            fileSize=len(body) if lines else None,
            url=f"{ctx.base_url}{FILES_PREFIX}{operation_id}.jsonl" if lines else None,
        )


async def send_jsonl(send: Callable[[dict], Any], body: bytes | None) -> None:
    """Serve a result file as the storage bucket behind `url` does: no auth, JSONL or 404."""
    status, content = (200, body) if body is not None else (404, b"Not Found")
    headers = [
        (b"Content-Type", b"application/jsonl" if body is not None else b"text/plain"),
        (b"Content-Length", str(len(content)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})

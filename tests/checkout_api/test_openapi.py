"""The generated OpenAPI (served at /schema) documents every storefront route with its request
model, success model and error codes."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine

from checkout_api.app import create_app
from core.settings import Settings
from core.stripe_gateway import StripeGateway


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    settings = Settings(stripe_api_key="sk_test_x", database_url="postgresql+psycopg://x@/x")
    app = create_app(
        settings,
        create_engine("postgresql+psycopg://x@/x"),
        StripeGateway("sk_test_x", "http://127.0.0.1:1"),
    )
    return app.openapi_schema.to_schema()


def test_every_contract_route_is_documented(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    for path, method in [
        ("/v1/products", "get"),
        ("/v1/products/{handle}", "get"),
        ("/v1/checkouts", "post"),
        ("/v1/checkouts/{checkout_id}/cancel", "post"),
        ("/v1/orders/{order_id}", "get"),
        ("/webhooks/stripe", "post"),
        ("/webhooks/shopify", "post"),
        ("/admin/v1/orders/{order_id}", "get"),
        ("/admin/v1/orders/{order_id}/refunds", "post"),
        ("/admin/v1/outbox/{public_id}/retry", "post"),
    ]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing from /schema"


def test_checkout_documents_body_header_success_and_errors(schema: dict[str, Any]) -> None:
    op = schema["paths"]["/v1/checkouts"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "CheckoutCreate"
    )
    headers = [p for p in op["parameters"] if p["in"] == "header"]
    assert [h["name"] for h in headers] == ["Idempotency-Key"]
    assert set(op["responses"]) >= {"201", "400", "404", "409", "422", "502", "503"}
    created = op["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    assert created.endswith("CheckoutOut")
    components = schema["components"]["schemas"]
    line = components[next(k for k in components if k.endswith("CheckoutLine"))]
    assert line["properties"]["quantity"]["minimum"] == 1
    assert line["properties"]["quantity"]["maximum"] == 100
    checkout_out = components[created.rsplit("/", 1)[1]]
    assert {"id", "order_id", "status", "amount", "currency", "expires_at", "payment"} <= set(
        checkout_out["properties"]
    )


def test_every_operation_documents_the_cross_cutting_errors(schema: dict[str, Any]) -> None:
    """CONTRACT.md: hostile input is a 4xx with the error shape on any route, and a database
    outage is 503 database_unavailable with Retry-After: every operation says so."""
    for path, item in schema["paths"].items():
        for method, op in item.items():
            for status in ("400", "413", "422", "503"):
                response = op["responses"][status]
                body = response["content"]["application/json"]["schema"]
                assert body["$ref"].endswith("/ErrorBody"), (method, path, status)
            assert "Retry-After" in op["responses"]["503"]["headers"], (method, path)
            if path.startswith("/admin/"):
                assert "401" in op["responses"], (method, path)


def test_idempotency_key_is_documented_as_required(schema: dict[str, Any]) -> None:
    for path in (
        "/v1/checkouts",
        "/v1/checkouts/{checkout_id}/cancel",
        "/admin/v1/orders/{order_id}/refunds",
    ):
        (header,) = [p for p in schema["paths"][path]["post"]["parameters"] if p["in"] == "header"]
        assert header["name"] == "Idempotency-Key" and header["required"] is True, path
        assert header["schema"]["minLength"] == 16 and header["schema"]["maxLength"] == 255

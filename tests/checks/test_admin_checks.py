"""The admin routes of the checks (CONTRACT.md: `POST /admin/v1/checks/run` runs every check now
and returns the run with its violations; `GET /admin/v1/violations?status=open|resolved`), their
OpenAPI documentation, and the business gauges on /metrics (DESIGN.md "Observability": open
violations, money at stake)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, text

from checkout_api.app import create_app
from core import orders, payments
from core.db import transaction
from core.settings import Settings
from core.stripe_gateway import StripeGateway
from tests.checks.support import settings_fixture, shop_fixture  # noqa: F401
from tests.core.shopify_support import Shop, paid_order

TOKEN = "admin-token-for-checks-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(clean_engine: Engine, settings: Settings) -> Iterator[TestClient]:
    admin = settings.model_copy(update={"admin_token": SecretStr(TOKEN)})
    gateway = StripeGateway.from_settings(admin)
    with TestClient(create_app(admin, clean_engine, gateway)) as client:
        yield client


def test_run_now_and_list_violations_open_then_resolved(
    shop: Shop, clean_engine: Engine, client: TestClient
) -> None:
    assert client.post("/admin/v1/checks/run").status_code == 401
    assert client.get("/admin/v1/violations").status_code == 401

    order_id = paid_order(clean_engine, {"BTY-SERUM-30ML": 1})
    with transaction(clean_engine) as session:
        orders.flag(
            session,
            order_id,
            payments.PAYMENT_MISMATCH,
            {"received_amount": 1500, "received_currency": "eur"},
        )
    ran = client.post("/admin/v1/checks/run", headers=AUTH)
    assert ran.status_code == 200, ran.text
    body = ran.json()
    assert body["id"].startswith("run_") and body["status"] == "violations"
    assert body["results"]["order_flag"] == {"open": 1, "opened": 1, "resolved": 0}
    (violation,) = [v for v in body["violations"] if v["check"] == "order_flag"]
    assert violation["subject"] == f"{order_id}:payment_mismatch"
    assert (violation["amount"], violation["currency"]) == (1500, "eur")
    assert violation["evidence"]["order_id"] == order_id
    assert violation["id"].startswith("vio_") and violation["resolved_at"] is None
    assert {"first_seen", "last_seen"} <= set(violation)

    listed = client.get("/admin/v1/violations?status=open", headers=AUTH).json()["data"]
    assert violation["id"] in [v["id"] for v in listed]

    metrics = client.get("/metrics").text
    assert 'dotshop_violations_open{check="order_flag"} 1.0' in metrics
    assert 'dotshop_violation_amount_minor{check="order_flag",currency="eur"} 1500.0' in metrics

    with clean_engine.begin() as conn:
        conn.execute(text("UPDATE order_flag SET resolved_at = now()"))
    assert client.post("/admin/v1/checks/run", headers=AUTH).json()["status"] == "ok"
    open_now = client.get("/admin/v1/violations?status=open", headers=AUTH).json()["data"]
    assert violation["id"] not in [v["id"] for v in open_now]
    resolved = client.get("/admin/v1/violations?status=resolved", headers=AUTH).json()["data"]
    (done,) = [v for v in resolved if v["id"] == violation["id"]]
    assert done["resolved_at"] is not None

    metrics = client.get("/metrics").text
    assert 'dotshop_violations_open{check="order_flag"} 0.0' in metrics
    assert 'dotshop_violation_amount_minor{check="order_flag",currency="eur"} 0.0' in metrics

    bad = client.get("/admin/v1/violations?status=lost", headers=AUTH)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
    for query in ("limit=0", "limit=1001"):
        bad = client.get(f"/admin/v1/violations?{query}", headers=AUTH)
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "limit"
    unknown = client.get("/admin/v1/violations?starting_after=vio_nope", headers=AUTH)
    assert unknown.status_code == 404, unknown.text


def test_the_check_routes_are_documented(client: TestClient) -> None:
    schema = client.get("/schema/openapi.json").json()
    run = schema["paths"]["/admin/v1/checks/run"]["post"]
    assert run["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "CheckRunOut"
    )
    listing = schema["paths"]["/admin/v1/violations"]["get"]
    assert {p["name"] for p in listing["parameters"] if p["in"] == "query"} == {
        "status",
        "limit",
        "starting_after",
    }
    assert {"200", "401", "404", "422"} <= set(listing["responses"])
    components = schema["components"]["schemas"]
    out = components[next(k for k in components if k.endswith("ViolationOut"))]
    assert {"check", "subject", "amount", "currency", "first_seen", "evidence"} <= set(
        out["properties"]
    )

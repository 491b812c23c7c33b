"""Property-based: schemathesis reads /schema from a real `dotshop api` (real sandbox, real
database) and throws positive and negative requests at every documented route. CONTRACT.md:
hostile input is a 4xx with the error shape, never a 5xx; and /schema tells the truth: every
status and body that comes back is one the document describes.

Seeded and deterministic, so a failure reproduces; a few hundred cases per route."""

from __future__ import annotations

import pytest
import schemathesis

from tests.e2e.conftest import ADMIN_TOKEN, Stack
from tests.e2e.conftest import stack as stack  # the e2e stack fixture, reused

pytestmark = pytest.mark.slow

SEED = 20261126
CONFIG = {
    "seed": SEED,
    "generation": {
        "mode": "all",
        "max-examples": 100,
        "deterministic": True,
        "allow-x00": True,
        "database": "none",
    },
    # Checks that need server state (created resources, valid ids) do not apply to random data.
    "phases": {"stateful": {"enabled": False}},
    "checks": {
        "positive_data_acceptance": {"enabled": False},
        "use_after_free": {"enabled": False},
        "ensure_resource_availability": {"enabled": False},
    },
    # The admin routes are exercised past their bearer guard, not just refused at it.
    "headers": {"Authorization": f"Bearer {ADMIN_TOKEN}"},
}


@pytest.fixture(scope="module")
def api_schema(stack: Stack) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(CONFIG)
    return schemathesis.openapi.from_url(f"{stack.api['us']}/schema/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_every_route_answers_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate()

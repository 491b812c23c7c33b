"""Every knob of dotshop, read from the environment (and a running stack's stack.json).

Secrets are `SecretStr` so that printing or logging a Settings object never shows them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

# Regions we know how to run: currency and payment rules per region. Adding a region is a
# deliberate change here, so an unknown DOTSHOP_REGION fails at start-up.
REGIONS: dict[str, dict[str, Any]] = {
    "us": {"currency": "usd", "payment_method_types": ["card"], "require_sca": False},
    "eu": {"currency": "eur", "payment_method_types": ["card"], "require_sca": True},
}

STACK_FILE = "stack.json"


def home_dir() -> Path:
    """Where a local stack keeps its state (`.dotshop/` in the current folder by default)."""
    import os

    return Path(os.environ.get("DOTSHOP_HOME", ".dotshop")).resolve()


def read_stack_file(home: Path | None = None) -> dict[str, Any]:
    """The `stack.json` of a running `dotshop up`, or {} when there is none."""
    path = (home or home_dir()) / STACK_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _stack_defaults() -> dict[str, Any]:
    """Map stack.json onto setting names; the environment still wins over these."""
    stack = read_stack_file()
    if not stack:
        return {}
    out: dict[str, Any] = {}
    if url := stack.get("database_url"):
        out["database_url"] = url
    stripe = stack.get("stripe") or {}
    for src, dst in (
        ("api_base", "stripe_api_base"),
        ("api_key", "stripe_api_key"),
        ("webhook_secret", "stripe_webhook_secret"),
    ):
        if stripe.get(src):
            out[dst] = stripe[src]
    shopify = stack.get("shopify") or {}
    for src, dst in (
        ("site", "shopify_site"),
        ("access_token", "shopify_access_token"),
        ("api_secret", "shopify_api_secret"),
        ("location_id", "shopify_location_id"),
    ):
        if shopify.get(src):
            out[dst] = shopify[src]
    if stack.get("admin_token"):
        out["admin_token"] = stack["admin_token"]
    return out


class _StackFileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return _stack_defaults()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOTSHOP_", extra="ignore", populate_by_name=True)

    # Where to find PostgreSQL; unset means "start the embedded server under .dotshop/pg".
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")

    # Where this region reads what may be slightly stale (the catalog): its own database, a
    # replica of the primary. Unset: the database above. Writes always go to DATABASE_URL.
    read_database_url: str | None = None

    region: str = "us"
    primary_region: str = "us"
    # How old a mismatch must be before a check counts it (seconds).
    grace_seconds: int = Field(default=600, ge=0)
    # How long a checkout holds stock before the sweeper releases it (seconds).
    reservation_ttl: int = Field(default=900, ge=1)
    # How many units projection and Shopify may differ before it is drift.
    drift_tolerance: int = Field(default=0, ge=0)

    admin_token: SecretStr | None = None

    stripe_api_key: SecretStr | None = Field(default=None, validation_alias="STRIPE_API_KEY")
    stripe_api_base: str = Field(
        default="http://127.0.0.1:12111", validation_alias="STRIPE_API_BASE"
    )
    # A checkout waits at most this long for one Stripe call before answering 503.
    stripe_timeout: float = Field(default=10.0, gt=0)
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias="STRIPE_WEBHOOK_SECRET"
    )

    shopify_shop: str = Field(default="dotshop-demo.myshopify.com", validation_alias="SHOPIFY_SHOP")
    shopify_site: str = Field(
        # The version is core.shopify_gateway.API_VERSION (GraphQL Admin API, >= 2026-04).
        default="http://127.0.0.1:12112/admin/api/2026-10",
        validation_alias="SHOPIFY_SITE",
    )
    shopify_access_token: SecretStr | None = Field(
        default=None, validation_alias="SHOPIFY_ACCESS_TOKEN"
    )
    shopify_api_secret: SecretStr | None = Field(
        default=None, validation_alias="SHOPIFY_API_SECRET"
    )
    shopify_location_id: int = Field(default=1, validation_alias="SHOPIFY_LOCATION_ID")
    # The Shopify locations whose stock we sell online (comma-separated ids). Every read, sum
    # and acknowledgement of Shopify stock uses exactly these; unset means the configured one.
    selling_location_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)

    # Guards on every database connection (milliseconds; 0 disables one). A statement or a
    # lock wait that runs away fails fast instead of piling up connections, and a transaction
    # left idle (a bug, or a process stuck mid-call) cannot hold row locks for long.
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    db_lock_timeout_ms: int = Field(default=10_000, ge=0)
    db_idle_in_transaction_timeout_ms: int = Field(default=60_000, ge=0)

    # Requests one API worker process runs at once in its threads (the database and Stripe
    # calls are blocking); the rest wait in its event loop. Each worker is one core's worth of
    # Python: with anyio's default of 40, 32 checkouts per worker fought over its GIL and 64
    # database connections over two cores, and 64 clients got ~100 checkouts/s instead of ~180.
    api_threads: int = Field(default=8, ge=1)

    # Delivered outbox messages are kept this long for inspection, then pruned (hours).
    outbox_retention_hours: int = Field(default=7 * 24, ge=1)

    # Business alerts (checks.alerts). Each sink is off while its URL is unset; the log always
    # gets them. The webhook URL is a secret: hooks often carry their token in the URL.
    alertmanager_url: str | None = None  # e.g. http://alertmanager:9093
    alert_webhook_url: SecretStr | None = None
    # An open violation is sent again this often (seconds): Alertmanager resolves an alert that
    # is not re-sent, and a webhook consumer sees that it still holds.
    alert_renotify_seconds: int = Field(default=3600, ge=1)
    # How long one sink may take to accept a batch (seconds).
    alert_timeout: float = Field(default=5.0, gt=0)
    # Prefix of runbook links in alerts, e.g. https://github.com/acme/dotshop/blob/main/ ;
    # empty leaves them relative to the repository root.
    runbook_base_url: str = ""

    # How far back the first reconciliation pull (or one whose event cursor Stripe no longer
    # has) lists Stripe's objects, in days: Stripe keeps events listable for 30 days.
    reconcile_backfill_days: int = Field(default=30, ge=1)

    # The storefront's on-demand revalidation endpoint (a Next.js route handler calling
    # revalidatePath/revalidateTag) and its shared secret; unset = no revalidation calls.
    revalidate_url: str | None = None
    revalidate_secret: SecretStr | None = None

    # The operator console's local accounts (JSON name -> {"role", "password_hash"}, argon2; see
    # core.operators) and, when it signs in through OIDC instead, e-mail -> role.
    console_users: SecretStr | None = None
    console_oidc_roles: str | None = None

    log_level: str = "INFO"
    # Where a relay, sync, checks or console process serves its own /metrics (127.0.0.1:port);
    # unset = no endpoint. The API serves /metrics on its own port instead.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    # Mounts the benchmark's floor route (checkout_api/floor.py): `dotshop bench` only, never
    # in production.
    bench_floor: bool = False

    @field_validator("region", "primary_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if value not in REGIONS:
            raise ValueError(f"unknown region {value!r}; known: {', '.join(sorted(REGIONS))}")
        return value

    @field_validator("selling_location_ids", mode="before")
    @classmethod
    def _location_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            try:
                return [int(p) for p in parts]
            except ValueError:
                raise ValueError("a comma-separated list of Shopify location ids") from None
        return value

    @property
    def selling_locations(self) -> list[int]:
        """The Shopify locations that sell online: the setting, or the configured location."""
        return sorted(set(self.selling_location_ids)) or [self.shopify_location_id]

    @property
    def currency(self) -> str:
        return REGIONS[self.region]["currency"]

    @property
    def region_rules(self) -> dict[str, Any]:
        return REGIONS[self.region]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _StackFileSource(settings_cls))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests build their own `Settings(...)` instead)."""
    return Settings()

"""One root exception; each subclass has a stable `code`, its docstring as default message,
and the HTTP status it stands for (declared here, once, next to the code; checkout_api's
exception handler and the stored idempotent responses both read it)."""

from __future__ import annotations

from typing import Any


class DotshopError(Exception):
    """Something went wrong in dotshop."""

    code = "internal_error"
    http_status = 500

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        self.details = details
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class InvalidRequest(DotshopError):
    """The request is not valid."""

    code = "invalid_request"
    http_status = 422


class NotFound(DotshopError):
    """No such object."""

    code = "not_found"
    http_status = 404


class UnknownSku(NotFound):
    """One or more SKUs are not in the catalog."""

    code = "unknown_sku"
    http_status = 404


class InsufficientStock(DotshopError):
    """Not enough sellable stock for one or more SKUs."""

    code = "insufficient_stock"
    http_status = 409


class Conflict(DotshopError):
    """The object is not in a state that allows this."""

    code = "conflict"
    http_status = 409


class IdempotencyKeyMissing(DotshopError):
    """This request needs an Idempotency-Key header."""

    code = "idempotency_key_missing"
    http_status = 400


class IdempotencyKeyInvalid(DotshopError):
    """The Idempotency-Key header must be 16 to 255 printable ASCII characters (send a UUID v4)."""

    code = "idempotency_key_invalid"
    http_status = 400


class IdempotencyKeyReused(DotshopError):
    """This Idempotency-Key was used with a different request."""

    code = "idempotency_key_reused"
    http_status = 422


class IdempotencyKeyInUse(DotshopError):
    """A request with this Idempotency-Key is still in flight; retry later."""

    code = "idempotency_key_in_use"
    http_status = 409


class Unauthorized(DotshopError):
    """Missing or wrong credentials."""

    code = "unauthorized"
    http_status = 401


class InvalidSignature(DotshopError):
    """The webhook signature does not verify."""

    code = "invalid_signature"
    http_status = 400


class ProviderUnavailable(DotshopError):
    """A payment or catalog provider is unavailable; retry with the same Idempotency-Key."""

    code = "provider_unavailable"
    http_status = 503


class LedgerUnbalanced(DotshopError):
    """A ledger transaction must balance (debits = credits) per currency."""

    code = "ledger_unbalanced"
    http_status = 500


class DatabaseNotMigrated(DotshopError):
    """The database schema is not at the current migration; run `dotshop migrate`."""

    code = "database_not_migrated"
    http_status = 503


class CheckoutExpired(Conflict):
    """This checkout expired; start a new one."""

    code = "checkout_expired"
    http_status = 409


class RefundExceedsRemaining(Conflict):
    """The refund exceeds what remains refundable on this order."""

    code = "refund_exceeds_remaining"
    http_status = 409


class PaymentProviderError(DotshopError):
    """Stripe refused the request."""

    code = "payment_provider_error"
    http_status = 502


class InvalidJson(DotshopError):
    """The request body is not valid JSON."""

    code = "invalid_json"
    http_status = 400


class InvalidCharacters(DotshopError):
    """The URL contains characters that no resource of ours has (control characters, or
    bytes that are not UTF-8)."""

    code = "invalid_characters"
    http_status = 400


class RequestTooLarge(DotshopError):
    """The request body is too large."""

    code = "request_too_large"
    http_status = 413


class DatabaseUnavailable(DotshopError):
    """The database is unreachable; retry shortly (with the same Idempotency-Key for writes)."""

    code = "database_unavailable"
    http_status = 503


class AlertSinkUnavailable(DotshopError):
    """An alert sink (Alertmanager or the alert webhook) did not accept the alerts."""

    code = "alert_sink_unavailable"
    http_status = 502


class ShopifyRejected(DotshopError):
    """Shopify refused the request (a GraphQL error or user error that retrying cannot fix)."""

    code = "shopify_rejected"
    http_status = 502


class ShopifyThrottled(ProviderUnavailable):
    """Shopify's GraphQL cost budget stayed exhausted longer than we wait in one call."""

    code = "shopify_throttled"
    http_status = 503


class PortUnavailable(DotshopError):
    """A server could not listen on its address (taken by another process, or not allowed)."""

    code = "port_unavailable"


class Forbidden(DotshopError):
    """The operator is known, but their role does not allow this action."""

    code = "forbidden"
    http_status = 403

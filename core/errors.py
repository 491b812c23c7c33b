"""One root exception; each subclass has a stable `code` and its docstring as default message.

HTTP status is decided once, in checkout_api's exception handlers, from the class.
"""

from __future__ import annotations

from typing import Any


class DotshopError(Exception):
    """Something went wrong in dotshop."""

    code = "internal_error"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        self.details = details
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class InvalidRequest(DotshopError):
    """The request is not valid."""

    code = "invalid_request"


class NotFound(DotshopError):
    """No such object."""

    code = "not_found"


class UnknownSku(NotFound):
    """One or more SKUs are not in the catalog."""

    code = "unknown_sku"


class InsufficientStock(DotshopError):
    """Not enough sellable stock for one or more SKUs."""

    code = "insufficient_stock"


class Conflict(DotshopError):
    """The object is not in a state that allows this."""

    code = "conflict"


class IdempotencyKeyMissing(DotshopError):
    """This request needs an Idempotency-Key header."""

    code = "idempotency_key_missing"


class IdempotencyKeyInvalid(DotshopError):
    """The Idempotency-Key header must be 1 to 255 printable ASCII characters."""

    code = "idempotency_key_invalid"


class IdempotencyKeyReused(DotshopError):
    """This Idempotency-Key was used with a different request."""

    code = "idempotency_key_reused"


class IdempotencyKeyInUse(DotshopError):
    """A request with this Idempotency-Key is still in flight; retry later."""

    code = "idempotency_key_in_use"


class Unauthorized(DotshopError):
    """Missing or wrong credentials."""

    code = "unauthorized"


class InvalidSignature(DotshopError):
    """The webhook signature does not verify."""

    code = "invalid_signature"


class ProviderUnavailable(DotshopError):
    """A payment or catalog provider is unavailable; retry with the same Idempotency-Key."""

    code = "provider_unavailable"


class LedgerUnbalanced(DotshopError):
    """A ledger transaction must balance (debits = credits) per currency."""

    code = "ledger_unbalanced"


class DatabaseNotMigrated(DotshopError):
    """The database schema is not at the current migration; run `dotshop migrate`."""

    code = "database_not_migrated"

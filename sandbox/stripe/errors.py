"""Stripe-shaped API errors: `{"error": {"type", "code", "decline_code", "message", "param"}}`."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer. `stored` says whether the idempotency layer keeps it: Stripe saves the
    result only once an endpoint began executing, not for parameter validation failures."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        stored: bool = True,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.stored = stored
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        for name in ("code", "param", "decline_code"):
            value = getattr(self, name)
            if value is not None:
                error[name] = value
        if self.code:
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        error.update(self.extra)
        return {"error": error}

    # Constructors for the kinds Stripe answers with.
    @classmethod
    def invalid(
        cls, message: str, *, param: str | None = None, code: str | None = None
    ) -> ApiError:
        """A parameter failed validation: 400, not stored for idempotency."""
        return cls(400, "invalid_request_error", message, param=param, code=code, stored=False)

    @classmethod
    def missing(cls, param: str) -> ApiError:
        return cls.invalid(
            f"Missing required param: {param}.", param=param, code="parameter_missing"
        )

    @classmethod
    def state(
        cls, message: str, *, code: str | None = None, param: str | None = None, **extra: Any
    ) -> ApiError:
        """The request was valid but the object's state forbids it: 400, stored."""
        return cls(400, "invalid_request_error", message, code=code, param=param, extra=extra)

    @classmethod
    def not_found(cls, kind: str, obj_id: str, *, param: str | None = "id") -> ApiError:
        return cls(
            404,
            "invalid_request_error",
            f"No such {kind}: '{obj_id}'",
            code="resource_missing",
            param=param,
            stored=False,
        )

"""Wire shapes (msgspec Structs). ORM rows never cross the API; these are what clients see and
what the generated OpenAPI at /schema documents."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

# A single line may not ask for more than this many units: a premium store sells few of each,
# and the bound keeps arithmetic far away from integer limits.
MAX_LINE_QUANTITY = 100
MAX_LINES = 50

# Text a person typed: no control characters (they only ever come from bugs or attacks, and
# would travel on to Stripe, Shopify and the console). Email also excludes whitespace.
_TEXT = r"^[^\x00-\x1f\x7f]*$"
_EMAIL_PART = r"[^@\s\x00-\x1f\x7f]+"

Sku = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_TEXT)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=MAX_LINE_QUANTITY)]
Email = Annotated[
    str,
    msgspec.Meta(
        min_length=3,
        max_length=320,
        pattern=rf"^{_EMAIL_PART}@{_EMAIL_PART}\.{_EMAIL_PART}$",
    ),
]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=_TEXT)]
OptionalText = Annotated[str, msgspec.Meta(max_length=200, pattern=_TEXT)]
Country = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")]


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


class VariantOut(msgspec.Struct):
    sku: str
    title: str
    price: int
    currency: str
    available: int


class ProductOut(msgspec.Struct):
    handle: str
    title: str
    category: str | None
    description: str | None
    image_url: str | None
    variants: list[VariantOut]


class ProductPage(msgspec.Struct):
    data: list[ProductOut]
    has_more: bool
    next_cursor: str | None


class CheckoutLine(msgspec.Struct, forbid_unknown_fields=True):
    sku: Sku
    quantity: Quantity


class ShippingAddress(msgspec.Struct, forbid_unknown_fields=True):
    name: ShortText
    line1: ShortText
    city: ShortText
    postal_code: Annotated[str, msgspec.Meta(min_length=1, max_length=20, pattern=_TEXT)]
    country: Country
    line2: OptionalText | None = None
    state: OptionalText | None = None


class CheckoutCreate(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    lines: Annotated[list[CheckoutLine], msgspec.Meta(min_length=1, max_length=MAX_LINES)]
    shipping_address: ShippingAddress


class PaymentOut(msgspec.Struct):
    provider: str
    payment_intent_id: str | None
    client_secret: str | None


class CheckoutOut(msgspec.Struct):
    id: str
    order_id: str
    status: str
    amount: int
    currency: str
    expires_at: str
    payment: PaymentOut
    lines: list[CheckoutLine]


class TimelineEntry(msgspec.Struct):
    at: str
    kind: str
    data: dict[str, Any]


class OrderOut(msgspec.Struct):
    id: str
    checkout_id: str
    status: str
    cancel_reason: str | None
    amount: int
    refunded: int
    currency: str
    region: str
    payment_intent_id: str | None
    lines: list[CheckoutLine]
    timeline: list[TimelineEntry]
    created_at: str


class RefundCreate(msgspec.Struct, forbid_unknown_fields=True):
    amount: Annotated[int, msgspec.Meta(ge=1)] | None = None
    reason: OptionalText | None = None

"""Stripe's test payment methods and what each one does when charged."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decline:
    code: str
    decline_code: str
    message: str


@dataclass(frozen=True)
class TestCard:
    brand: str
    last4: str
    funding: str = "credit"
    country: str = "US"
    decline: Decline | None = None
    # Stripe's 3DS-required cards always ask for authentication, whatever the request says.
    requires_authentication: bool = False
    # Succeeds, then the card network opens a dispute with this reason.
    dispute_reason: str | None = None
    # The dispute opens as an inquiry (`warning_needs_response`): no funds withdrawn yet.
    inquiry: bool = False
    # Refunds start `succeeded` and fail some time later (`refund.failed`), like Stripe's
    # pm_card_refundFail.
    refund_fails: bool = False


_GENERIC = Decline("card_declined", "generic_decline", "Your card was declined.")

TEST_CARDS: dict[str, TestCard] = {
    "pm_card_visa": TestCard("visa", "4242"),
    "pm_card_visa_debit": TestCard("visa", "5556", funding="debit"),
    "pm_card_mastercard": TestCard("mastercard", "4444"),
    "pm_card_amex": TestCard("amex", "8431"),
    "pm_card_fr": TestCard("visa", "0003", country="FR"),
    "pm_card_de": TestCard("visa", "0016", country="DE"),
    "pm_card_chargeDeclined": TestCard("visa", "0002", decline=_GENERIC),
    "pm_card_chargeDeclinedInsufficientFunds": TestCard(
        "visa",
        "9995",
        decline=Decline("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    ),
    "pm_card_chargeDeclinedLostCard": TestCard(
        "visa", "9987", decline=Decline("card_declined", "lost_card", "Your card was declined.")
    ),
    "pm_card_chargeDeclinedStolenCard": TestCard(
        "visa", "9979", decline=Decline("card_declined", "stolen_card", "Your card was declined.")
    ),
    "pm_card_chargeDeclinedFraudulent": TestCard(
        "visa", "0019", decline=Decline("card_declined", "fraudulent", "Your card was declined.")
    ),
    "pm_card_chargeDeclinedExpiredCard": TestCard(
        "visa", "0069", decline=Decline("expired_card", "expired_card", "Your card has expired.")
    ),
    "pm_card_chargeDeclinedIncorrectCvc": TestCard(
        "visa",
        "0127",
        decline=Decline(
            "incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."
        ),
    ),
    "pm_card_chargeDeclinedProcessingError": TestCard(
        "visa",
        "0119",
        decline=Decline(
            "processing_error",
            "processing_error",
            "An error occurred while processing your card. Try again in a little bit.",
        ),
    ),
    "pm_card_authenticationRequired": TestCard("visa", "3184", requires_authentication=True),
    "pm_card_threeDSecure2Required": TestCard("visa", "3220", requires_authentication=True),
    "pm_card_createDispute": TestCard("visa", "0259", dispute_reason="fraudulent"),
    "pm_card_createDisputeProductNotReceived": TestCard(
        "visa", "2685", dispute_reason="product_not_received"
    ),
    "pm_card_createDisputeInquiry": TestCard(
        "visa", "1976", dispute_reason="fraudulent", inquiry=True
    ),
    "pm_card_refundFail": TestCard("visa", "5126", refund_fails=True),
}

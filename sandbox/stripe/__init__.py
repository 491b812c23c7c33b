"""A faithful local Stripe stand-in that the real `stripe` SDK talks to (see DESIGN.md)."""

from sandbox.stripe.app import create_app

__all__ = ["create_app"]

"""Invariant checks: each check looks at the database (and, through the gateways, at Stripe and
Shopify) and returns the broken invariants it finds; the runner stores them as violations and
the alert sinks tell on-call. Business rules stay in core; checks only look."""

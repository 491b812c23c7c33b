"""The completer: drives idempotency keys stranded between phases to their end (rocket-rides-
atomic's `completer` process).

A key is stranded when its request died between two phases (a killed API process leaves it
locked) or failed there (a Stripe outage answered 503 and unlocked it) and its client never came
back. Once nobody has run it for the lock timeout (`idempotency.lock_timeout_for`: a live
request can hold its key no longer than that), the completer takes the key's lock the way
`begin` takes over a dead request's lock, and runs the remaining steps, the very ones a client
retry would run:

- a key at `started` has nothing committed: it is only unlocked;
- a checkout key at `order_created` (order created, stock held, the PaymentIntent maybe made)
  is **finished**: the PaymentIntent is created, or found again, under Stripe idempotency key
  `dotshop-pi-<order id>`, recorded on the order, and the 201 stored. A client coming back with
  that key gets that 201 replayed byte for byte and can still pay.

Why finish rather than cancel: the completer cannot tell an abandoned client from one still
retrying with backoff, and finishing is the answer that client would have got, so a completer
racing a retry changes nothing for it. The stranded checkout then holds its stock exactly as
long as any unpaid checkout (the reservation TTL), and no longer: the sweeper expires the hold,
cancels the order and cancels the PaymentIntent, which is now recorded on the order, so none
outlives the TTL. Cancelling instead would free the stock a few minutes sooner but turn a
retrying client's checkout into an error, and would need the same Stripe call anyway to learn
which PaymentIntent to cancel (Stripe has no lookup by idempotency key). When Stripe refuses
the PaymentIntent, or the hold expired first, the same steps store that final answer (502, or
409 `checkout_expired` with the PaymentIntent cancelled) and release the hold.

Several completers may run at once: each claims one key at a time with SKIP LOCKED and a fresh
lock, and every phase commits only while the key still carries that lock.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine

from core import checkout, idempotency
from core.logs import get_logger
from core.settings import Settings, get_settings
from core.stripe_gateway import StripeGateway

log = get_logger("core.completer")

# Keys handled per pass: bounds a pass while Stripe is slow; the next pass takes the rest.
COMPLETER_BATCH = 100
# How often the completer looks. A key is only stranded after the lock timeout (tens of
# seconds), so a few more seconds cost nothing.
COMPLETER_INTERVAL_SECONDS = 5.0


def run_once(
    engine: Engine, gateway: StripeGateway, settings: Settings, now: datetime | None = None
) -> int:
    """One pass: how many stranded keys it completed (finished, or unlocked at `started`).

    A key whose steps fail (Stripe unreachable) is unlocked with `last_run_at` = now, so it is
    tried again one lock timeout later and not twice in one pass."""
    now = now or datetime.now(UTC)
    stalled_before = now - idempotency.lock_timeout_for(settings)
    done = idempotency.unlock_stalled_started(
        engine, stalled_before=stalled_before, limit=COMPLETER_BATCH
    )
    steps = checkout.resume_steps(engine, gateway)
    for _ in range(COMPLETER_BATCH):
        key = idempotency.claim_stalled(
            engine,
            scope=checkout.CHECKOUT_SCOPE,
            point=checkout.ORDER_CREATED,
            stalled_before=stalled_before,
            now=now,
        )
        if key is None:
            break
        try:
            stored = idempotency.run(engine, key, steps)
        except Exception:  # unlocked by run; the next pass after the lock timeout retries it
            log.exception("stranded_key_failed", key_id=key.id, order_id=key.state["order_id"])
            continue
        log.info(
            "stranded_key_completed",
            key_id=key.id,
            order_id=key.state["order_id"],
            status=stored.status,
        )
        done += 1
    return done


def run_from_settings(engine: Engine) -> int:
    """The relay process's periodic job: one pass with the process's settings and Stripe."""
    settings = get_settings()
    return run_once(engine, StripeGateway.from_settings(settings), settings)

"""The transactional outbox: side effects leave as rows written in the caller's transaction.

A state change and the message that drives its side effect commit together or not at all; the
relay (core/relay.py) delivers messages after commit, in id order per `ordering_key` (per SKU
for inventory, per order for order pushes), with retries and a dead letter.

Order is id order. Producers of one ordering key must serialise on the entity they change (the
stock or order row they UPDATE before enqueueing, as every state change does), so that id
order is also commit order within a key.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from core.errors import DotshopError
from core.ids import new_id
from core.models import OutboxMessage

# Retries: exponential backoff with jitter. A first retry after ~2 s rides out a blip; doubling
# up to a 30 min cap rides out a provider outage of roughly half an hour over 10 attempts
# (~25 min in total) without hammering it; past that a human should look, so the message goes
# to the dead letter and alerts.
MAX_ATTEMPTS = 10
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 30 * 60.0
# Each delay is scaled by a random factor in this range so that messages failed by one outage
# do not all come back in the same instant (and never wait longer than the cap).
JITTER_RANGE = (0.5, 1.0)

# The longest error text kept on the row (the full traceback goes to the log).
LAST_ERROR_MAX_CHARS = 2000


class PermanentError(DotshopError):
    """The outbox message can never be delivered as it is; it goes to the dead letter at once."""

    code = "outbox_permanent_error"


@dataclass(frozen=True)
class Message:
    """What a handler gets. `attempts` counts earlier delivery attempts (0 on the first)."""

    id: int
    public_id: str
    topic: str
    ordering_key: str
    payload: dict[str, Any]
    attempts: int


Handler = Callable[[Message], None]


class Handlers(dict[str, Handler]):
    """Handlers by topic. A handler returns to acknowledge and raises to fail (PermanentError:
    dead-letter now; anything else: retry with backoff). Handlers must be idempotent: delivery
    is at least once."""

    def register(self, topic: str, fn: Handler) -> Handler:
        """Add the handler of `topic` (one per topic); returns it, so it works as a decorator
        helper: `handlers.register("shopify.push_order", push_order)`."""
        if topic in self:
            raise ValueError(f"a handler for {topic!r} is already registered")
        self[topic] = fn
        return fn


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry and when to give up; tests inject small numbers."""

    max_attempts: int = MAX_ATTEMPTS
    base_seconds: float = BACKOFF_BASE_SECONDS
    cap_seconds: float = BACKOFF_CAP_SECONDS

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Seconds to wait after a failed attempt, `attempts` being the attempts made before
        it: min(cap, base * 2**attempts) * jitter."""
        return min(self.cap_seconds, self.base_seconds * 2**attempts) * rng.uniform(*JITTER_RANGE)


def enqueue(session: Session, *, topic: str, ordering_key: str, payload: dict[str, Any]) -> str:
    """Write a message in the caller's transaction; returns its public id (`obx_...`).
    It is delivered only if and after that transaction commits."""
    if not topic or not ordering_key:
        raise ValueError("an outbox message needs a topic and an ordering key")
    public_id = new_id("obx")
    session.execute(
        insert(OutboxMessage).values(
            public_id=public_id, topic=topic, ordering_key=ordering_key, payload=payload
        )
    )
    return public_id

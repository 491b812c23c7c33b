"""Read side of the console's Outbox page: per-topic counts of what is not delivered yet (or
never will be), and keyset-paged lists of messages by state. Acting on a dead letter is
core.relay.retry_dead / discard_dead; this module only reads.

States an operator sees: `pending` (waiting or in flight, failed attempts included), `failing`
(pending with at least one failed attempt: attempts > 0 and a last_error), `dead` (given up,
blocking its key until an operator acts) and `discarded` (given up for good by an operator).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session

from core.errors import InvalidRequest, NotFound
from core.models import OutboxMessage
from core.relay import OutboxView

PENDING, FAILING, DEAD, DISCARDED = "pending", "failing", "dead", "discarded"
STATES = (PENDING, FAILING, DEAD, DISCARDED)
MAX_PAGE = 1000
# Ordering keys are ours (`order:ord_...`, `sku:<SKU>`): longer prefixes are typos.
MAX_KEY_PREFIX_CHARS = 255


@dataclass(frozen=True)
class TopicSummary:
    """One topic's undelivered messages: pending (failing ones included), failing, dead and
    discarded counts, and the age in seconds of its oldest pending message (0 when none)."""

    topic: str
    pending: int
    failing: int
    dead: int
    discarded: int
    oldest_pending_age_seconds: float


SUMMARY_SQL = text(
    """
-- outbox_summary --
-- Per topic, every message not delivered: pending (of which failing: attempted and failed at
-- least once), dead, discarded, and the oldest pending message's age. Sent messages are not
-- read (they are most of the table until pruned); pending and dead ones are the rows of the
-- partial index ix_outbox_pending, discarded ones are rare.
SELECT topic,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'pending' AND attempts > 0 AND last_error IS NOT NULL)
           AS failing,
       count(*) FILTER (WHERE status = 'dead') AS dead,
       count(*) FILTER (WHERE status = 'discarded') AS discarded,
       coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending')), 0)
           AS oldest_pending_age_seconds
  FROM outbox
 WHERE status IN ('pending', 'dead', 'discarded')
 GROUP BY topic
 ORDER BY topic
"""
)


def summary(session: Session) -> list[TopicSummary]:
    """Every topic with a message that is not delivered, in topic order."""
    return [
        TopicSummary(
            topic=r.topic,
            pending=int(r.pending),
            failing=int(r.failing),
            dead=int(r.dead),
            discarded=int(r.discarded),
            oldest_pending_age_seconds=max(0.0, float(r.oldest_pending_age_seconds)),
        )
        for r in session.execute(SUMMARY_SQL)
    ]


def _in_state(stmt: Select, state: str) -> Select:
    m = OutboxMessage
    if state == FAILING:
        return stmt.where(m.status == PENDING, m.attempts > 0, m.last_error.is_not(None))
    return stmt.where(m.status == state)


def _escape_like(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def messages(
    session: Session,
    *,
    status: str,
    topic: str | None = None,
    key_prefix: str | None = None,
    limit: int = 100,
    starting_after: str | None = None,
) -> tuple[list[OutboxView], bool]:
    """Messages in one state (`pending`, `failing`, `dead` or `discarded`), oldest first (for
    dead letters: those blocking their key longest), optionally of one topic and with an
    ordering key starting with `key_prefix`; and whether more follow (pass the last message's
    id, `obx_...`, as `starting_after`). InvalidRequest for an unknown state or a limit out of
    range; NotFound when `starting_after` names no message."""
    if status not in STATES:
        raise InvalidRequest(f"status must be one of {', '.join(STATES)}", param="status")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit is between 1 and {MAX_PAGE}", param="limit")
    if key_prefix is not None and len(key_prefix) > MAX_KEY_PREFIX_CHARS:
        raise InvalidRequest("key_prefix is too long", param="key_prefix")
    m = OutboxMessage
    # outbox_messages: one state's messages in id order (the relay's order), keyset on id;
    # pending and dead ones come from the partial index ix_outbox_pending.
    stmt = _in_state(
        select(
            m.public_id.label("id"),
            m.topic,
            m.ordering_key,
            m.status,
            m.attempts,
            m.last_error,
            m.created_at,
            m.next_attempt_at,
            m.sent_at,
            m.dead_at,
            m.discarded_at,
        ),
        status,
    )
    if topic is not None:
        stmt = stmt.where(m.topic == topic)
    if key_prefix:
        stmt = stmt.where(m.ordering_key.like(f"{_escape_like(key_prefix)}%", escape="\\"))
    if starting_after is not None:
        after = session.scalar(select(m.id).where(m.public_id == starting_after))
        if after is None:
            raise NotFound("no such outbox message", starting_after=starting_after)
        stmt = stmt.where(m.id > after)
    rows = session.execute(stmt.order_by(m.id).limit(limit + 1)).all()
    return [OutboxView(**row._mapping) for row in rows[:limit]], len(rows) > limit

"""What an operator may do from the console, each authorized by role before it acts, in the
caller's transaction, and audit-logged under the operator's name by the function it calls."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core import relay, violations
from core.operators import Operator, authorize


def retry_message(
    session: Session, operator: Operator, public_id: str, reason: str | None = None
) -> bool:
    """A dead letter back to pending (core.relay.retry_dead); False when it is not dead."""
    authorize(operator, "outbox.retry")
    return relay.retry_dead(session, public_id, actor=operator.name, reason=reason)


def discard_message(session: Session, operator: Operator, public_id: str, reason: str) -> bool:
    """A dead letter given up for good (core.relay.discard_dead); a reason is required."""
    authorize(operator, "outbox.discard")
    return relay.discard_dead(session, public_id, actor=operator.name, reason=reason)


def acknowledge_violation(session: Session, operator: Operator, violation_id: str) -> bool:
    """Take an open violation (core.violations.acknowledge)."""
    authorize(operator, "violation.acknowledge")
    return violations.acknowledge(session, violation_id, actor=operator.name)

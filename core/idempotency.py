"""Idempotency keys with atomic phases and recovery points (the "rocket rides atomic" pattern).

A mutating request is a chain of named recovery points (`started` -> ... -> `finished`). Each
step runs in one database transaction (an *atomic phase*) that also moves the key to its next
recovery point, so a crash anywhere leaves the key at the last committed point and a retry with
the same Idempotency-Key resumes there. Calls to providers (Stripe) happen *between* phases,
outside any transaction, and carry an idempotency key derived from our ids, so a crash between
the call and the phase recording its result is harmless: the retried call returns the same
object instead of making a second one.

    begun = begin(engine, scope="storefront:POST /v1/checkouts", key=hdr,
                  path="/v1/checkouts", body=body, lock_timeout=lock_timeout_for(settings))
    if isinstance(begun, Answer):
        return begun                             # replayed byte for byte (begun.replayed)
    answer = run(engine, begun, {"started": create_order,
                                 "order_created": External(call=create_pi, record=save_pi),
                                 "payment_created": respond})

A step returns `RecoveryPoint(name, state)` (commit and go on), or `Response(status, body)`
(store the final answer, finish, unlock). A step that raises rolls its phase back and unlocks
the key: raising means "retry may succeed"; a final business answer (409 insufficient stock)
is a `Response`, so it is stored and replayed like a success (`final_errors` turns the
business errors a step raises into such answers).

Hot paths may write a phase as ONE self-fencing statement (`OneStatement`, or an External's
`record_in_one`), run in autocommit: one round trip instead of BEGIN, lock, work, key update and
COMMIT. `begin` is one round trip too for a new key and for a replay.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Generic, TypeVar

import msgspec
from sqlalchemy import Connection, Engine, delete, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from core.db import autocommit
from core.errors import (
    Conflict,
    DotshopError,
    IdempotencyKeyInUse,
    IdempotencyKeyInvalid,
    IdempotencyKeyReused,
    NotFound,
)
from core.ids import new_id
from core.models import IdempotencyKey
from core.settings import Settings
from core.stripe_gateway import STRIPE_NETWORK_RETRIES

STARTED = "started"
FINISHED = "finished"

# A lock older than this belongs to a process that died mid-request (a live request refreshes
# nothing, so this must exceed the slowest legitimate request: stripe-python's own request
# timeout is 80 s, plus our phases). After it, a retry may take the key over and resume.
# Callers that bound their provider calls more tightly pass their own (`lock_timeout_for`).
LOCK_TIMEOUT = timedelta(seconds=90)

# Keys live 24 h, like Stripe's: long enough for any client retry loop, short enough that the
# table stays small. After it the same key string starts a brand-new request.
KEY_TTL = timedelta(hours=24)

# What a client may send as Idempotency-Key: 16-255 printable ASCII characters. A key is also
# the capability to replay a stored checkout (with its client secret), so a short, guessable one
# would let a stranger read someone else's; clients should send a UUID v4. The column's CHECK
# allows 255; control characters and non-ASCII only ever come from bugs or attacks.
KEY_MIN_LENGTH = 16
_KEY_PATTERN = re.compile(rf"[\x20-\x7e]{{{KEY_MIN_LENGTH},255}}")

# Phases and begin() run at READ COMMITTED with the key row locked FOR UPDATE by default: the
# row lock serialises everything done under one key, and the domain's own writes (conditional
# UPDATEs) are safe at that level. A step may ask for SERIALIZABLE; `run` retries those phases
# on serialization failures.
READ_COMMITTED = "READ COMMITTED"
SERIALIZABLE = "SERIALIZABLE"

# How many times a phase (or begin) is retried after a serialization failure or deadlock
# before the error reaches the caller (who answers 5xx and lets the client retry).
SERIALIZATION_RETRIES = 5

_table = IdempotencyKey.__table__


# ------------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class Answer:
    """What the request answers: the key's final response (status and body, stored byte for
    byte) and whether this is a replay of it."""

    status: int
    body: bytes
    replayed: bool = False


@dataclass
class KeyRecord:
    """A key locked for this request. `locked_at` is our lock token: a phase only commits while
    the row still carries it, so a request whose lock was taken over cannot write any more."""

    id: str
    scope: str
    key: str
    recovery_point: str
    state: dict[str, Any]
    locked_at: datetime | None
    response: Answer | None = None


Begun = Answer | KeyRecord


@dataclass(frozen=True)
class RecoveryPoint:
    """Commit the phase and move the key to `name`; `state` is merged into the key's state."""

    name: str
    state: dict[str, Any] | None = None


@dataclass(frozen=True)
class Response:
    """Commit the phase, store this as the final response and unlock the key."""

    status: int
    body: bytes


@dataclass(frozen=True)
class NoOp:
    """Commit the phase's own writes; the key's recovery point stays where it is."""


Outcome = RecoveryPoint | Response | NoOp

T = TypeVar("T")


@dataclass(frozen=True)
class External(Generic[T]):
    """A step that calls a provider outside any transaction, then records what it got.

    `call(key)` must be idempotent by itself (e.g. Stripe with `provider_key("pi", order_id)`):
    if we crash after it but before `record` commits, the retry calls it again and gets the
    same object back. `record(session, key, result)` runs in an atomic phase.
    """

    call: Callable[[KeyRecord], T]
    record: Callable[[Session, KeyRecord, T], Outcome]
    # Tried first when given: `record` as ONE statement that fences itself like a `OneStatement`
    # does. It returns None when it does not apply (it then wrote nothing) and `record` runs.
    record_in_one: Callable[[Connection, KeyRecord, T], Outcome | None] | None = None


@dataclass(frozen=True)
class OneStatement:
    """A step that is a whole atomic phase in ONE statement (or one server-side function), run
    in autocommit: one round trip instead of BEGIN, lock, work, key update and COMMIT.

    `run(conn, key)` must fence itself as a phase does: write only while the key row still
    carries `key.locked_at` at `key.recovery_point` (locked FOR UPDATE), and move the key in the
    same statement. It returns the outcome it committed, or None when the key was no longer
    this request's (then it wrote nothing)."""

    run: Callable[[Connection, KeyRecord], Outcome | None]


Step = Callable[[Session, KeyRecord], Outcome] | External[Any] | OneStatement


class PhaseSession(Session):
    """The Session of an atomic phase. Set `outcome` before the `with` block ends."""

    outcome: Outcome = NoOp()


# ------------------------------------------------------------------------------------ helpers


def _utcnow() -> datetime:
    return datetime.now(UTC)


def provider_key(kind: str, *ids: str) -> str:
    """An idempotency key for a provider call, derived from our own ids:
    `provider_key("pi", order_id)` -> `dotshop-pi-ord_...`."""
    return "-".join(("dotshop", kind, *ids))


def fingerprint(method: str, path: str, body: bytes) -> str:
    """sha256 hex of a canonical form of the request. JSON bodies are canonicalised (sorted
    keys, no insignificant whitespace), so key order and formatting do not count as a change."""
    try:
        canonical = (
            b"json:"
            + json.dumps(
                json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
        )
    except (ValueError, UnicodeDecodeError):
        canonical = b"raw:" + body
    digest = hashlib.sha256()
    digest.update(f"{method.upper()}\n{path}\n".encode())
    digest.update(canonical)
    return digest.hexdigest()


def validate_key(key: str) -> str:
    """The key itself, or IdempotencyKeyInvalid."""
    if not isinstance(key, str) or not _KEY_PATTERN.fullmatch(key):
        raise IdempotencyKeyInvalid()
    return key


def _is_retryable(exc: BaseException) -> bool:
    """Serialization failure (40001) or deadlock (40P01): the transaction may simply be rerun."""
    if isinstance(exc, _Vanished):
        return True
    if isinstance(exc, DBAPIError):
        return getattr(exc.orig, "sqlstate", None) in ("40001", "40P01")
    return False


def _retrying() -> Retrying:
    return Retrying(
        retry=retry_if_exception(_is_retryable),
        stop=stop_after_attempt(SERIALIZATION_RETRIES),
        wait=wait_random_exponential(multiplier=0.01, max=0.2),
        reraise=True,
    )


def _record(row: Any) -> KeyRecord:
    response = None
    if row.recovery_point == FINISHED and row.response_status is not None:
        response = Answer(row.response_status, bytes(row.response_body or b""), replayed=True)
    return KeyRecord(
        id=row.id,
        scope=row.scope,
        key=row.key,
        recovery_point=row.recovery_point,
        state=dict(row.state or {}),
        locked_at=row.locked_at,
        response=response,
    )


# -------------------------------------------------------------------------------------- begin


@dataclass(frozen=True)
class NewKey:
    """A key as this request would insert it: new, locked by this request (`now` is the lock
    token), its first phase still to run. `run_new` inserts it together with that phase."""

    id: str
    scope: str
    key: str
    method: str
    path: str
    fingerprint: str
    now: datetime

    def params(self) -> dict[str, Any]:
        """The key's columns, as the statement that inserts it takes them."""
        return {
            "key_id": self.id,
            "scope": self.scope,
            "key": self.key,
            "method": self.method,
            "path": self.path,
            "fingerprint": self.fingerprint,
            "now": self.now,
            "key_expires_at": self.now + KEY_TTL,
        }

    def record(self) -> KeyRecord:
        return KeyRecord(self.id, self.scope, self.key, STARTED, {}, self.now)


def new_key(
    *,
    scope: str,
    key: str,
    path: str,
    body: bytes,
    method: str = "POST",
    now: datetime | None = None,
) -> NewKey:
    """Validate the client's key and make the record of its first use by this request. Raises
    IdempotencyKeyInvalid."""
    validate_key(key)
    if len(scope) > 100:
        raise ValueError("idempotency scope longer than 100 characters")
    fp = fingerprint(method, path, body)
    return NewKey(new_id("idk"), scope, key, method.upper(), path, fp, now or _utcnow())


def begin(
    engine: Engine,
    *,
    scope: str,
    key: str,
    path: str,
    body: bytes,
    method: str = "POST",
    lock_timeout: timedelta = LOCK_TIMEOUT,
    now: datetime | None = None,
) -> Begun:
    """Insert-or-lock the key in one short transaction.

    Returns the stored answer of a finished key (`replayed`), or the key locked for this
    request (run its steps). Raises IdempotencyKeyInvalid, IdempotencyKeyReused (same key,
    different request) or IdempotencyKeyInUse (another request holds a live lock younger than
    `lock_timeout`; see `lock_timeout_for`).
    """
    new = new_key(scope=scope, key=key, path=path, body=body, method=method, now=now)
    for attempt in _retrying():
        with attempt:
            return _begin_in_one(engine, new) or (
                _begin_once(
                    engine, scope, key, new.method, path, new.fingerprint, new.now, lock_timeout
                )
            )
    raise AssertionError("unreachable")  # pragma: no cover - Retrying reraises


# -- begin_key --
# A new key is inserted locked for this request; an existing one is read as it stands (the
# statement's snapshot), in the same round trip. ON CONFLICT waits for a concurrent inserter of
# the same key to finish; if that one committed after our snapshot was taken, the read finds
# nothing and begin() takes the locking path.
_BEGIN_KEY = text(
    """
    WITH fresh AS (
        INSERT INTO idempotency_key
               (id, scope, key, request_method, request_path, request_fingerprint,
                recovery_point, locked_at, state, last_run_at, expires_at)
        VALUES (:key_id, :scope, :key, :method, :path, :fingerprint,
                'started', :now, '{}', :now, :key_expires_at)
        ON CONFLICT (scope, key) DO NOTHING
        RETURNING *)
    SELECT true AS fresh, * FROM fresh
     UNION ALL
    SELECT false AS fresh, * FROM idempotency_key
     WHERE scope = :scope AND key = :key AND NOT EXISTS (SELECT FROM fresh)
    """
)


def _begin_in_one(engine: Engine, new: NewKey) -> Begun | None:
    """begin() in one round trip for what needs no lock: a new key, the stored answer of a
    finished one, or a key reused for another request (a finished key and a key's request never
    change while it lives). None: the key is unfinished or expired; the locking path decides."""
    with autocommit(engine) as conn:
        row = conn.execute(_BEGIN_KEY, new.params()).one_or_none()
    if row is not None and row.fresh:
        return _record(row)
    return known_answer(row, new)


def known_answer(row: Any, new: NewKey) -> Answer | None:
    """What an existing key, read as it stands (`row`: its request_fingerprint,
    request_method, request_path, recovery_point, response_status, response_body and
    expires_at; None or NULLs when it is gone), answers `new`'s request without a lock: the
    stored answer of a finished key, or IdempotencyKeyReused for another request (a finished
    key and a key's request never change while it lives). None: the key is unfinished or
    expired; the locking path (`begin`) decides."""
    if row is None or row.expires_at is None or row.expires_at <= new.now:
        return None
    request = (row.request_fingerprint, row.request_method, row.request_path)
    if request != (new.fingerprint, new.method, new.path):
        raise IdempotencyKeyReused()
    if row.recovery_point == FINISHED:
        return Answer(row.response_status, bytes(row.response_body or b""), replayed=True)
    return None


def _begin_once(
    engine: Engine,
    scope: str,
    key: str,
    method: str,
    path: str,
    fp: str,
    now: datetime,
    lock_timeout: timedelta,
) -> Begun:
    with Session(engine) as session, session.begin():
        # INSERT ... ON CONFLICT DO NOTHING waits for a concurrent inserter of the same key to
        # finish, then either inserts (it rolled back) or yields; the row lock that follows
        # serialises every request using this key.
        fresh = {
            "scope": scope,
            "key": key,
            "request_method": method,
            "request_path": path,
            "request_fingerprint": fp,
            "recovery_point": STARTED,
            "locked_at": now,
            "state": {},
            "last_run_at": now,
            "expires_at": now + KEY_TTL,
        }
        inserted = session.execute(
            insert(_table)
            .values(id=new_id("idk"), **fresh)
            .on_conflict_do_nothing(index_elements=["scope", "key"])
            .returning(*_table.c)
        ).one_or_none()
        if inserted is not None:
            return _record(inserted)

        try:
            row = session.execute(
                select(_table)
                .where(_table.c.scope == scope, _table.c.key == key)
                .with_for_update(nowait=True)
            ).one_or_none()
        except DBAPIError as exc:
            # Held by a phase of the request using it (or one taking it over): in flight. Stripe
            # answers 409 then rather than making the retry wait for the phase to end.
            if getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                raise IdempotencyKeyInUse() from None
            raise
        if row is None:
            # Reaped between our INSERT and SELECT: run the transaction again.
            raise _Vanished()
        if row.expires_at <= now:
            # Expired but not reaped yet: the key string starts over as a new request, under a
            # new id (provider keys derive from it, so nothing of the old request is reused).
            session.execute(delete(_table).where(_table.c.id == row.id))
            new = session.execute(
                insert(_table).values(id=new_id("idk"), **fresh).returning(*_table.c)
            ).one()
            return _record(new)
        if (row.request_fingerprint, row.request_method, row.request_path) != (fp, method, path):
            raise IdempotencyKeyReused()
        if row.recovery_point == FINISHED:
            return Answer(row.response_status, bytes(row.response_body or b""), replayed=True)
        if row.locked_at is not None and row.locked_at > now - lock_timeout:
            raise IdempotencyKeyInUse()
        # Unlocked (a previous attempt failed and unlocked) or abandoned (its process died):
        # take it and resume at the last committed recovery point.
        locked = session.execute(
            update(_table)
            .where(_table.c.id == row.id)
            .values(locked_at=now, last_run_at=now)
            .returning(*_table.c)
        ).one()
        return _record(locked)


# PostgreSQL's lock_not_available: FOR UPDATE NOWAIT found the row locked.
LOCK_NOT_AVAILABLE = "55P03"


class _Vanished(Exception):
    """Internal: the key row was reaped between our INSERT and SELECT; begin() runs again."""


# ----------------------------------------------------------------------------------- phases


@contextmanager
def _phase(engine: Engine, key: KeyRecord, isolation: str) -> Iterator[PhaseSession]:
    """One transaction holding the key row; applies the outcome and commits. Does not unlock
    on error (callers decide: `atomic_phase` unlocks, `run` may first retry)."""
    with PhaseSession(engine, expire_on_commit=False) as session:
        with session.begin():
            session.connection(execution_options={"isolation_level": isolation})
            row = session.execute(
                select(_table).where(_table.c.id == key.id).with_for_update()
            ).one_or_none()
            if row is None or row.locked_at is None or row.locked_at != key.locked_at:
                # Our lock was released or taken over (we were presumed dead): stop writing.
                raise IdempotencyKeyInUse("this request no longer holds its idempotency key")
            if row.recovery_point != key.recovery_point:
                raise IdempotencyKeyInUse("the idempotency key moved on under this request")
            key.state = dict(row.state or {})
            session.outcome = NoOp()
            yield session
            outcome = session.outcome
            values: dict[str, Any] = {"last_run_at": _utcnow()}
            if isinstance(outcome, RecoveryPoint):
                merged = {**key.state, **(outcome.state or {})}
                values |= {"recovery_point": outcome.name, "state": merged}
            elif isinstance(outcome, Response):
                values |= {
                    "recovery_point": FINISHED,
                    "response_status": outcome.status,
                    "response_body": outcome.body,
                    "locked_at": None,
                }
            elif not isinstance(outcome, NoOp):
                raise TypeError(f"a phase outcome must be an Outcome, not {outcome!r}")
            session.execute(update(_table).where(_table.c.id == key.id).values(**values))
        _follow(key, outcome)


def _follow(key: KeyRecord, outcome: Outcome) -> None:
    """The phase committed `outcome`: the in-memory record follows the row."""
    if isinstance(outcome, RecoveryPoint):
        key.recovery_point = outcome.name
        key.state = {**key.state, **(outcome.state or {})}
    elif isinstance(outcome, Response):
        key.recovery_point = FINISHED
        key.locked_at = None
        key.response = Answer(outcome.status, outcome.body)


@contextmanager
def atomic_phase(
    engine: Engine, key: KeyRecord, *, isolation: str = READ_COMMITTED
) -> Iterator[PhaseSession]:
    """A Session inside ONE transaction with the key row locked FOR UPDATE.

    Set `session.outcome` to a RecoveryPoint, Response or NoOp; it is written to the key in the
    same transaction. On an exception the transaction rolls back and the key is unlocked in a
    separate short transaction, so a retry resumes from the last committed recovery point.
    """
    try:
        with _phase(engine, key, isolation) as session:
            yield session
    except BaseException:
        _release(engine, key)
        raise


# -- finish_key --
# Store a request's final answer and unlock its key, while the key is still this request's at
# the recovery point it knows (the UPDATE re-checks both on the newest row version).
_FINISH_KEY = text(
    """
    UPDATE idempotency_key
       SET recovery_point = 'finished', response_status = :status, response_body = :body,
           locked_at = NULL, last_run_at = now()
     WHERE id = :id AND locked_at = :locked_at AND recovery_point = :point
    RETURNING id
    """
)


def finish_in_one(conn: Connection, key: KeyRecord, response: Response) -> Response | None:
    """For a `OneStatement` whose work came to nothing (a final business answer): store
    `response` as the key's answer in one statement. None when the key is no longer ours."""
    params = {"status": response.status, "body": response.body, "id": key.id}
    params |= {"locked_at": key.locked_at, "point": key.recovery_point}
    stored = conn.execute(_FINISH_KEY, params).one_or_none()
    return None if stored is None else response


# -- insert_finished_key --
# A new key stored with its final answer at once (nothing else of its request was written).
_INSERT_FINISHED_KEY = text(
    """
    INSERT INTO idempotency_key
           (id, scope, key, request_method, request_path, request_fingerprint,
            recovery_point, locked_at, state, last_run_at, expires_at,
            response_status, response_body)
    VALUES (:key_id, :scope, :key, :method, :path, :fingerprint,
            'finished', NULL, '{}', :now, :key_expires_at, :status, :body)
    ON CONFLICT (scope, key) DO NOTHING
    RETURNING id
    """
)


def insert_finished(conn: Connection, new: NewKey, response: Response) -> Response | None:
    """For a `run_new` first step whose statement was rolled back with the key (a final
    business answer raised as an error): insert the key with `response` as its answer. None
    when the key exists by now (another request with it got there first)."""
    params = new.params() | {"status": response.status, "body": response.body}
    stored = conn.execute(_INSERT_FINISHED_KEY, params).one_or_none()
    return None if stored is None else response


def _release(engine: Engine, key: KeyRecord) -> None:
    """Unlock the key if we still hold it (never another request's lock)."""
    if key.locked_at is None:
        return
    with engine.begin() as conn:
        conn.execute(
            update(_table)
            .where(_table.c.id == key.id, _table.c.locked_at == key.locked_at)
            .values(locked_at=None)
        )
    key.locked_at = None


def unlock(engine: Engine, key_id: str) -> None:
    """Clear the key's lock whoever holds it (operator action, or a caller giving up)."""
    with engine.begin() as conn:
        conn.execute(update(_table).where(_table.c.id == key_id).values(locked_at=None))


# ----------------------------------------------------------------------------------- answers


def encode(payload: dict[str, Any]) -> bytes:
    """A JSON body as we store and send it (compact; replayed byte for byte)."""
    return msgspec.json.encode(payload)


def error_response(error: DotshopError) -> Response:
    """A final answer made of a business error: stored and replayed like a success."""
    return Response(error.http_status, encode({"error": error.to_dict()}))


def final_errors(
    step: Callable[[Session, KeyRecord], Response],
) -> Callable[[Session, KeyRecord], Response]:
    """Business errors a step raises (no such order, wrong state) are final answers: store them
    (the step's own writes are rolled back to a savepoint first)."""

    def guarded(session: Session, key: KeyRecord) -> Response:
        try:
            with session.begin_nested():
                return step(session, key)
        except (NotFound, Conflict) as exc:
            return error_response(exc)

    return guarded


# Time for the phases themselves and the SDK's backoff between its retries.
LOCK_MARGIN_SECONDS = 10


def answer_once(
    engine: Engine,
    settings: Settings,
    *,
    scope: str,
    key: str,
    path: str,
    body: bytes,
    step: Callable[[Session, KeyRecord], Response],
) -> Answer:
    """A request done in one atomic phase (cancel, refund): the stored answer of an earlier
    request with this key, or `step`'s, whose business errors are stored as final answers."""
    begun = begin(
        engine, scope=scope, key=key, path=path, body=body, lock_timeout=lock_timeout_for(settings)
    )
    if isinstance(begun, Answer):
        return begun
    return run(engine, begun, {STARTED: final_errors(step)})


def lock_timeout_for(settings: Settings) -> timedelta:
    """The longest a live request can hold its key: every Stripe attempt timing out, plus a
    margin. An older lock belongs to a process that died: a retry (or the completer) may take
    the key over."""
    attempts = STRIPE_NETWORK_RETRIES + 1
    return timedelta(seconds=settings.stripe_timeout * attempts + LOCK_MARGIN_SECONDS)


# ------------------------------------------------------------------------------------ driver


def run_new(
    engine: Engine,
    new: NewKey,
    first: Callable[[Connection, NewKey], Outcome | Answer | None],
    steps: Mapping[str, Step],
) -> Answer | None:
    """A request's key, when new, in one round trip with its first phase: `first` inserts the
    key (`new.params()`) and runs the phase in one self-contained statement, answering the
    phase's outcome. When the key exists already it writes nothing and answers what
    `known_answer` makes of the key as it stands: a replay, or None. Then the remaining
    `steps` run as in `run`. None: the key exists and is unfinished or expired; `begin`
    decides what it gets (409 while in flight, or a resumption)."""
    for attempt in _retrying():
        with attempt, autocommit(engine) as conn:
            outcome = first(conn, new)
    if outcome is None or isinstance(outcome, Answer):
        return outcome
    key = new.record()
    _follow(key, outcome)
    return run(engine, key, steps)


def run(
    engine: Engine,
    key: KeyRecord,
    steps: Mapping[str, Step],
    *,
    isolation: str = READ_COMMITTED,
) -> Answer:
    """Run the steps from the key's recovery point until one returns a Response; that is the
    answer (freshly made, not a replay).

    `steps` maps a recovery point to a step: a function `(session, key) -> Outcome` run in an
    atomic phase, or an `External` (provider call outside any transaction, then a phase that
    records its result). Each step must advance the key (NoOp would loop forever, so it is an
    error here). Phases that fail to serialize are rerun; any other exception unlocks the key
    and propagates.
    """
    try:
        while key.recovery_point != FINISHED:
            step = steps.get(key.recovery_point)
            if step is None:
                raise KeyError(f"no step for recovery point {key.recovery_point!r}")
            before = key.recovery_point
            if isinstance(step, OneStatement):
                _run_in_one(engine, key, step.run, required=True)
            elif isinstance(step, External):
                result = step.call(key)
                if step.record_in_one is None or not _run_in_one(
                    engine, key, partial(_record_in_one, step, result), required=False
                ):
                    _run_phase(engine, key, partial(_record_external, step, result), isolation)
            else:
                _run_phase(engine, key, step, isolation)
            if key.recovery_point == before:
                raise RuntimeError(f"step {before!r} did not advance the idempotency key")
    except BaseException:
        _release(engine, key)
        raise
    assert key.response is not None
    return key.response


def _record_external(step: External[T], result: T, session: Session, key: KeyRecord) -> Outcome:
    return step.record(session, key, result)


def _record_in_one(
    step: External[T], result: T, conn: Connection, key: KeyRecord
) -> Outcome | None:
    assert step.record_in_one is not None
    return step.record_in_one(conn, key, result)


def _run_in_one(
    engine: Engine,
    key: KeyRecord,
    statement: Callable[[Connection, KeyRecord], Outcome | None],
    *,
    required: bool,
) -> bool:
    """Run a self-fencing statement (see `OneStatement`); whether it applied. Not applying is
    an error for a `OneStatement` (`required`): the key is no longer ours."""
    for attempt in _retrying():
        with attempt, autocommit(engine) as conn:
            outcome = statement(conn, key)
    if outcome is None:
        if required:
            raise IdempotencyKeyInUse("this request no longer holds its idempotency key")
        return False
    _follow(key, outcome)
    return True


def _run_phase(
    engine: Engine,
    key: KeyRecord,
    step: Callable[[Session, KeyRecord], Outcome],
    isolation: str,
) -> None:
    for attempt in _retrying():
        with attempt, _phase(engine, key, isolation) as session:
            session.outcome = step(session, key)


# ------------------------------------------------------------------------------ stalled keys

# -- claim_stalled_key --
# One unfinished key at :point of :scope that nobody has run since :stalled_before: the request
# holding it died (its locked_at is that old) or failed, unlocked it, and its client never came
# back. Setting a fresh locked_at is begin()'s takeover, so the lock is the fence: a straggler
# of the old request can no longer commit a phase, and a client arriving now gets 409 until the
# completer is done. Rows another completer (or a begin) is locking are skipped; once it
# commits, its fresh lock no longer matches. The probe uses ix_idempotency_key_unfinished.
_CLAIM_STALLED = text(
    """
    UPDATE idempotency_key
       SET locked_at = :now, last_run_at = :now
     WHERE id = (
             SELECT id
               FROM idempotency_key
              WHERE recovery_point = :point
                AND scope = :scope
                AND last_run_at <= :stalled_before
                AND (locked_at IS NULL OR locked_at <= :stalled_before)
              ORDER BY last_run_at
              LIMIT 1
                FOR UPDATE SKIP LOCKED)
    RETURNING *
    """
)

# -- unlock_stalled_started --
# Keys still at `started` whose request died holding them: nothing was committed under them,
# so unlocking is all they need (a retry starts from scratch, as begin() would let it anyway).
_UNLOCK_STALLED_STARTED = text(
    """
    UPDATE idempotency_key
       SET locked_at = NULL
     WHERE id IN (
             SELECT id
               FROM idempotency_key
              WHERE recovery_point = 'started'
                AND locked_at <= :stalled_before
              LIMIT :limit
                FOR UPDATE SKIP LOCKED)
    """
)


def claim_stalled(
    engine: Engine, *, scope: str, point: str, stalled_before: datetime, now: datetime
) -> KeyRecord | None:
    """Lock one key of `scope` stranded at recovery point `point` (untouched since
    `stalled_before`) for the caller, who resumes it with `run`; None when there is none."""
    with engine.begin() as conn:
        row = conn.execute(
            _CLAIM_STALLED,
            {"scope": scope, "point": point, "stalled_before": stalled_before, "now": now},
        ).one_or_none()
    return None if row is None else _record(row)


def unlock_stalled_started(engine: Engine, *, stalled_before: datetime, limit: int) -> int:
    """Unlock up to `limit` keys at `started` locked since before `stalled_before`."""
    with engine.begin() as conn:
        return conn.execute(
            _UNLOCK_STALLED_STARTED, {"stalled_before": stalled_before, "limit": limit}
        ).rowcount


# ------------------------------------------------------------------------------------ reaper


def reap_expired(engine: Engine, now: datetime | None = None, limit: int = 1000) -> int:
    """Delete up to `limit` keys past their expiry; returns how many. Rows locked by a phase in
    progress are skipped (the next run gets them)."""
    now = now or _utcnow()
    doomed = (
        select(_table.c.id)
        .where(_table.c.expires_at <= now)
        .order_by(_table.c.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    with engine.begin() as conn:
        return conn.execute(delete(_table).where(_table.c.id.in_(doomed))).rowcount


__all__ = [
    "FINISHED",
    "KEY_TTL",
    "LOCK_TIMEOUT",
    "READ_COMMITTED",
    "SERIALIZABLE",
    "STARTED",
    "Answer",
    "Begun",
    "External",
    "KeyRecord",
    "NoOp",
    "OneStatement",
    "Outcome",
    "PhaseSession",
    "RecoveryPoint",
    "Response",
    "Step",
    "answer_once",
    "atomic_phase",
    "begin",
    "claim_stalled",
    "encode",
    "error_response",
    "final_errors",
    "fingerprint",
    "finish_in_one",
    "lock_timeout_for",
    "provider_key",
    "reap_expired",
    "run",
    "unlock",
    "unlock_stalled_started",
    "validate_key",
]

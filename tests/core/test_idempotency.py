"""Idempotency keys on a real PostgreSQL: one effect per key under concurrency, byte-identical
replays, reuse detection, resumption from recovery points, lock takeover and reaping."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select, text

from core import idempotency as idem
from core.errors import IdempotencyKeyInUse, IdempotencyKeyInvalid, IdempotencyKeyReused
from core.models import IdempotencyKey, OutboxMessage
from core.outbox import enqueue

SCOPE = "POST /v1/checkouts"
PATH = "/v1/checkouts"
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def _begin(engine: Engine, key: str, body: bytes = b'{"a": 1}', now: datetime | None = None):
    return idem.begin(
        engine,
        scope=SCOPE,
        key=key,
        path=PATH,
        body=body,
        now=now,
    )


def replay_of(answer: idem.Answer) -> idem.Answer:
    """The same answer, as a retry gets it: same bytes, marked as a replay."""
    assert not answer.replayed
    return replace(answer, replayed=True)


def _effects(engine: Engine, key: str) -> int:
    """The observable effect of a request: outbox messages it enqueued in a phase."""
    with engine.connect() as conn:
        return conn.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.ordering_key == key)
        )


def _create_effect(session, key: idem.KeyRecord) -> idem.Outcome:
    public_id = enqueue(session, topic="test.effect", ordering_key=key.key, payload={"k": key.id})
    return idem.RecoveryPoint("effect_created", {"effect": public_id})


def _respond(session, key: idem.KeyRecord) -> idem.Outcome:
    body = b'{"effect": "%s", "bytes": "\xff\x00"}' % key.state["effect"].encode()
    return idem.Response(201, body)


STEPS = {"started": _create_effect, "effect_created": _respond}


# ------------------------------------------------------------------------------- fingerprint


def test_fingerprint_canonicalises_json_but_not_meaning() -> None:
    a = idem.fingerprint("POST", PATH, b'{"email": "a@x", "lines": [{"sku": "S", "quantity": 1}]}')
    b = idem.fingerprint("post", PATH, b'{ "lines":[{"quantity":1,"sku":"S"}],\n "email":"a@x"}')
    assert a == b and len(a) == 64
    assert a != idem.fingerprint(
        "POST", PATH, b'{"email": "a@x", "lines": [{"sku": "S", "quantity": 2}]}'
    )
    assert a != idem.fingerprint("POST", "/v1/other", b'{"email": "a@x", "lines": []}')
    # Non-JSON bodies are hashed as they are, and never collide with a JSON rendering.
    assert idem.fingerprint("POST", PATH, b"x=1") != idem.fingerprint("POST", PATH, b"x=2")
    assert idem.fingerprint("POST", PATH, b"\xff") != idem.fingerprint("POST", PATH, b"\xfe")


@pytest.mark.parametrize("bad", ["", "x" * 15, "x" * 256, "caf\u00e9", "a\nb", "tab\there", "\x7f"])
def test_invalid_keys_are_refused(clean_engine: Engine, bad: str) -> None:
    with pytest.raises(IdempotencyKeyInvalid):
        _begin(clean_engine, bad)
    with clean_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(IdempotencyKey)) == 0


def test_longest_valid_key_is_accepted(clean_engine: Engine) -> None:
    begun = _begin(clean_engine, "k" * 255)
    assert isinstance(begun, idem.KeyRecord) and begun.recovery_point == "started"


# ------------------------------------------------------------------------------- concurrency


def test_twenty_concurrent_requests_make_one_effect(clean_engine: Engine) -> None:
    key = "concurrent-key-00001"
    barrier = threading.Barrier(20)
    outcomes: list[object] = []
    lock = threading.Lock()

    def slow_effect(session, record):
        # Hold the phase open a little so the other requests arrive while it is in flight.
        session.execute(text("SELECT pg_sleep(0.2)"))
        return _create_effect(session, record)

    def request() -> None:
        barrier.wait()
        try:
            begun = _begin(clean_engine, key)
            if isinstance(begun, idem.Answer):
                result: object = ("replayed", begun)
            else:
                result = ("ran", idem.run(clean_engine, begun, {**STEPS, "started": slow_effect}))
        except IdempotencyKeyInUse as exc:
            result = ("in_use", exc)
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=request) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert len(outcomes) == 20
    assert _effects(clean_engine, key) == 1
    ran = [r for kind, r in outcomes if kind == "ran"]
    assert len(ran) == 1
    final = ran[0]
    assert final.status == 201
    for kind, r in outcomes:
        assert kind in ("ran", "replayed", "in_use")
        if kind == "replayed":
            assert r == replay_of(final)  # byte for byte
    assert any(kind == "in_use" for kind, _ in outcomes)
    # Every later retry replays the same bytes.
    assert _begin(clean_engine, key) == replay_of(final)
    assert _effects(clean_engine, key) == 1


def test_same_key_different_request_is_reused_and_writes_nothing(clean_engine: Engine) -> None:
    begun = _begin(clean_engine, "reuse-key-0000000001", b'{"a": 1}')
    stored = idem.run(clean_engine, begun, STEPS)
    with clean_engine.connect() as conn:
        before = conn.execute(select(IdempotencyKey.__table__)).all()

    with pytest.raises(IdempotencyKeyReused):
        _begin(clean_engine, "reuse-key-0000000001", b'{"a": 2}')
    with pytest.raises(IdempotencyKeyReused):
        idem.begin(
            clean_engine,
            scope=SCOPE,
            key="reuse-key-0000000001",
            path="/v1/elsewhere",
            body=b'{"a": 1}',
        )
    with clean_engine.connect() as conn:
        assert conn.execute(select(IdempotencyKey.__table__)).all() == before
    assert _effects(clean_engine, "reuse-key-0000000001") == 1
    assert _begin(clean_engine, "reuse-key-0000000001", b'{ "a":1 }') == replay_of(stored)
    # Another scope (e.g. the admin API's) is another key.
    other = idem.begin(
        clean_engine,
        scope="admin:POST /v1/checkouts",
        key="reuse-key-0000000001",
        path=PATH,
        body=b'{"a": 2}',
    )
    assert isinstance(other, idem.KeyRecord)


def test_in_flight_key_is_in_use_until_unlocked(clean_engine: Engine) -> None:
    begun = _begin(clean_engine, "inflight-key-0000000001", now=T0)
    assert isinstance(begun, idem.KeyRecord)
    with pytest.raises(IdempotencyKeyInUse):
        _begin(clean_engine, "inflight-key-0000000001", now=T0 + timedelta(seconds=1))
    idem.unlock(clean_engine, begun.id)
    again = _begin(clean_engine, "inflight-key-0000000001", now=T0 + timedelta(seconds=2))
    assert isinstance(again, idem.KeyRecord) and again.id == begun.id


# ------------------------------------------------------------------------------ recovery


def test_crash_after_phase_one_resumes_at_recovery_point(clean_engine: Engine) -> None:
    calls: list[str] = []
    fail = {"once": True}

    def create_payment(key: idem.KeyRecord) -> str:
        provider_key = idem.provider_key("pi", key.state["effect"])
        calls.append(provider_key)
        if fail.pop("once", False):
            raise ConnectionError("provider timed out")
        return "pi_" + provider_key[-6:]

    def save_payment(session, key, pi_id: str) -> idem.Outcome:
        return idem.RecoveryPoint("payment_created", {"pi": pi_id})

    def respond(session, key) -> idem.Outcome:
        return idem.Response(201, f'{{"pi": "{key.state["pi"]}"}}'.encode())

    steps = {
        "started": _create_effect,
        "effect_created": idem.External(call=create_payment, record=save_payment),
        "payment_created": respond,
    }
    first = _begin(clean_engine, "crash-key-0000000001")
    with pytest.raises(ConnectionError):
        idem.run(clean_engine, first, steps)
    # Phase 1 committed and the key was unlocked: a retry takes it at once and resumes.
    with clean_engine.connect() as conn:
        row = conn.execute(select(IdempotencyKey.__table__)).one()
    assert row.recovery_point == "effect_created" and row.locked_at is None
    assert _effects(clean_engine, "crash-key-0000000001") == 1

    retry = _begin(clean_engine, "crash-key-0000000001")
    assert isinstance(retry, idem.KeyRecord)
    assert retry.recovery_point == "effect_created" and "effect" in retry.state
    stored = idem.run(clean_engine, retry, steps)
    assert stored.status == 201
    assert _effects(clean_engine, "crash-key-0000000001") == 1  # phase 1 not redone
    assert len(calls) == 2 and calls[0] == calls[1]  # the provider saw the same key twice
    assert _begin(clean_engine, "crash-key-0000000001") == replay_of(stored)


def test_exception_in_phase_rolls_back_and_unlocks(clean_engine: Engine) -> None:
    begun = _begin(clean_engine, "rollback-key-0000000001")
    assert isinstance(begun, idem.KeyRecord)
    with pytest.raises(RuntimeError), idem.atomic_phase(clean_engine, begun) as session:
        _create_effect(session, begun)
        session.outcome = idem.RecoveryPoint("effect_created", {"x": 1})
        raise RuntimeError("boom")
    assert _effects(clean_engine, "rollback-key-0000000001") == 0
    with clean_engine.connect() as conn:
        row = conn.execute(select(IdempotencyKey.__table__)).one()
    assert (row.recovery_point, row.state, row.locked_at) == ("started", {}, None)


def test_phases_merge_state_and_can_run_serializable(clean_engine: Engine) -> None:
    begun = _begin(clean_engine, "merge-key-0000000001")
    assert isinstance(begun, idem.KeyRecord)
    with idem.atomic_phase(clean_engine, begun, isolation=idem.SERIALIZABLE) as session:
        level = session.execute(text("SHOW transaction_isolation")).scalar_one()
        session.outcome = idem.RecoveryPoint("one", {"a": 1, "b": 1})
    assert level == "serializable"
    with idem.atomic_phase(clean_engine, begun) as session:
        level = session.execute(text("SHOW transaction_isolation")).scalar_one()
        session.outcome = idem.RecoveryPoint("two", {"b": 2})
    assert level == "read committed"
    with idem.atomic_phase(clean_engine, begun) as session:
        session.outcome = idem.NoOp()
    assert begun.recovery_point == "two" and begun.state == {"a": 1, "b": 2}
    with idem.atomic_phase(clean_engine, begun) as session:
        session.outcome = idem.Response(200, b"ok")
    with clean_engine.connect() as conn:
        row = conn.execute(select(IdempotencyKey.__table__)).one()
    assert (row.recovery_point, row.state, row.locked_at) == ("finished", {"a": 1, "b": 2}, None)
    assert (row.response_status, bytes(row.response_body)) == (200, b"ok")


def test_step_that_does_not_advance_is_an_error(clean_engine: Engine) -> None:
    begun = _begin(clean_engine, "noop-key-0000000001")
    with pytest.raises(RuntimeError, match="did not advance"):
        idem.run(clean_engine, begun, {"started": lambda s, k: idem.NoOp()})
    assert isinstance(_begin(clean_engine, "noop-key-0000000001"), idem.KeyRecord)  # unlocked again


# ------------------------------------------------------------------------- lock takeover


def test_abandoned_lock_is_taken_over_after_timeout(clean_engine: Engine) -> None:
    dead = _begin(clean_engine, "abandoned-key-0000000001", now=T0)
    assert isinstance(dead, idem.KeyRecord)
    with idem.atomic_phase(clean_engine, dead) as session:
        session.outcome = _create_effect(session, dead)
    # The process dies here, holding the lock.
    with pytest.raises(IdempotencyKeyInUse):
        _begin(
            clean_engine,
            "abandoned-key-0000000001",
            now=T0 + idem.LOCK_TIMEOUT - timedelta(seconds=1),
        )
    heir = _begin(
        clean_engine, "abandoned-key-0000000001", now=T0 + idem.LOCK_TIMEOUT + timedelta(seconds=1)
    )
    assert isinstance(heir, idem.KeyRecord)
    assert heir.id == dead.id and heir.recovery_point == "effect_created"

    # The presumed-dead request wakes up: it may no longer write anything under the key.
    with pytest.raises(IdempotencyKeyInUse), idem.atomic_phase(clean_engine, dead) as session:
        session.outcome = idem.Response(500, b"zombie")
    stored = idem.run(clean_engine, heir, STEPS)
    assert stored.status == 201 and _effects(clean_engine, "abandoned-key-0000000001") == 1


# ------------------------------------------------------------------------------- expiry


def test_expired_keys_are_reaped_and_start_over(clean_engine: Engine) -> None:
    old = {}
    for i in range(3):
        begun = _begin(clean_engine, f"old-key-00000000{i}", now=T0 + timedelta(seconds=i))
        old[i] = begun.id
        idem.run(clean_engine, begun, STEPS)
    fresh = _begin(clean_engine, "fresh-key-0000000001", now=T0 + timedelta(hours=23))
    assert isinstance(fresh, idem.KeyRecord)

    assert idem.reap_expired(clean_engine, now=T0 + idem.KEY_TTL - timedelta(seconds=1)) == 0
    later = T0 + idem.KEY_TTL + timedelta(seconds=5)
    assert idem.reap_expired(clean_engine, now=later, limit=2) == 2  # oldest first
    # Expired but not reaped yet: the same key string is a new request (new id), any body.
    renewed = _begin(clean_engine, "old-key-000000002", b'{"other": true}', now=later)
    assert isinstance(renewed, idem.KeyRecord)
    assert renewed.id != old[2] and renewed.recovery_point == "started" and renewed.state == {}
    assert idem.reap_expired(clean_engine, now=later) == 0
    with clean_engine.connect() as conn:
        keys = set(conn.scalars(select(IdempotencyKey.key)))
    assert keys == {"fresh-key-0000000001", "old-key-000000002"}


def test_serializable_phases_are_retried_on_serialization_failure(clean_engine: Engine) -> None:
    """Two requests read-then-write the same thing at SERIALIZABLE: one loses the race with a
    serialization failure, `run` reruns its phase, and the result is as if they ran in turn."""
    barrier = threading.Barrier(2)
    attempts: list[str] = []
    results: list[object] = []

    def count_then_write(session, key):
        seen = session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.ordering_key == "x")
        )
        attempts.append(key.key)
        if attempts.count(key.key) == 1:
            barrier.wait(10)  # both have read before either writes: a write skew to detect
        enqueue(session, topic="t", ordering_key="x", payload={"seen": seen})
        return idem.Response(200, str(seen).encode())

    def request(name: str) -> None:
        begun = _begin(clean_engine, name)
        try:
            results.append(
                idem.run(
                    clean_engine, begun, {"started": count_then_write}, isolation="SERIALIZABLE"
                )
            )
        except Exception as exc:
            results.append(exc)

    threads = [
        threading.Thread(target=request, args=(f"serializable-key-{i:04d}",)) for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.body for r in results) == [b"0", b"1"], results
    assert len(attempts) == 3  # one phase ran twice


# ---------------------------------------------------------------- phases of one statement

# A phase of one statement, as core.checkout writes them: it fences itself on the key's lock
# token and recovery point, and moves the key in the same statement.
_ONE_STATEMENT_PHASE = text(
    """
    UPDATE idempotency_key
       SET recovery_point = 'effect_created', state = state || '{"one": true}'
     WHERE id = :id AND locked_at = :locked_at AND recovery_point = :point
    RETURNING id
    """
)


def _in_one(conn, key: idem.KeyRecord) -> idem.Outcome | None:
    params = {"id": key.id, "locked_at": key.locked_at, "point": key.recovery_point}
    moved = conn.execute(_ONE_STATEMENT_PHASE, params).one_or_none()
    return None if moved is None else idem.RecoveryPoint("effect_created", {"one": True})


def test_a_one_statement_phase_moves_the_key_and_the_run_goes_on(clean_engine: Engine) -> None:
    """Issue 10: a phase may be one self-fencing statement (one round trip); the in-memory key
    follows it like any phase and the next steps run from there."""
    begun = _begin(clean_engine, "one-statement-key-0001")
    assert isinstance(begun, idem.KeyRecord)

    stored = idem.run(
        clean_engine,
        begun,
        {"started": idem.OneStatement(_in_one), "effect_created": _one_state_response},
    )

    assert (stored.status, stored.body) == (200, b"one")
    assert _begin(clean_engine, "one-statement-key-0001") == replay_of(stored)


def _one_state_response(session, key: idem.KeyRecord) -> idem.Outcome:
    return idem.Response(200, b"one" if key.state == {"one": True} else b"lost state")


def test_a_one_statement_phase_of_a_lock_taken_over_writes_nothing(clean_engine: Engine) -> None:
    """DESIGN.md "Idempotency": a request presumed dead (its lock taken over) may no longer
    write under its key, whether its phase is a transaction or one statement."""
    dead = _begin(clean_engine, "one-statement-key-0002", now=T0)
    heir = _begin(
        clean_engine, "one-statement-key-0002", now=T0 + idem.LOCK_TIMEOUT + timedelta(seconds=1)
    )
    assert isinstance(dead, idem.KeyRecord) and isinstance(heir, idem.KeyRecord)

    with pytest.raises(IdempotencyKeyInUse):
        idem.run(clean_engine, dead, {"started": idem.OneStatement(_in_one)})

    with clean_engine.connect() as conn:
        row = conn.execute(select(IdempotencyKey.__table__)).one()
    assert (row.recovery_point, row.state, row.locked_at) == ("started", {}, heir.locked_at)


def test_a_record_in_one_that_does_not_apply_falls_back_to_the_phase(
    clean_engine: Engine,
) -> None:
    """An External's one-statement record is only a shortcut: when it writes nothing, `record`
    runs in an atomic phase and decides."""
    begun = _begin(clean_engine, "one-statement-key-0003")
    seen: list[str] = []

    def not_this_time(conn, key: idem.KeyRecord, result: str) -> idem.Outcome | None:
        seen.append(f"in one: {result}")
        return None

    def record(session, key: idem.KeyRecord, result: str) -> idem.Outcome:
        seen.append(f"phase: {result}")
        return idem.Response(201, result.encode())

    step = idem.External(call=lambda key: "pi_1", record=record, record_in_one=not_this_time)
    stored = idem.run(clean_engine, begun, {"started": step})

    assert (stored.status, stored.body, seen) == (201, b"pi_1", ["in one: pi_1", "phase: pi_1"])


def test_finish_in_one_stores_the_answer_only_while_the_key_is_ours(clean_engine: Engine) -> None:
    dead = _begin(clean_engine, "one-statement-key-0004", now=T0)
    assert isinstance(dead, idem.KeyRecord)
    answer = idem.Response(404, b'{"error": {"code": "unknown_sku"}}')
    with clean_engine.connect() as conn:
        stale = replace(dead, locked_at=T0 - timedelta(seconds=1))
        assert idem.finish_in_one(conn, stale, answer) is None
        assert idem.finish_in_one(conn, dead, answer) == answer
        conn.commit()
    assert _begin(clean_engine, "one-statement-key-0004") == idem.Answer(
        404, answer.body, replayed=True
    )

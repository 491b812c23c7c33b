"""checkout begin: a new Idempotency-Key and phase 1 of its checkout in one round trip

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 08:00:00

A checkout with a new key inserted the key (one statement) and then ran phase 1
(`dotshop_checkout_reserve`, another): two round trips and two commits where one does. This
function does both in one statement. A key that already exists is left to the general path
(core/idempotency.py `begin`), which replays, refuses or resumes it.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION_UP = """
-- Insert the key locked by this request (locked_at = p_now: its lock token) and, when it is
-- new, run phase 1 on it (dotshop_checkout_reserve sees the row: a VOLATILE function's
-- statements see the writes of the ones before them) and answer as that function does. A key
-- that exists already answers 'key_exists' having written nothing, with the key as it stands
-- (its request, recovery point, stored answer and expiry; NULLs if it is gone since), so that
-- a replay too is one round trip. Everything is one statement, so the insufficient-stock
-- error (SQLSTATE DS409) rolls the key back too.
CREATE FUNCTION dotshop_checkout_begin(
    p_key_id text,
    p_scope text,
    p_key text,
    p_method text,
    p_path text,
    p_fingerprint text,
    p_now timestamptz,
    p_key_expires_at timestamptz,
    p_state jsonb,
    p_order_id text,
    p_checkout_id text,
    p_region text,
    p_currency text,
    p_email text,
    p_shipping_address jsonb,
    p_expires_at timestamptz,
    p_skus text[],
    p_quantities integer[],
    p_reservation_ids text[]
) RETURNS TABLE (outcome text, amount bigint, unknown_skus text[],
                 request_fingerprint text, request_method text, request_path text,
                 recovery_point text, response_status integer, response_body bytea,
                 expires_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  INSERT INTO idempotency_key
         (id, scope, key, request_method, request_path, request_fingerprint,
          recovery_point, locked_at, state, last_run_at, expires_at)
  VALUES (p_key_id, p_scope, p_key, p_method, p_path, p_fingerprint,
          'started', p_now, '{}', p_now, p_key_expires_at)
  ON CONFLICT (scope, key) DO NOTHING;
  IF NOT FOUND THEN
    RETURN QUERY
      SELECT 'key_exists', NULL::bigint, NULL::text[],
             k.request_fingerprint::text, k.request_method::text, k.request_path::text,
             k.recovery_point::text, k.response_status, k.response_body, k.expires_at
        FROM (SELECT) AS one
        LEFT JOIN idempotency_key AS k ON k.scope = p_scope AND k.key = p_key;
    RETURN;
  END IF;
  RETURN QUERY
    SELECT r.outcome, r.amount, r.unknown_skus, NULL::text, NULL::text, NULL::text,
           NULL::text, NULL::integer, NULL::bytea, NULL::timestamptz
      FROM dotshop_checkout_reserve(
             p_key_id, p_now, p_state, p_order_id, p_checkout_id, p_region, p_currency,
             p_email, p_shipping_address, p_expires_at, p_skus, p_quantities,
             p_reservation_ids) AS r;
END $$;
"""


def upgrade() -> None:
    op.execute(FUNCTION_UP)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION IF EXISTS dotshop_checkout_begin("
        "text, text, text, text, text, text, timestamptz, timestamptz, jsonb, text, text, text,"
        " text, text, jsonb, timestamptz, text[], integer[], text[])"
    )

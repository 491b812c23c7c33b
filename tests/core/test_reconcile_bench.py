"""`dotshop bench reconcile`: the set-based matching on synthetic payments finds every seeded
mismatch, prints its rate next to a plain COPY of the same rows, and leaves no database behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import psycopg

from tests.conftest import _admin_url

PAYMENTS = 20_000


def test_bench_reconcile_finds_every_seeded_mismatch_and_prints_the_ratio(
    pg_server_url: str,
) -> None:
    env = {**os.environ, "DATABASE_URL": pg_server_url}
    out = subprocess.run(
        [sys.executable, "-m", "dotshop", "bench", "reconcile", "--payments", str(PAYMENTS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    lines = out.stdout.splitlines()
    assert re.fullmatch(
        rf"reconcile: {PAYMENTS} payments matched in [\d.]+ s = [\d,]+ payments/s", lines[0]
    )
    assert re.fullmatch(rf"baseline: COPY of the same {PAYMENTS} payment rows .* rows/s", lines[1])
    assert re.fullmatch(r"ratio: matching runs at [\d.]+ of COPY's rate", lines[2])
    # One of each of the seven reasons per hundred payments.
    assert lines[3].startswith(
        f"mismatches: seeded {PAYMENTS * 7 // 100}, found {PAYMENTS * 7 // 100} "
    )
    assert "duplicate_charge=200/200" in lines[3] and "missing_in_stripe=200/200" in lines[3]
    with psycopg.connect(_admin_url(pg_server_url)) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dotshop_bench_%'")
        assert left.fetchall() == []


def test_bench_without_a_known_benchmark_says_so() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dotshop", "bench", "nonesuch"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "not built yet" in out.stderr

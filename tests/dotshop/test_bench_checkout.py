"""`dotshop bench checkout --quick` (issue 10): one real run of every arm, side by side on the
same server settings, printing the table and writing the JSON record. CI asserts what the run
proves about correctness, never speed: no SKU oversold (a SKU with 20 units under 8 racing
clients ends at exactly 0 sellable, its reservations summing to 20), every order a client was
told about exists in the database, no error, every arm ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ARMS = {
    ("limit", "hot"),
    ("limit", "spread"),
    ("floor", "hot"),
    ("floor", "spread"),
    ("checkout", "hot"),
    ("checkout", "spread"),
    ("read", "product"),
    ("read", "list"),
    ("open", "floor-hot"),
    ("open", "checkout-hot"),
    ("oversell", "sellout"),
    ("e2e", "paid"),
    ("e2e", "paid-open"),
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "dotshop", "bench", "checkout", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    return done, out


def test_quick_run_passes_and_records_every_arm(quick_run) -> None:
    done, out = quick_run
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    (path,) = out.glob("checkout-*-quick.json")
    data = json.loads(path.read_text())
    assert {(a["arm"], a["target"]) for a in data["arms"]} == ARMS
    for arm in data["arms"]:
        assert arm["requests"] > 0 and arm["errors"] == 0, arm
        assert arm["p50_ms"] <= arm["p95_ms"] <= arm["p99_ms"], arm
    assert data["settings"]["quick"] is True and data["settings"]["workers"] >= 1
    assert data["machine"]["cpus"] == os.cpu_count()
    assert {"checkout/hot/8 rps / floor", "checkout/spread/8 rps / limit"} <= set(data["ratios"])


def test_quick_run_proves_no_oversell_and_no_lost_order(quick_run) -> None:
    _, out = quick_run
    data = json.loads(next(out.glob("checkout-*-quick.json")).read_text())
    checks = data["checks"]
    assert set(checks) == {
        "no_oversell",
        "orders_match_answers",
        "paid_orders_pushed",
        "no_errors",
        "every_arm_ran",
    }
    assert all(c["ok"] for c in checks.values()), checks
    sold = checks["no_oversell"]
    assert sold["rows_below_zero"] == 0
    assert sold["sellout_reserved"] == sold["sellout_held"] == sold["sellout_stock"] == 20
    # Every paid flow was paid, then pushed to Shopify by the relay before the run ended.
    e2e = [a for a in data["arms"] if a["arm"] == "e2e"]
    pushed = checks["paid_orders_pushed"]
    assert all(a["extra"]["started"] == a["extra"]["paid"] > 0 for a in e2e)
    assert sum(a["extra"]["paid"] for a in e2e) == pushed["paid"]
    assert pushed["pushed_to_shopify"] == pushed["paid"]
    assert data["ok"] is True


def test_quick_run_prints_the_table_and_progress(quick_run) -> None:
    done, _ = quick_run
    assert done.stdout.startswith("| arm | target | clients | req/s | p50 ms | p95 ms | p99 ms |")
    for arm, target in ARMS:
        assert f"| {arm} | {target} |" in done.stdout
    assert "end to end (8 clients)" in done.stdout and "end to end (open," in done.stdout
    assert "no_oversell: ok" in done.stdout
    assert "API up" in done.stderr and "floor/hot (8)" in done.stderr  # progress while it runs
    assert "written to" in done.stdout

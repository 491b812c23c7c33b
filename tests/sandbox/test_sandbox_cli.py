"""`dotshop sandbox --fault KEY=VALUE` starts both stand-ins with faults; bad flags exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sandbox.options import DEFAULT_SHOPIFY_ACCESS_TOKEN, DEFAULT_STRIPE_API_KEY
from tests.processes import start_sandbox


def test_faults_from_the_command_line_apply_to_both_stand_ins(tmp_path: Path) -> None:
    proc = start_sandbox(
        str(tmp_path / "sandbox.log"),
        "--seed",
        "7",
        "--fault",
        "error_rate=1.0",
        "--fault",
        "error_status=503",
    )
    try:
        stripe = httpx.get(
            f"{proc.urls['stripe']}/v1/payment_intents",
            headers={"Authorization": f"Bearer {DEFAULT_STRIPE_API_KEY}"},
        )
        shopify = httpx.get(
            f"{proc.urls['shopify']}/admin/api/2025-01/products.json",
            headers={"X-Shopify-Access-Token": DEFAULT_SHOPIFY_ACCESS_TOKEN},
        )
        assert stripe.status_code == 503 and shopify.status_code == 503
        for base in proc.urls.values():
            faults = httpx.get(f"{base}/_sandbox/faults").json()
            assert (faults["error_rate"], faults["error_status"], faults["seed"]) == (1.0, 503, 7)
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("error_rate=2", "between 0 and 1"),
        ("no_such_knob=1", "unknown fault"),
        ("oops", "KEY=VALUE"),
    ],
)
def test_bad_fault_flags_exit_2_with_a_message(flag: str, message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dotshop", "sandbox", "--fault", flag],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert message in done.stderr

"""The bench's ratios (dotshop/bench/report.py): each checkout arm against the floor arm run
just before it in the same round, then the median over the rounds."""

from __future__ import annotations

from dotshop.bench import report
from dotshop.bench.results import ArmResult


def _arm(arm: str, rps: float, p99: float, n: int, target: str = "spread") -> ArmResult:
    return ArmResult(arm, target, 8, 10.0, int(rps * 10), 0, 1.0, 2.0, p99, round=n)


def test_checkout_ratios_pair_each_round_with_its_own_floor_and_take_the_median() -> None:
    # The host slowed down in round 1: both arms of that pair fell, their ratio did not.
    arms = [
        ArmResult("limit", "spread", 8, 10.0, 100_000, 0),
        _arm("floor", 700, 30, 0),
        _arm("checkout", 245, 75, 0),
        _arm("floor", 350, 60, 1),
        _arm("checkout", 140, 120, 1),
        _arm("floor", 800, 20, 2),
        _arm("checkout", 240, 100, 2),
    ]

    ratio = report.ratios(arms)

    assert ratio["checkout/spread/8 rps / floor"] == 0.35  # rounds: 0.35, 0.40, 0.30
    assert ratio["checkout/spread/8 rps / floor min"] == 0.3
    assert ratio["checkout/spread/8 rps / floor max"] == 0.4
    assert ratio["checkout/spread/8 p99 / floor p99"] == 2.5  # rounds: 2.5, 2.0, 5.0
    assert ratio["checkout/spread/8 rps / limit"] == 0.024  # median checkout 240 / 10,000
    assert "| spread | 8 | 700.0 | 240.0 | 0.35 (0.30-0.40) | 2.5 |" in report.pairs_table(
        arms, ratio
    )

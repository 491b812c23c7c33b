"""The run's table (for the terminal and the README) and its JSON record."""

from __future__ import annotations

import json
import os
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dotshop.bench.results import ArmResult


def _find(arms: list[ArmResult], arm: str, target: str, clients: int) -> ArmResult | None:
    return next((a for a in arms if (a.arm, a.target, a.clients) == (arm, target, clients)), None)


def _paired_floor(arms: list[ArmResult], checkout: ArmResult) -> ArmResult | None:
    """The floor arm run just before this checkout arm: same target, clients and round."""
    shape = ("floor", checkout.target, checkout.clients, checkout.round)
    return next((a for a in arms if (a.arm, a.target, a.clients, a.round) == shape), None)


def _pair_ratios(arms: list[ArmResult], target: str, clients: int) -> list[tuple[float, float]]:
    """Per round: the checkout's throughput and p99 against its paired floor's."""
    out = []
    for a in arms:
        if (a.arm, a.target, a.clients) != ("checkout", target, clients):
            continue
        floor = _paired_floor(arms, a)
        if floor and floor.rps and floor.p99_ms and a.p99_ms is not None:
            out.append((a.rps / floor.rps, a.p99_ms / floor.p99_ms))
    return out


def ratios(arms: list[ArmResult]) -> dict[str, float]:
    """The checkout against the floor at the same shape: the median over the rounds of each
    pair's throughput ratio (with the rounds' min and max) and p99 ratio; against the limit
    (pgbench) by the median throughput. The reads against the median hot floor."""
    out: dict[str, float] = {}
    shapes = sorted({(a.target, a.clients) for a in arms if a.arm == "checkout"})
    for target, clients in shapes:
        name = f"checkout/{target}/{clients}"
        pairs = _pair_ratios(arms, target, clients)
        if pairs:
            rps = [r for r, _ in pairs]
            out[f"{name} rps / floor"] = round(statistics.median(rps), 3)
            out[f"{name} rps / floor min"] = round(min(rps), 3)
            out[f"{name} rps / floor max"] = round(max(rps), 3)
            out[f"{name} p99 / floor p99"] = round(statistics.median(p for _, p in pairs), 2)
        limit = _find(arms, "limit", target, clients)
        if limit and limit.rps:
            checkout = _median_rps(arms, "checkout", target, clients)
            out[f"{name} rps / limit"] = round(checkout / limit.rps, 4)
    for a in arms:
        if a.arm == "read" and (floor := _median_rps(arms, "floor", "hot", a.clients)):
            out[f"read/{a.target}/{a.clients} rps / floor"] = round(a.rps / floor, 3)
    return out


def _median_rps(arms: list[ArmResult], arm: str, target: str, clients: int) -> float:
    rps = [a.rps for a in arms if (a.arm, a.target, a.clients) == (arm, target, clients)]
    return statistics.median(rps) if rps else 0.0


def pairs_table(arms: list[ArmResult], ratio: dict[str, float]) -> str:
    """The checkout against the floor, one row per shape: medians over the rounds."""
    rounds = len({a.round for a in arms if a.arm == "checkout"})
    lines = [
        f"| target | clients | floor req/s | checkout req/s | x floor, median of {rounds} "
        "(min-max) | p99 x floor |",
        "|---|---|---|---|---|---|",
    ]
    for target, clients in sorted({(a.target, a.clients) for a in arms if a.arm == "checkout"}):
        name = f"checkout/{target}/{clients}"
        if f"{name} rps / floor" not in ratio:
            continue
        lines.append(
            f"| {target} | {clients} | {_median_rps(arms, 'floor', target, clients):.1f} | "
            f"{_median_rps(arms, 'checkout', target, clients):.1f} | "
            f"{ratio[f'{name} rps / floor']:.2f} ({ratio[f'{name} rps / floor min']:.2f}-"
            f"{ratio[f'{name} rps / floor max']:.2f}) | {ratio[f'{name} p99 / floor p99']:.1f} |"
        )
    return "\n".join(lines)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(arms: list[ArmResult], ratio: dict[str, float]) -> str:
    """Every arm in the order it ran; a checkout's `x floor` is against the floor run just
    before it, a read's against the median hot floor."""
    columns = ("arm", "target", "clients", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors")
    columns += ("x floor", "x limit")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for a in arms:
        name = f"{a.arm}/{a.target}/{a.clients}"
        clients = str(a.clients) if a.clients else f"open {a.extra.get('rate_per_s')}/s"
        x_floor = ratio.get(f"{name} rps / floor")
        x_limit = None
        if a.arm == "checkout":
            floor = _paired_floor(arms, a)
            x_floor = a.rps / floor.rps if floor and floor.rps else None
            x_limit = ratio.get(f"{name} rps / limit")
        lines.append(
            f"| {a.arm} | {a.target} | {clients} | {a.rps:.1f} | {ms(a.p50_ms)} | "
            f"{ms(a.p95_ms)} | {ms(a.p99_ms)} | {a.errors} | "
            f"{'' if x_floor is None else f'{x_floor:.2f}'} | "
            f"{'' if x_limit is None else f'{x_limit:.3f}'} |"
        )
    e2e = [a for a in arms if a.arm == "e2e"]
    if e2e:
        lines.append("")
    for a in e2e:
        load = f"{a.clients} clients" if a.clients else f"open, {a.extra.get('rate_per_s')}/s"
        lines.append(
            f"end to end ({load}): {a.rps:.1f} paid orders/s; checkout->paid p50 "
            f"{ms(a.p50_ms)} ms p99 {ms(a.p99_ms)} ms; confirm->paid p50 "
            f"{ms(a.extra.get('confirm_to_paid_p50_ms'))} ms p99 "
            f"{ms(a.extra.get('confirm_to_paid_p99_ms'))} ms"
        )
    return "\n".join(lines)


def record(
    arms: list[ArmResult],
    ratio: dict[str, float],
    checks: dict[str, dict[str, Any]],
    settings: dict[str, Any],
) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": settings,
        "arms": [a.as_dict() for a in arms],
        "ratios": ratio,
        "checks": checks,
        "ok": all(c["ok"] for c in checks.values()),
    }


def write(out_dir: Path, data: dict[str, Any], *, quick: bool) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    path = out_dir / f"checkout-{day}{'-quick' if quick else ''}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path

"""The run's table (for the terminal and the README) and its JSON record."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dotshop.bench.results import ArmResult


def _find(arms: list[ArmResult], arm: str, target: str, clients: int) -> ArmResult | None:
    return next((a for a in arms if (a.arm, a.target, a.clients) == (arm, target, clients)), None)


def ratios(arms: list[ArmResult]) -> dict[str, float]:
    """Throughput of the checkout (and the reads) against the floor and the limit at the same
    shape; and the checkout's p99 against the floor's."""
    out: dict[str, float] = {}
    for a in arms:
        if a.arm not in ("checkout", "read"):
            continue
        floor_target = a.target if a.arm == "checkout" else "hot"
        floor = _find(arms, "floor", floor_target, a.clients)
        limit = _find(arms, "limit", a.target, a.clients) if a.arm == "checkout" else None
        name = f"{a.arm}/{a.target}/{a.clients}"
        if floor and floor.rps:
            out[f"{name} rps / floor"] = round(a.rps / floor.rps, 3)
        if limit and limit.rps:
            out[f"{name} rps / limit"] = round(a.rps / limit.rps, 4)
        if a.arm == "checkout" and floor and floor.p99_ms and a.p99_ms is not None:
            out[f"{name} p99 / floor p99"] = round(a.p99_ms / floor.p99_ms, 2)
    return out


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(arms: list[ArmResult], ratio: dict[str, float]) -> str:
    columns = ("arm", "target", "clients", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors")
    columns += ("x floor", "x limit")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for a in arms:
        name = f"{a.arm}/{a.target}/{a.clients}"
        clients = str(a.clients) if a.clients else f"open {a.extra.get('rate_per_s')}/s"
        x_floor = ratio.get(f"{name} rps / floor")
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

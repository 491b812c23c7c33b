"""Open-model load: requests fall due on a fixed schedule (`rate` per second) whether or not the
earlier ones have been answered, and each latency runs from the moment the request was due, so
time spent queued behind a slow server counts. A closed loop (wrk) slows down with the server
and so hides that queueing (coordinated omission); this arm does not.

Plain asyncio streams speaking HTTP/1.1 over keep-alive connections: a fraction of an HTTP
library's CPU per request, which matters when the generator shares the server's cores.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import urlsplit

from dotshop.bench.results import ArmResult, percentile_ms
from dotshop.bench.wrk import REQUEST_TIMEOUT_SECONDS, Load

# Connections that take due requests from the queue: more than the server can work on at once,
# so requests wait in our queue (and in the measured latency), not behind a closed loop.
CONNECTIONS = 64


def run(
    base_url: str, load: Load, *, rate: float, seconds: float, arm: str, target: str
) -> ArmResult:
    return asyncio.run(_run(base_url, load, rate, seconds, arm, target))


def _request(load: Load, host: str, i: int) -> bytes:
    headers = [f"{load.method} {load.path} HTTP/1.1", f"Host: {host}"]
    body = b""
    if load.keyed:
        headers.append(f"Idempotency-Key: bench-open-{uuid.uuid4()}")
    if load.body is not None:
        body = load.body.replace("__SKU__", load.skus[i % len(load.skus)]).encode()
        headers += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        (int(ln.split(":", 1)[1]) for ln in lines if ln.lower().startswith("content-length:")), 0
    )
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def _run(
    base_url: str, load: Load, rate: float, seconds: float, arm: str, target: str
) -> ArmResult:
    url = urlsplit(base_url)
    total = max(1, round(rate * seconds))
    due: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    failures = 0

    async def connection() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        try:
            while (item := await due.get()) is not None:
                i, at = item
                try:
                    status = await asyncio.wait_for(
                        _exchange(reader, writer, _request(load, url.netloc, i)),
                        REQUEST_TIMEOUT_SECONDS,
                    )
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                    failures += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(url.hostname, url.port)
                    continue
                latencies.append(time.perf_counter() - at)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(CONNECTIONS)]
    start = time.perf_counter() + 0.2  # connections open first
    for i in range(total):
        at = start + i / rate
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        due.put_nowait((i, at))
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    unexpected = sum(n for code, n in statuses.items() if int(code) not in load.expected)
    return ArmResult(
        arm=arm,
        target=target,
        clients=0,  # open model: no fixed number of clients
        duration_s=round(elapsed, 3),
        requests=len(latencies),
        errors=failures + unexpected,
        p50_ms=percentile_ms(latencies, 50),
        p95_ms=percentile_ms(latencies, 95),
        p99_ms=percentile_ms(latencies, 99),
        statuses=dict(sorted(statuses.items())),
        extra={"rate_per_s": round(rate, 1), "scheduled": total},
    )

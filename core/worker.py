"""The background processes and the loop they share.

`dotshop relay`: the outbox relay plus the periodic jobs (the sweeper, the completer), in one
process.
`dotshop sync`: keeps the projection in step with Shopify by a periodic full load (webhooks do
the fast path; this catches anything a dropped webhook missed).

Every loop survives its failures (the database restarting, a provider down, a bug in one pass):
it logs the failure, waits a growing pause, and goes on; SIGINT/SIGTERM stop it between passes.
"""

from __future__ import annotations

import importlib
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from core import completer, relay, sweeper
from core.gc_pauses import freeze_startup_heap
from core.logs import get_logger
from core.metrics import WORKER_PASS_DURATION, WORKER_PASSES
from core.outbox import Handlers, RetryPolicy

log = get_logger("core.worker")

# Modules whose outbox handlers this relay runs (each has register_handlers(handlers)).
HANDLER_MODULES = ("core.payment_effects", "core.shopify_sync")
# A full catalog + stock reload; webhooks normally arrive within seconds, this is the safety net.
SYNC_INTERVAL_SECONDS = 60.0
# An idle relay wakes on NOTIFY; this poll only catches what sends no notification (a retry
# falling due, a dead relay's lease running out) or a lost listening connection.
RELAY_POLL_SECONDS = 2.0
# After a failed pass, wait this long, doubling up to the cap: a database restart or failover
# takes seconds, a provider outage minutes, and hammering either helps nobody.
FAILURE_PAUSE_FIRST_SECONDS = 0.5
FAILURE_PAUSE_CAP_SECONDS = 30.0


@dataclass(frozen=True)
class PeriodicJob:
    """A job the relay process runs beside the relay, each in its own thread:
    `run_once(engine)` every `interval_seconds` (a failure is logged and retried with backoff)."""

    name: str
    interval_seconds: float
    run_once: Callable[[Engine], Any]


# The relay process's periodic jobs; add one here to run it in every relay process.
PERIODIC_JOBS: tuple[PeriodicJob, ...] = (
    PeriodicJob("sweeper", sweeper.SWEEP_INTERVAL_SECONDS, sweeper.run_once),
    PeriodicJob("completer", completer.COMPLETER_INTERVAL_SECONDS, completer.run_from_settings),
)


def failure_pause(failures: int) -> float:
    """Seconds to wait after `failures` consecutive failed passes (>= 1)."""
    return min(FAILURE_PAUSE_CAP_SECONDS, FAILURE_PAUSE_FIRST_SECONDS * 2 ** (failures - 1))


def keep_running(
    name: str, step: Callable[[], bool], idle: Callable[[], object], stop: threading.Event
) -> None:
    """Call `step` until `stop` is set: again at once while it reports more work, `idle()` when
    it reports none; after a failure, log it and wait a growing pause. Never dies of an
    exception, so a worker outlives whatever it depends on. Each pass is counted and timed
    under `name` (the loop's RED metrics)."""
    failures = 0
    while not stop.is_set():
        started = time.perf_counter()
        try:
            busy = step()
        except Exception:
            WORKER_PASSES.labels(name, "error").inc()
            WORKER_PASS_DURATION.labels(name).observe(time.perf_counter() - started)
            failures += 1
            pause = failure_pause(failures)
            log.exception(f"{name}.failed", failures=failures, retry_in_seconds=pause)
            stop.wait(pause)
            continue
        WORKER_PASSES.labels(name, "ok").inc()
        WORKER_PASS_DURATION.labels(name).observe(time.perf_counter() - started)
        if failures:
            log.info(f"{name}.recovered", after_failures=failures)
            failures = 0
        if not busy:
            idle()


def install_stop_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGINT/SIGTERM set `stop` (the pass in hand finishes); returns the handlers they replace,
    to restore afterwards."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # signals only reach the main thread; an embedding caller owns `stop`

    def _stop(_signum: int, _frame: object) -> None:
        # Nothing else here: logging from a signal handler can deadlock on the log's own lock.
        stop.set()

    return {signum: signal.signal(signum, _stop) for signum in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def handlers_from(modules: Iterable[str]) -> Handlers:
    """The handlers each module registers (`register_handlers(handlers)`)."""
    handlers = Handlers()
    for name in modules:
        importlib.import_module(name).register_handlers(handlers)
    return handlers


def relay_loop(
    engine: Engine,
    handlers: Handlers,
    stop: threading.Event,
    *,
    poll_seconds: float = RELAY_POLL_SECONDS,
    policy: RetryPolicy | None = None,
    lease_seconds: float = relay.LEASE_SECONDS,
    batch: int = relay.BATCH_SIZE,
) -> None:
    """Deliver outbox messages until `stop`; idle on NOTIFY, polling every `poll_seconds`."""
    rng = random.Random()
    wakeup = relay.Wakeup(engine)

    def step() -> bool:
        return (
            relay.run_once(
                engine, handlers, batch=batch, policy=policy, rng=rng, lease_seconds=lease_seconds
            )
            > 0
        )

    log.info("relay.started", topics=sorted(handlers))
    try:
        keep_running("relay", step, lambda: wakeup.wait(poll_seconds, stop), stop)
    finally:
        wakeup.close()
    log.info("relay.stopped")


def _periodic(job: PeriodicJob, engine: Engine, stop: threading.Event) -> None:
    def step() -> bool:
        job.run_once(engine)
        return False

    keep_running(job.name, step, lambda: stop.wait(job.interval_seconds), stop)


def run_relay(
    *,
    once: bool = False,
    engine: Engine | None = None,
    handlers: Handlers | None = None,
    jobs: Iterable[PeriodicJob] = PERIODIC_JOBS,
    poll_seconds: float = RELAY_POLL_SECONDS,
    policy: RetryPolicy | None = None,
    lease_seconds: float = relay.LEASE_SECONDS,
) -> None:
    """The relay process. With `once`: run each job once, deliver everything due, return."""
    if engine is None:
        from core.db import database_url, engine_for

        engine = engine_for(database_url())
    handlers = handlers_from(HANDLER_MODULES) if handlers is None else handlers
    jobs = tuple(jobs)
    if once:
        for job in jobs:
            job.run_once(engine)
        while relay.run_once(engine, handlers, policy=policy, lease_seconds=lease_seconds):
            pass
        return
    freeze_startup_heap()
    stop = threading.Event()
    previous = install_stop_signals(stop)
    threads = [
        threading.Thread(target=_periodic, args=(job, engine, stop), name=job.name, daemon=True)
        for job in jobs
    ]
    for thread in threads:
        thread.start()
    try:
        relay_loop(
            engine,
            handlers,
            stop,
            poll_seconds=poll_seconds,
            policy=policy,
            lease_seconds=lease_seconds,
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        _restore_signals(previous)


def run_sync(
    *,
    once: bool = False,
    full: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> None:
    """The sync process: a repair now (full on first start or when asked: a bulk operation),
    then one every SYNC_INTERVAL_SECONDS of what changed since the last."""
    from core import shopify_sync
    from core.db import database_url, engine_for
    from core.settings import get_settings
    from core.shopify_gateway import ShopifyGateway

    settings = get_settings()
    engine = engine_for(database_url(settings))
    gateway = ShopifyGateway.from_settings(settings)
    pending_full = [full]

    def step() -> bool:
        shopify_sync.repair(
            engine, gateway, settings.selling_locations, full=pending_full[0], progress=progress
        )
        pending_full[0] = False
        return False

    if once:
        step()
        return
    freeze_startup_heap()
    stop = threading.Event()
    previous = install_stop_signals(stop)
    try:
        keep_running("sync", step, lambda: stop.wait(SYNC_INTERVAL_SECONDS), stop)
    finally:
        _restore_signals(previous)

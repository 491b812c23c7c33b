"""`dotshop checks run`: every check on its own interval, for as long as the process lives.

One loop: it runs the checks that are due (together, as one check run), then sleeps until the
next is due. A run that cannot even start (the database restarting) is retried with the
workers' growing pause (core.worker.keep_running); a check that fails inside a run (a provider
down) is recorded as an error and tried again at its next interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine

from checks.runner import load_checks, run_checks
from core.gc_pauses import freeze_startup_heap
from core.logs import get_logger
from core.settings import Settings
from core.worker import install_stop_signals, keep_running

log = get_logger("checks.scheduler")


def schedule(
    engine: Engine,
    settings: Settings,
    stop: threading.Event,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run each check every `interval_seconds` (all of them at once at start) until `stop`."""
    checks = load_checks()
    due = dict.fromkeys(checks, 0.0)

    def step() -> bool:
        started = clock()
        names = sorted(name for name, at in due.items() if at <= started)
        if names:
            run_checks(engine, settings, names=names)
            for name in names:
                due[name] = started + checks[name].interval_seconds
        return False

    def idle() -> None:
        stop.wait(max(0.0, min(due.values()) - clock()))

    log.info("checks.scheduler_started", checks={n: c.interval_seconds for n, c in checks.items()})
    keep_running("checks", step, idle, stop)
    log.info("checks.scheduler_stopped")


def run(engine: Engine, settings: Settings) -> None:
    """The checks process: schedule until SIGINT/SIGTERM."""
    freeze_startup_heap()
    stop = threading.Event()
    previous = install_stop_signals(stop)
    try:
        schedule(engine, settings, stop)
    finally:
        import signal

        for signum, handler in previous.items():
            signal.signal(signum, handler)

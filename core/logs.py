"""JSON logs with structlog. Context (request id, order id, idempotency key) travels in
contextvars; secrets are redacted by key name before anything is written."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

# Keys whose values never reach a log line, whatever logs them.
SECRET_KEY_NAMES = re.compile(
    r"(secret|password|token|api_key|authorization|client_secret|signature|card)", re.I
)
REDACTED = "[redacted]"


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if SECRET_KEY_NAMES.search(key):
            event[key] = REDACTED
    return event


class _CurrentStderr:
    """Whatever sys.stderr is at write time (test runners and daemons swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "INFO") -> None:
    """Configure structlog and stdlib logging to write one JSON object per line to stderr."""
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level.upper(), force=True)
    for noisy in ("uvicorn.access", "httpx", "stripe", "pyactiveresource"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.WriteLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)

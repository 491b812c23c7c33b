"""`/_sandbox/...`: the control API for tests and drills (no auth, never faulted)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from sandbox.stripe import balance, disputes, payments, payouts, refunds
from sandbox.stripe.account import Account
from sandbox.stripe.errors import ApiError
from sandbox.stripe.state import render

DEFAULT_WAIT_SECONDS = 30.0


def _body(headers: dict[str, str], raw: bytes) -> dict[str, Any]:
    """JSON, or a flat form (`outcome=succeed`), or nothing."""
    if not raw.strip():
        return {}
    if "json" in headers.get("content-type", "") or raw.lstrip().startswith(b"{"):
        try:
            data = json.loads(raw)
        except ValueError:
            raise ApiError.invalid("Body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise ApiError.invalid("Body must be a JSON object.")
        return data
    return dict(parse_qsl(raw.decode(), keep_blank_values=True))


def _choice(body: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = body.get(name)
    if value not in choices:
        raise ApiError.invalid(f"{name} must be one of {', '.join(choices)}", param=name)
    return value


async def handle(
    acct: Account, scope: dict, headers: dict[str, str], raw: bytes
) -> tuple[int, Any]:
    try:
        return 200, await _dispatch(acct, scope["method"], scope["path"], _body(headers, raw))
    except ApiError as error:
        return error.status, error.body()


async def _dispatch(acct: Account, method: str, path: str, body: dict[str, Any]) -> Any:
    tail = path[len("/_sandbox") :].rstrip("/")
    if (method, tail) == ("GET", "/health"):
        return {"status": "ok", "service": "stripe"}
    if (method, tail) == ("GET", "/faults"):
        return acct.faults.as_dict()
    if (method, tail) == ("POST", "/faults"):
        try:
            acct.faults.configure(**body)
        except (TypeError, ValueError) as exc:
            raise ApiError.invalid(str(exc)) from None
        return acct.faults.as_dict()
    if (method, tail) == ("POST", "/reset"):
        seed = body.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise ApiError.invalid("seed must be an integer", param="seed")
        acct.reset(seed)
        return {"reset": True, "seed": acct.faults.seed}
    if (method, tail) == ("GET", "/state"):
        state = acct.store.export()
        state["now"] = acct.clock.now()
        state["faults"] = acct.faults.as_dict()
        return state
    if (method, tail) == ("GET", "/webhooks"):
        return {"deliveries": acct.dispatcher.log(), "pending": acct.dispatcher.pending()}
    if (method, tail) == ("POST", "/webhooks/wait"):
        timeout = float(body.get("timeout", DEFAULT_WAIT_SECONDS))
        return {"idle": await asyncio.to_thread(acct.dispatcher.wait_idle, timeout)}
    if (method, tail) == ("POST", "/clock/advance"):
        seconds = body.get("seconds")
        if not isinstance(seconds, int | float) or seconds < 0:
            raise ApiError.invalid("seconds must be a number >= 0", param="seconds")
        acct.clock.advance(seconds)
        balance.settle(acct.store, acct.clock)
        return {"now": acct.clock.now()}
    if (method, tail) == ("POST", "/payouts/run"):
        return {"payouts": [render(p) for p in payouts.run_automatic(acct)]}
    if method == "POST" and (m := re.fullmatch(r"/events/([^/]+)/resend", tail)):
        queued = acct.events.resend(m[1], body.get("endpoint"))
        return {"event": m[1], "queued": queued}
    if method == "POST" and (m := re.fullmatch(r"/payment_intents/([^/]+)/authenticate", tail)):
        outcome = _choice(body, "outcome", ("succeed", "fail"))
        return render(payments.authenticate(acct, m[1], outcome))
    if method == "POST" and (m := re.fullmatch(r"/disputes/([^/]+)/resolve", tail)):
        outcome = _choice(body, "outcome", ("won", "lost", "warning_closed"))
        return render(disputes.resolve(acct, m[1], outcome))
    if method == "POST" and (m := re.fullmatch(r"/refunds/([^/]+)/fail", tail)):
        return render(refunds.fail_refund(acct, m[1], body.get("failure_reason") or "unknown"))
    raise ApiError(404, "invalid_request_error", f"Unknown sandbox route: {method} {path}")

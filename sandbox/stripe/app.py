"""The sandbox Stripe as a raw ASGI app: authentication, Stripe's form encoding, idempotency,
Stripe-shaped errors and headers around the operations in `routes`; `/_sandbox` is `control`."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from typing import Any

import orjson

from sandbox.asgi import read_body
from sandbox.faults import CONTROL_PREFIX, FaultMiddleware, Faults
from sandbox.options import SandboxOptions
from sandbox.stripe import control, routes
from sandbox.stripe.account import Account
from sandbox.stripe.errors import ApiError
from sandbox.stripe.events import API_VERSION, current_request
from sandbox.stripe.forms import get_list, parse_form
from sandbox.stripe.state import expand

log = logging.getLogger(__name__)

# `extra` fault knob: how long a POST holds its idempotency key before running, so a test can
# send a concurrent request with the same key and see Stripe's 409.
HOLD_KNOB = "stripe_processing_ms"

Headers = dict[str, str]


def _json(body: Any) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)


async def respond(send: Any, status: int, body: bytes, headers: Headers) -> None:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class StripeApp:
    def __init__(self, account: Account) -> None:
        self.account = account

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        if scope["path"].startswith(CONTROL_PREFIX):
            status, payload = await control.handle(self.account, scope, headers, body)
            await respond(send, status, _json(payload), {"content-type": "application/json"})
            return
        status, payload, out_headers = await self._api(scope, headers, body)
        await respond(send, status, payload, out_headers)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.account.dispatcher.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.account.cancel_timers()
                await asyncio.to_thread(self.account.dispatcher.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _api_key(self, headers: Headers) -> str:
        auth = headers.get("authorization", "")
        key = ""
        if auth.startswith("Bearer "):
            key = auth[len("Bearer ") :].strip()
        elif auth.startswith("Basic "):
            # curl -u sk_test_...: the key is the user name, the password is empty.
            try:
                key = base64.b64decode(auth[len("Basic ") :]).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                key = ""
        if not key:
            raise ApiError(
                401,
                "invalid_request_error",
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_"
                "SECRET_KEY').",
                stored=False,
            )
        if key != self.account.options.stripe_api_key:
            shown = key[:8] + "*" * max(0, len(key) - 12) + key[-4:]
            raise ApiError(
                401,
                "invalid_request_error",
                f"Invalid API Key provided: {shown}",
                stored=False,
            )
        return key

    async def _api(self, scope: dict, headers: Headers, body: bytes) -> tuple[int, bytes, Headers]:
        method = scope["method"]
        path = scope["path"]
        request_id = "req_" + secrets.token_hex(7)
        out: Headers = {
            "content-type": "application/json",
            "request-id": request_id,
            "stripe-version": headers.get("stripe-version", API_VERSION),
        }
        idem_key = headers.get("idempotency-key") if method == "POST" else None
        if idem_key:
            out["idempotency-key"] = idem_key
        api_key = None
        try:
            api_key = self._api_key(headers)
            handler, args = routes.match(method, path)
            params = parse_form(scope.get("query_string", b"").decode())
            if body:
                params.update(parse_form(body.decode()))
            if idem_key:
                stored = self.account.idempotency.begin(
                    api_key, idem_key, f"{method} {path}", params
                )
                if stored is not None:
                    replay = {
                        **stored.headers,
                        "idempotent-replayed": "true",
                        "original-request": stored.headers.get("request-id", ""),
                        "request-id": request_id,
                    }
                    return stored.status, stored.body, replay
        except ApiError as error:
            return error.status, _json(error.body()), {**out, **error.headers}

        status, payload, keep = await self._run(
            handler, args, params, headers, request_id, idem_key
        )
        if idem_key and api_key:
            if keep:
                self.account.idempotency.finish(api_key, idem_key, status, payload, out)
            else:
                self.account.idempotency.abandon(api_key, idem_key)
        return status, payload, out

    async def _run(
        self,
        handler: routes.Handler,
        args: dict[str, str],
        params: dict[str, Any],
        headers: Headers,
        request_id: str,
        idem_key: str | None,
    ) -> tuple[int, bytes, bool]:
        """Run one operation; returns status, body and whether idempotency keeps the result."""
        hold_ms = self.account.faults.config.extra.get(HOLD_KNOB, 0)
        if hold_ms and idem_key:
            await asyncio.sleep(hold_ms / 1000)
        token = current_request.set({"id": request_id, "idempotency_key": idem_key})
        try:
            call = routes.Call(self.account, params, args, headers.get("host", "127.0.0.1"))
            result = handler(call)
        except ApiError as error:
            return error.status, _json(error.body()), error.stored
        except Exception:
            log.exception("sandbox stripe: unexpected error")
            error = ApiError(500, "api_error", "An unexpected error occurred (sandbox bug).")
            return 500, _json(error.body()), True
        finally:
            current_request.reset(token)
        try:
            with self.account.store.lock:
                expand(self.account.store, result, get_list(params, "expand"))
        except ApiError as error:
            # The operation already ran: its outcome must be kept for the key, even this one.
            return error.status, _json(error.body()), True
        return 200, _json(result), True


def create_app(options: SandboxOptions) -> FaultMiddleware:
    """The sandbox Stripe ASGI app, wrapped in the shared fault middleware."""
    faults = Faults(options.seed, options.faults)
    return FaultMiddleware(StripeApp(Account(options, faults)), faults)

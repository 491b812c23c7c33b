"""The HTTP transport under the `stripe` SDK: libcurl (through pycurl), plugged in through the
SDK's documented extension point (a `stripe.HTTPClient` subclass given as `http_client`).

Everything Stripe-specific stays the SDK's: authentication, form encoding, the Idempotency-Key
header, retries with Stripe's backoff (on connection errors, 409, 5xx and `Stripe-Should-Retry`),
error objects. Only the wire changes. Measured against the sandbox, one PaymentIntent create
costs ~0.65 ms of client CPU through libcurl, ~1.1 ms through urllib3, ~1.6 ms through the SDK's
HTTPXClient and ~2.1 ms through its RequestsClient; every checkout makes one. (Bare, without the
SDK: libcurl 0.14 ms, urllib3 0.6 ms, most of it http.client parsing headers with `email`.)

The SDK ships a PycurlClient too, but it shares one handle between threads (the API calls Stripe
from several) and does not let the SDK retry a connection that broke before the answer came,
which is exactly the case its Idempotency-Key makes safe to retry.
"""

from __future__ import annotations

import io
import textwrap
import threading
from collections.abc import Mapping
from typing import Any, NoReturn

import pycurl
import stripe
from urllib3 import HTTPHeaderDict

# A certificate that does not verify will not verify on a retry either.
_NOT_RETRIED = frozenset({pycurl.E_SSL_CACERT, pycurl.E_PEER_FAILED_VERIFICATION})


class CurlClient(stripe.HTTPClient):
    name = "pycurl"

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout_ms = int(timeout * 1000)
        # One libcurl handle per thread (a handle is not shareable between threads); each keeps
        # its own connections alive between requests.
        self._local = threading.local()
        self._handles: list[pycurl.Curl] = []
        self._handles_lock = threading.Lock()

    def request(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        body, status, response_headers = self._send(method, url, headers, post_data)
        return body.getvalue(), status, response_headers

    def request_stream(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None
    ) -> tuple[Any, int, Mapping[str, str]]:
        return self._send(method, url, headers, post_data)

    def _handle(self) -> pycurl.Curl:
        handle = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._local.handle = pycurl.Curl()
            with self._handles_lock:
                self._handles.append(handle)
        return handle

    def _send(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any
    ) -> tuple[io.BytesIO, int, HTTPHeaderDict]:
        curl = self._handle()
        curl.reset()  # options only: the handle's open connections stay for the next request
        body = io.BytesIO()
        head = _Head()
        curl.setopt(pycurl.URL, url)
        if method == "get":
            curl.setopt(pycurl.HTTPGET, 1)
        elif method == "post":
            curl.setopt(pycurl.POST, 1)
            curl.setopt(pycurl.POSTFIELDS, post_data or "")
        else:
            curl.setopt(pycurl.CUSTOMREQUEST, method.upper())
        # An empty `Expect:` keeps libcurl from waiting for a 100 Continue on larger bodies.
        lines = [f"{name}: {value}" for name, value in (headers or {}).items()]
        curl.setopt(pycurl.HTTPHEADER, [*lines, "Expect:"])
        curl.setopt(pycurl.WRITEDATA, body)
        curl.setopt(pycurl.HEADERFUNCTION, head.line)
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.TIMEOUT_MS, self._timeout_ms)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, self._timeout_ms)
        curl.setopt(pycurl.CAINFO, stripe.ca_bundle_path)
        # No proxy taken from the environment: libcurl reads http_proxy and its kin by default,
        # and loopback calls to the sandbox must not leave through one.
        curl.setopt(pycurl.PROXY, "")
        try:
            curl.perform()
        except pycurl.error as exc:
            _connection_error(exc)
        body.seek(0)
        return body, curl.getinfo(pycurl.RESPONSE_CODE), head.headers

    def close(self) -> None:
        with self._handles_lock:
            for handle in self._handles:
                handle.close()
            self._handles.clear()
        self._local = threading.local()


class _Head:
    """The response's header lines as libcurl hands them over, one at a time, into the
    case-insensitive mapping the SDK reads ("Request-Id" and "request-id" alike). A new status
    line starts afresh, so only the final response's headers remain."""

    def __init__(self) -> None:
        self.headers = HTTPHeaderDict()

    def line(self, raw: bytes) -> None:
        text = raw.decode("latin-1")
        if text.startswith("HTTP/"):
            self.headers = HTTPHeaderDict()
            return
        name, colon, value = text.partition(":")
        if colon:
            self.headers.add(name.strip(), value.strip())


def _connection_error(exc: pycurl.error) -> NoReturn:
    """As the SDK's own clients report it: an APIConnectionError that the SDK may retry (every
    mutating call we make carries an idempotency key, so a retry is safe) unless the peer's
    certificate failed."""
    code, detail = exc.args[0], exc.args[1] if len(exc.args) > 1 else ""
    message = textwrap.fill(
        "Unexpected error communicating with Stripe. If this problem persists, let us know "
        "at support@stripe.com."
    )
    raise stripe.APIConnectionError(
        f"{message}\n\n(Network error: curl error {code}: {detail})",
        should_retry=code not in _NOT_RETRIED,
    ) from exc

"""The shared fault middleware and webhook dispatcher, seen through the sandbox Stripe: signed
deliveries that `stripe.Webhook.construct_event` accepts, retries, resend, and every fault knob."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import stripe

from sandbox.faults import Faults
from sandbox.options import DEFAULT_STRIPE_WEBHOOK_SECRET
from sandbox.webhooks import WebhookDispatcher
from tests.processes import start_sandbox
from tests.sandbox.stripe_support import API_KEY, Receiver, client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def _endpoint(sdk: stripe.StripeClient, url: str, events: list[str] | None = None):
    return sdk.v1.webhook_endpoints.create({"url": url, "enabled_events": events or ["*"]})


def _api(
    base: str, method: str = "GET", path: str = "/v1/balance", timeout: float = 30, **kw
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    return httpx.request(method, f"{base}{path}", headers=headers, timeout=timeout, **kw)


# --- webhooks -------------------------------------------------------------------------------


def test_deliveries_verify_with_construct_event_and_tampering_is_rejected(sdk, control, receiver):
    endpoint = _endpoint(sdk, receiver.url)
    assert endpoint.id.startswith("we_") and endpoint.secret.startswith("whsec_")
    pi = sdk.v1.payment_intents.create(
        {"amount": 900, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True},
        {"idempotency_key": "order-9"},
    )
    assert control.wait_webhooks()
    events = receiver.events(endpoint.secret)
    assert [e.type for e in events] == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
    ]
    succeeded = events[-1]
    assert succeeded.id.startswith("evt_") and succeeded.data.object.id == pi.id
    assert succeeded.data.object.status == "succeeded"  # the snapshot at that moment
    assert events[0].data.object.status == "requires_confirmation"
    assert succeeded.request.idempotency_key == "order-9" and succeeded.request.id.startswith(
        "req_"
    )
    assert sdk.v1.events.retrieve(succeeded.id).type == "payment_intent.succeeded"

    raw = receiver.received[-1]
    signature = raw.headers["Stripe-Signature"]
    assert signature.startswith("t=") and ",v1=" in signature
    tampered = raw.body.replace(b'"amount": 900', b'"amount": 1')
    assert tampered != raw.body
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, signature, endpoint.secret)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(raw.body, signature, "whsec_wrong")


def test_endpoint_crud_secret_shown_once_and_event_filter(sdk, control, receiver):
    wanted = _endpoint(sdk, receiver.url, ["payment_intent.canceled"])
    listed = sdk.v1.webhook_endpoints.list().data
    assert [e.id for e in listed] == [wanted.id]
    assert "secret" not in listed[0] and "secret" not in sdk.v1.webhook_endpoints.retrieve(
        wanted.id
    )
    pi = sdk.v1.payment_intents.create({"amount": 100, "currency": "usd"})
    sdk.v1.payment_intents.cancel(pi.id)
    assert control.wait_webhooks()
    assert [e.type for e in receiver.events(wanted.secret)] == ["payment_intent.canceled"]

    deleted = sdk.v1.webhook_endpoints.delete(wanted.id)
    assert deleted.deleted is True
    sdk.v1.payment_intents.cancel(
        sdk.v1.payment_intents.create({"amount": 1, "currency": "usd"}).id
    )
    assert control.wait_webhooks() and len(receiver.received) == 1


def test_failed_deliveries_are_retried_and_signed_anew(sdk, control):
    receiver = Receiver(fail_first=2)
    try:
        endpoint = _endpoint(sdk, receiver.url, ["payment_intent.created"])
        sdk.v1.payment_intents.create({"amount": 100, "currency": "usd"})
        assert control.wait_webhooks()
        events = receiver.events(endpoint.secret)  # each attempt verifies on its own
        assert len(events) == 3 and len({e.id for e in events}) == 1
        [delivery] = control.deliveries()
        assert delivery["attempts"] == 3 and delivery["responses"] == [500, 500, 200]
        assert delivery["status"] == "delivered"
    finally:
        receiver.close()


def test_invalid_endpoint_urls_are_rejected(sdk):
    for url in ("ftp://x.test/hook", "http://", "http://[::1"):
        with pytest.raises(stripe.InvalidRequestError) as info:
            _endpoint(sdk, url)
        assert info.value.param == "url"


def test_dispatcher_survives_an_unusable_url(receiver):
    """An endpoint URL httpx cannot even parse fails its attempts; the deliveries after it in
    its lane go on."""
    faults = Faults()
    dispatcher = WebhookDispatcher(faults)
    dispatcher.start()
    try:
        dispatcher.publish("http://[::1", b"{}", lambda body: {}, "evt_bad", lane="one")
        dispatcher.publish(
            receiver.url, b"{}", lambda body: {"X-Test": "1"}, "evt_good", lane="one"
        )
        receiver.wait_for(1)
        bad = next(d for d in dispatcher.log() if d["event_id"] == "evt_bad")
        assert bad["responses"][0] == "InvalidURL" and bad["status"] == "pending"
    finally:
        dispatcher.stop()


def test_resend_delivers_an_event_again(sdk, control, receiver):
    endpoint = _endpoint(sdk, receiver.url)
    sdk.v1.payment_intents.create({"amount": 100, "currency": "usd"})
    assert control.wait_webhooks()
    event_id = receiver.events(endpoint.secret)[0].id
    assert control.post(f"/events/{event_id}/resend").json() == {"event": event_id, "queued": 1}
    assert control.wait_webhooks()
    assert [e.id for e in receiver.events(endpoint.secret)] == [event_id, event_id]
    assert control.post("/events/evt_missing/resend").status_code == 404


def test_configured_endpoint_from_the_command_line(tmp_path, receiver):
    proc = start_sandbox(str(tmp_path / "sb.log"), "--stripe-webhook-url", receiver.url)
    try:
        sdk = client(proc.urls["stripe"])
        sdk.v1.payment_intents.create({"amount": 100, "currency": "usd"})
        receiver.wait_for(1)
        [event] = receiver.events(DEFAULT_STRIPE_WEBHOOK_SECRET)
        assert event.type == "payment_intent.created"
        assert [e.url for e in sdk.v1.webhook_endpoints.list().data] == [receiver.url]
    finally:
        proc.stop()


def test_configured_endpoint_receives_only_its_enabled_events(tmp_path, receiver):
    """Stripe sends an endpoint only the event types in its `enabled_events`: a PaymentIntent
    created and confirmed makes payment_intent.created, charge.succeeded and
    payment_intent.succeeded, and an endpoint enabled for the last one receives that one."""
    proc = start_sandbox(
        str(tmp_path / "sb.log"),
        "--stripe-webhook-url",
        receiver.url,
        "--stripe-webhook-event",
        "payment_intent.succeeded",
    )
    try:
        sdk = client(proc.urls["stripe"])
        pi = sdk.v1.payment_intents.create(
            {"amount": 100, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
        )
        receiver.wait_for(1)
        time.sleep(0.3)  # any other delivery would have arrived by now
        [event] = receiver.events(DEFAULT_STRIPE_WEBHOOK_SECRET)
        assert (event.type, event.data.object.id) == ("payment_intent.succeeded", pi.id)
        types = {e.type for e in sdk.v1.events.list({"limit": 10}).data}
        assert {"payment_intent.created", "charge.succeeded"} <= types  # made, not sent
        [endpoint] = sdk.v1.webhook_endpoints.list().data
        assert endpoint.enabled_events == ["payment_intent.succeeded"]
    finally:
        proc.stop()


def test_duplicate_drop_reorder_and_delay(sdk, control, receiver):
    endpoint = _endpoint(sdk, receiver.url, ["payment_intent.created"])

    def created(n: int) -> list[str]:
        return [
            sdk.v1.payment_intents.create({"amount": 100 + i, "currency": "usd"}).id
            for i in range(n)
        ]

    control.faults(webhook_duplicate_rate=1.0)
    created(2)
    assert control.wait_webhooks()
    ids = [e.id for e in receiver.events(endpoint.secret)]
    assert len(ids) == 4 and len(set(ids)) == 2

    receiver.received.clear()
    control.faults(webhook_duplicate_rate=0.0, webhook_drop_rate=1.0)
    created(2)
    assert control.wait_webhooks() and receiver.received == []
    assert [d["status"] for d in control.deliveries()[-2:]] == ["dropped", "dropped"]

    control.faults(webhook_drop_rate=0.0, webhook_reorder=True)
    pis = created(8)
    assert control.wait_webhooks()
    got = [e.data.object.id for e in receiver.events(endpoint.secret)]
    assert sorted(got) == sorted(pis) and got != pis

    receiver.received.clear()
    control.faults(webhook_reorder=False, webhook_delay_ms=400)
    started = time.monotonic()
    created(1)
    receiver.wait_for(1)
    assert time.monotonic() - started >= 0.4


# --- request faults -------------------------------------------------------------------------


def test_error_before_has_no_effect_and_after_has_effect(base, control):
    control.faults(error_rate=1.0, error_status=503)
    response = _api(base, "POST", "/v1/payment_intents", data={"amount": 5, "currency": "usd"})
    assert response.status_code == 503 and response.json()["error"]["type"] == "api_error"
    assert control.state()["counts"]["payment_intents"] == 0
    assert httpx.get(f"{base}/_sandbox/health").status_code == 200  # control is never faulted

    control.faults(error_status=500, error_phase="after")
    response = _api(base, "POST", "/v1/payment_intents", data={"amount": 5, "currency": "usd"})
    assert response.status_code == 500
    assert control.state()["counts"]["payment_intents"] == 1  # it happened; the answer was lost


def test_rate_limit_429_with_retry_after(base, control):
    control.faults(error_rate=1.0, error_status=429)
    response = _api(base)
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    with pytest.raises(stripe.RateLimitError):
        client(base).v1.balance.retrieve()


def test_latency_timeout_and_path_prefix(base, control):
    control.faults(latency_ms=300)
    started = time.monotonic()
    assert _api(base).status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    httpx.get(f"{base}/_sandbox/health")
    assert time.monotonic() - started < 0.3

    control.faults(latency_ms=0, timeout_rate=1.0, timeout_seconds=0.3, path_prefix="/v1/charges")
    assert _api(base).status_code == 200  # outside the prefix
    started = time.monotonic()
    assert _api(base, path="/v1/charges").status_code == 504
    assert time.monotonic() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        _api(base, path="/v1/charges", timeout=0.1)


def test_faults_are_deterministic_by_seed(base, control):
    def pattern(seed: int) -> list[int]:
        control.reset(seed=seed)
        control.faults(error_rate=0.5)
        return [_api(base).status_code for _ in range(16)]

    first = pattern(7)
    assert set(first) == {200, 500}
    assert pattern(7) == first
    assert pattern(8) != first


def test_control_api(base, control, sdk, receiver):
    assert control.http.get("/_sandbox/faults").json()["error_rate"] == 0.0
    assert control.post("/faults", error_rate=2).status_code == 400
    assert control.post("/faults", nonsense=1).status_code == 400
    control.faults(error_rate=0.1, webhook_delay_ms=5)
    assert control.http.get("/_sandbox/faults").json()["webhook_delay_ms"] == 5

    _endpoint(sdk, receiver.url)
    pi = sdk.v1.payment_intents.create({"amount": 100, "currency": "usd"})
    assert control.wait_webhooks()
    state = control.state()
    assert state["payment_intents"][0]["id"] == pi.id and state["counts"]["events"] == 1
    assert "_authenticated" not in state["payment_intents"][0]
    assert len(control.deliveries()) == 1

    control.reset(seed=3)
    state = control.state()
    assert all(n == 0 for n in state["counts"].values())
    assert state["faults"]["error_rate"] == 0.0 and state["faults"]["seed"] == 3
    assert control.deliveries() == []
    with pytest.raises(stripe.InvalidRequestError):
        sdk.v1.payment_intents.retrieve(pi.id)

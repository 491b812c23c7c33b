"""Operator API under /admin/v1: bearer `admin_token`, compared in constant time."""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any

import anyio
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.orm import Session

from checkout_api.checkouts import ERRORS, KeyHeader, order_out
from checkout_api.deps import Ctx
from checkout_api.idempotent import require_key, to_response
from checkout_api.schemas import ErrorBody, OrderOut, RefundCreate
from checks.runner import RunResult, run_checks
from core import orders, refunds, relay, violations
from core.db import transaction
from core.errors import NotFound, Unauthorized
from core.models import Violation


class OutboxAction(msgspec.Struct):
    """Why an operator acts on a dead letter (kept in the audit log)."""

    reason: str | None = None


class OutboxList(msgspec.Struct):
    data: list[relay.OutboxView]


class ViolationOut(msgspec.Struct):
    """A broken business invariant: which check, about what, the money at stake (minor units of
    `currency`; null when the check cannot price it) and what the check saw."""

    id: str
    check: str
    subject: str
    amount: int | None
    currency: str | None
    first_seen: datetime
    last_seen: datetime
    resolved_at: datetime | None
    evidence: dict[str, Any]


class ViolationList(msgspec.Struct):
    """A page of violations; `has_more`: pass the last id as `starting_after` for the next."""

    data: list[ViolationOut]
    has_more: bool


class CheckRunOut(msgspec.Struct):
    """One run of the checks: `status` ok, violations or error; per check its counts
    (`open`, `opened`, `resolved`) or the `error` that stopped it; its open violations."""

    id: str
    status: str
    results: dict[str, dict[str, Any]]
    violations: list[ViolationOut]


def violation_out(v: Violation) -> ViolationOut:
    return ViolationOut(
        id=v.id,
        check=v.check_name,
        subject=v.subject,
        amount=v.amount_minor,
        currency=v.currency,
        first_seen=v.first_seen,
        last_seen=v.last_seen,
        resolved_at=v.resolved_at,
        evidence=v.evidence,
    )


def run_out(run: RunResult) -> CheckRunOut:
    return CheckRunOut(
        id=run.run_id,
        status=run.status,
        results=run.results,
        violations=[violation_out(v) for v in run.violations],
    )


def require_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    token = connection.app.state.ctx.settings.admin_token
    header = connection.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if (
        token is None
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(presented.encode(), token.get_secret_value().encode())
    ):
        raise Unauthorized("a valid admin bearer token is required")


def actor(request: Request) -> str:
    """Who is acting, for the audit log (the token is shared; callers may name themselves)."""
    return request.headers.get("x-dotshop-actor", "admin")[:100]


class AdminController(Controller):
    path = "/admin/v1"
    guards = [require_admin]
    tags = ["admin"]

    @get("/orders/{order_id:str}", sync_to_thread=True, summary="Look up an order")
    def order(self, order_id: FromPath[str], ctx: Ctx) -> OrderOut:
        with Session(ctx.engine) as session:
            return order_out(orders.view(session, order_id))

    @post(
        "/orders/{order_id:str}/refunds",
        status_code=202,
        summary="Refund an order (full when amount is omitted); sent to Stripe via the outbox",
        responses={401: ResponseSpec(ErrorBody, description="unauthorized"), **ERRORS},
    )
    async def refund(
        self,
        request: Request,
        order_id: FromPath[str],
        ctx: Ctx,
        idempotency_key: KeyHeader,
        data: JSONBody[RefundCreate | None] = None,
    ) -> Response[bytes]:
        key = require_key(idempotency_key)
        body = await request.body()
        refund = data or RefundCreate()
        outcome = await anyio.to_thread.run_sync(
            lambda: refunds.request_refund(
                ctx.engine,
                ctx.settings,
                order_id=order_id,
                amount=refund.amount,
                reason=refund.reason,
                idempotency_key=key,
                body=body,
                actor=actor(request),
            )
        )
        return to_response(outcome)

    @get("/outbox", sync_to_thread=True, summary="List outbox messages (dead letters by default)")
    def list_outbox(
        self, ctx: Ctx, status: FromQuery[str] = "dead", limit: FromQuery[int] = 100
    ) -> OutboxList:
        with Session(ctx.engine) as session:
            views = relay.list_messages(session, status, limit)
        return OutboxList(views)

    @post(
        "/outbox/{public_id:str}/retry",
        status_code=200,
        sync_to_thread=True,
        summary="Retry a dead-lettered outbox message",
    )
    def retry_outbox(
        self,
        request: Request,
        public_id: FromPath[str],
        ctx: Ctx,
        data: JSONBody[OutboxAction | None] = None,
    ) -> dict[str, str]:
        reason = data.reason if data else None
        with transaction(ctx.engine) as session:
            if not relay.retry_dead(session, public_id, actor=actor(request), reason=reason):
                raise NotFound(f"no dead outbox message {public_id}", param="public_id")
        return {"id": public_id, "status": "pending"}

    @post(
        "/outbox/{public_id:str}/discard",
        status_code=200,
        sync_to_thread=True,
        summary="Discard a dead-lettered outbox message (a reason is required); it stops "
        "blocking its key",
    )
    def discard_outbox(
        self, request: Request, public_id: FromPath[str], ctx: Ctx, data: JSONBody[OutboxAction]
    ) -> dict[str, str]:
        with transaction(ctx.engine) as session:
            if not relay.discard_dead(session, public_id, actor=actor(request), reason=data.reason):
                raise NotFound(f"no dead outbox message {public_id}", param="public_id")
        return {"id": public_id, "status": "discarded"}

    @post(
        "/checks/run",
        status_code=200,
        sync_to_thread=True,
        summary="Run every invariant check now; returns the run with its open violations",
        responses={401: ResponseSpec(ErrorBody, description="unauthorized")},
    )
    def run_checks_now(self, ctx: Ctx) -> CheckRunOut:
        return run_out(run_checks(ctx.engine, ctx.settings))

    @get(
        "/violations",
        sync_to_thread=True,
        summary="List violations, newest first: open, resolved, or both when status is omitted; "
        "paged with limit (1-1000) and starting_after (the last id of the previous page)",
        responses={
            404: ResponseSpec(ErrorBody, description="starting_after names no violation"),
            422: ResponseSpec(ErrorBody, description="unknown status, or limit out of range"),
            401: ResponseSpec(ErrorBody, description="unauthorized"),
        },
    )
    def list_violations(
        self,
        ctx: Ctx,
        status: FromQuery[str | None] = None,
        limit: FromQuery[int] = 100,
        starting_after: FromQuery[str | None] = None,
    ) -> ViolationList:
        with Session(ctx.engine) as session:
            found, more = violations.page(
                session, status=status, limit=limit, starting_after=starting_after
            )
            return ViolationList([violation_out(v) for v in found], more)

"""Operator API under /admin/v1: bearer `admin_token`, compared in constant time."""

from __future__ import annotations

import hmac
from typing import Any

import anyio
from litestar import Controller, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody
from sqlalchemy.orm import Session

from checkout_api.checkouts import ERRORS, KeyHeader, order_out
from checkout_api.deps import Ctx
from checkout_api.idempotent import require_key, to_response
from checkout_api.schemas import ErrorBody, OrderOut, RefundCreate
from core import audit, orders, refunds, relay
from core.db import transaction
from core.errors import NotFound, Unauthorized


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

    @post(
        "/outbox/{public_id:str}/retry",
        status_code=200,
        sync_to_thread=True,
        summary="Retry a dead-lettered outbox message",
    )
    def retry_outbox(self, request: Request, public_id: FromPath[str], ctx: Ctx) -> dict[str, str]:
        with transaction(ctx.engine) as session:
            if not relay.retry_dead(session, public_id):
                raise NotFound(f"no dead outbox message {public_id}", param="public_id")
            audit.record(session, actor=actor(request), action="outbox.retry", subject=public_id)
        return {"id": public_id, "status": "pending"}

"""Who is calling and how they pay: an API key (with credit), Livepeer tickets (ETH deposit),
the auth webhook, or the admin token."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.errors import AuthFailed, BadRequest, Forbidden
from gateway.ethpay import TicketPayment
from gateway.payments import CreditPayment, ExternalPayment, PaymentMethod
from gateway.state import GatewayState
from gateway.webhook import WebhookDecision

__all__ = [
    "AdminCaller",
    "Caller",
    "KeyCaller",
    "authorise",
    "bearer",
    "payment_for",
    "state_of",
]


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: a key id, or None for a webhook-authorised stream."""

    key_id: str | None
    #: "credit" (API key), "tickets" (ETH deposit, Livepeer-Payment) or "external" (webhook).
    pays_with: str = "credit"
    #: Ticket payers: the price (wei per pixel) quoted in the params they paid with.
    price_per_pixel: Fraction | None = None


def state_of(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def bearer(request: Request) -> str | None:
    """The bearer token of the request, if any."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        return None
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthFailed("Authorization must be 'Bearer <API key>'")
    return token.strip()


def authorise(
    state: GatewayState, request: Request, stream_id: str | None = None
) -> tuple[Caller, WebhookDecision | None]:
    """The caller of a job request, counted against its rate limit.

    A bearer API key pays from its credit; a ``Livepeer-Payment`` header credits the ticket
    sender's balance first; otherwise the auth webhook decides (keyed by ``stream_id``, the
    request URL when none), and the job is billed outside the gateway.
    """
    token = bearer(request)
    if token is not None:
        key_id = state.ledger.authenticate(token)
        state.limiter.hit(key_id)
        return Caller(key_id), None
    payment_header = request.headers.get("livepeer-payment")
    if payment_header is not None:
        if state.eth is None:
            raise BadRequest("this gateway takes no ticket payments (no chain configured)")
        credited = state.eth.receive(payment_header)
        state.limiter.hit(credited.key_id)
        return Caller(credited.key_id, "tickets", credited.price_per_pixel), None
    if state.webhook is None:
        raise AuthFailed("missing API key: send Authorization: Bearer <key>")
    url = str(request.url)
    decision = state.webhook.check(url, stream_id or url)
    state.limiter.hit(f"stream:{decision.manifest_id}")
    return Caller(None, "external"), decision


def payment_for(state: GatewayState, caller: Caller) -> PaymentMethod:
    """How ``caller``'s jobs are paid: ticket-funded balance, API-key credit, or externally."""
    if caller.key_id is None:
        return ExternalPayment()
    if caller.pays_with == "tickets":
        return TicketPayment(state.ledger, caller.key_id)
    return CreditPayment(state.ledger, caller.key_id)


#: The OpenAPI security schemes; the routes read the header themselves (:func:`bearer`).
_api_key = HTTPBearer(
    scheme_name="apiKey", description="An API key (farm keys create)", auto_error=False
)
_admin_token = HTTPBearer(
    scheme_name="adminToken", description="The admin token (FARM_ADMIN_TOKEN)", auto_error=False
)
_Documented = HTTPAuthorizationCredentials | None


def _key_caller(request: Request, _: Annotated[_Documented, Depends(_api_key)]) -> Caller:
    token = bearer(request)
    if token is None:
        raise AuthFailed("missing API key: send Authorization: Bearer <key>")
    state = state_of(request)
    key_id = state.ledger.authenticate(token)
    state.limiter.hit(key_id)
    return Caller(key_id)


def _admin(request: Request, _: Annotated[_Documented, Depends(_admin_token)]) -> None:
    token = bearer(request)
    expected = state_of(request).settings.admin_token.get_secret_value()
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Forbidden("admin token required")


KeyCaller = Annotated[Caller, Depends(_key_caller)]
AdminCaller = Annotated[None, Depends(_admin)]

"""Who is calling: an API key (with credit), the auth webhook, or the admin token."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated

from fastapi import Depends, Request

from gateway.errors import AuthFailed, Forbidden
from gateway.state import GatewayState

__all__ = ["AdminCaller", "Caller", "KeyCaller", "bearer", "state_of"]


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


def _key_caller(request: Request) -> Caller:
    token = bearer(request)
    if token is None:
        raise AuthFailed("missing API key: send Authorization: Bearer <key>")
    state = state_of(request)
    key_id = state.ledger.authenticate(token)
    state.limiter.hit(key_id)
    return Caller(key_id)


def _admin(request: Request) -> None:
    token = bearer(request)
    expected = state_of(request).settings.admin_token.get_secret_value()
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Forbidden("admin token required")


KeyCaller = Annotated[Caller, Depends(_key_caller)]
AdminCaller = Annotated[None, Depends(_admin)]

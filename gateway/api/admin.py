"""Admin endpoints (Bearer admin token): keys, credit, sessions, orchestrators."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from gateway.api.body import JSON_LIMIT, PRINTABLE, SessionId
from gateway.api.responses import errors
from gateway.auth import AdminCaller, state_of
from gateway.errors import BadRequest
from gateway.ledger import MAX_BALANCE, KeyInfo

__all__ = ["router"]

router = APIRouter(prefix="/admin", max_body_size=JSON_LIMIT)
#: Key ids are hex (``Ledger.create_key``); anything else is refused before the database.
KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$")]
#: What any admin route may answer: a malformed or missing token, or the database down.
_ADMIN = (401, 403, 503)


class NewKey(BaseModel):
    name: str = Field(min_length=1, max_length=128, pattern=PRINTABLE)
    credits: int = Field(0, ge=0, le=MAX_BALANCE)


class TopUp(BaseModel):
    amount: int = Field(gt=0, le=MAX_BALANCE)
    idempotency_key: str | None = Field(None, max_length=128, pattern=PRINTABLE)


def _info(k: KeyInfo) -> dict[str, Any]:
    return {
        "id": k.id,
        "name": k.name,
        "balance": k.balance,
        "revoked": k.revoked,
        "created_at": k.created_at.isoformat(),
    }


@router.post("/keys", responses=errors(400, 413, *_ADMIN))
def create_key(body: NewKey, _: AdminCaller, request: Request) -> dict[str, Any]:
    """Create an API key; the key itself is shown only in this response."""
    raw, info = state_of(request).ledger.create_key(body.name, body.credits)
    return {**_info(info), "key": raw}


@router.get("/keys", responses=errors(*_ADMIN))
def list_keys(_: AdminCaller, request: Request) -> list[dict[str, Any]]:
    """Every key with its balance."""
    return [_info(k) for k in state_of(request).ledger.list_keys()]


@router.post("/keys/{key_id}/topup", responses=errors(400, 404, 413, *_ADMIN))
def topup(key_id: KeyId, body: TopUp, _: AdminCaller, request: Request) -> dict[str, Any]:
    """Add credit to a key (idempotent with an idempotency key)."""
    return _info(state_of(request).ledger.topup(key_id, body.amount, body.idempotency_key))


@router.post("/keys/{key_id}/revoke", responses=errors(400, 404, *_ADMIN))
def revoke(key_id: KeyId, _: AdminCaller, request: Request) -> dict[str, Any]:
    """Revoke a key; it is refused from then on."""
    return _info(state_of(request).ledger.revoke(key_id))


@router.get("/sessions", responses=errors(*_ADMIN))
def sessions(_: AdminCaller, request: Request) -> list[dict[str, Any]]:
    """The most recent sessions."""
    return state_of(request).sessions.recent()


@router.get("/sessions/{session_id}", responses=errors(400, 404, *_ADMIN))
def session(session_id: SessionId, _: AdminCaller, request: Request) -> dict[str, Any]:
    """Any session's attempt log."""
    return state_of(request).sessions.get(session_id)


@router.get("/orchestrators", responses=errors(401, 403))
def orchestrators(_: AdminCaller, request: Request) -> list[dict[str, object]]:
    """The pool: health, suspension, capacity, EWMAs and score of every orchestrator."""
    state = state_of(request)
    return [o.state(state.pool.region) for o in state.pool.orchestrators]


class PriceBody(BaseModel):
    price_per_unit: int = Field(ge=0)
    pixels_per_unit: int = Field(1, gt=0)


def _price(request: Request) -> dict[str, Any]:
    eth = state_of(request).eth
    if eth is None:
        raise BadRequest("this gateway takes no ticket payments (no chain configured)")
    price = eth.price_per_pixel
    return {"price_per_unit": price.numerator, "pixels_per_unit": price.denominator}


@router.get("/price", responses=errors(400, 401, 403))
def get_price(_: AdminCaller, request: Request) -> dict[str, Any]:
    """The price quoted to ticket payers: wei per pixels_per_unit encoded pixels."""
    return _price(request)


@router.put("/price", responses=errors(400, 401, 403, 413))
def set_price(body: PriceBody, _: AdminCaller, request: Request) -> dict[str, Any]:
    """Quote a new ticket price in params issued from now on (livepeer_cli's price setting)."""
    eth = state_of(request).eth
    if eth is None:
        raise BadRequest("this gateway takes no ticket payments (no chain configured)")
    eth.set_price(body.price_per_unit, body.pixels_per_unit)
    return _price(request)

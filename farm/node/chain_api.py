"""The staking operations of ``farm chain`` on the node API, for remote use.

Every route needs ``Authorization: Bearer <FARM_ADMIN_TOKEN>``: they move the orchestrator's
stake and money. Amounts are integers in wei, percentages floats in 0-100. Errors answer
``{"error": {"message": ...}}``: 400 for a bad argument, 422 for a malformed body, 401 without
the token, 409 when the contract refuses (revert, failed transaction, no key), 503 when the
chain is off or down.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from farm.errors import ConfigError
from farm.settings import NodeSettings

__all__ = ["PREFIX", "chain_router", "error_response", "install", "is_chain_route"]

#: Where the staking routes live on the node API.
PREFIX = "/chain"


class Amount(BaseModel):
    amount_wei: int = Field(gt=0)


class Bond(Amount):
    #: The orchestrator to bond to (default: the node's own address).
    to: str | None = Field(None, pattern=r"^0x[0-9a-fA-F]{40}$")


class Lock(BaseModel):
    lock_id: int = Field(ge=0)


class Fees(BaseModel):
    amount_wei: int | None = Field(None, gt=0)


class Terms(BaseModel):
    reward_cut: float = Field(ge=0, le=100)
    fee_share: float = Field(ge=0, le=100)


class Deposit(BaseModel):
    deposit_wei: int = Field(ge=0)
    reserve_wei: int = Field(0, ge=0)


class ServiceURI(BaseModel):
    #: ``https://HOST:PORT``, checked by chain.service_uri (400 otherwise).
    uri: str


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str) -> JSONResponse:
    """These routes' error body: ``{"error": {"message": ...}}``."""
    return JSONResponse({"error": {"message": message}}, status_code=status)


def is_chain_route(request: Request) -> bool:
    """Whether ``request`` is for one of these routes (their errors have their own body)."""
    return request.url.path.startswith(PREFIX + "/")


def _admin(request: Request) -> None:
    settings: NodeSettings = request.app.state.node_settings
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    expected = settings.admin_token.get_secret_value()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
        raise _Refused(401, "admin token required")


Admin = Annotated[None, Depends(_admin)]


def chain_router(settings: NodeSettings) -> APIRouter:
    """``/chain/...`` routes over the node's chain client (built on first use)."""
    router = APIRouter(prefix=PREFIX)
    holder: dict[str, Any] = {}

    def staking() -> Any:
        if "staking" not in holder:
            from chain.staking import Staking
            from farm.chainconf import chain_client

            try:
                client = chain_client(settings.chain())
            except ConfigError as e:
                raise _Refused(503, str(e)) from e
            if client is None:
                raise _Refused(503, "no chain configured (FARM_ETH_RPC_URL): the node is off-chain")
            holder["staking"] = Staking(client)
        return holder["staking"]

    def run(op: Callable[[Any], Any]) -> Any:
        from chain.client import ChainUnavailable, GasPriceTooHigh
        from chain.errors import ChainError
        from chain.staking import InvalidArgument, TxResult

        try:
            result = op(staking())
        except InvalidArgument as e:
            raise _Refused(400, str(e)) from e
        except (ChainUnavailable, GasPriceTooHigh) as e:
            raise _Refused(503, str(e)) from e
        except ChainError as e:
            raise _Refused(409, str(e)) from e
        if isinstance(result, TxResult):
            return {"transactions": [result.to_dict()]}
        if isinstance(result, list):
            return {"transactions": [t.to_dict() for t in result]}
        return result

    @router.get("/status")
    def status(_: Admin) -> Any:
        """Round, stake, terms, fees, deposit and reserve of the node's account."""
        return run(lambda s: s.status())

    @router.get("/round")
    def round_(_: Admin) -> Any:
        """The current round, whether it is initialized, and the round length."""
        return run(lambda s: s.round())

    @router.post("/round/initialize")
    def initialize(_: Admin) -> Any:
        """Initialize the current round."""
        return run(lambda s: s.initialize_round())

    @router.post("/reward")
    def reward(_: Admin) -> Any:
        """Claim this round's reward (once per round)."""
        return {"result": run(lambda s: s.reward())}

    @router.post("/bond")
    def bond(body: Bond, _: Admin) -> Any:
        """Approve and bond LPT."""
        return run(lambda s: s.bond(body.amount_wei, body.to))

    @router.post("/unbond")
    def unbond(body: Amount, _: Admin) -> Any:
        """Unbond LPT; an unbonding lock starts."""
        return run(lambda s: s.unbond(body.amount_wei))

    @router.post("/rebond")
    def rebond(body: Lock, _: Admin) -> Any:
        """Rebond an unbonding lock."""
        return run(lambda s: s.rebond(body.lock_id))

    @router.post("/withdraw-stake")
    def withdraw_stake(body: Lock, _: Admin) -> Any:
        """Withdraw an unbonded lock's LPT."""
        return run(lambda s: s.withdraw_stake(body.lock_id))

    @router.post("/withdraw-fees")
    def withdraw_fees(body: Fees, _: Admin) -> Any:
        """Withdraw earned fees (all of them by default)."""
        return run(lambda s: s.withdraw_fees(body.amount_wei))

    @router.post("/config")
    def config(body: Terms, _: Admin) -> Any:
        """Set the reward cut and fee share."""
        return run(lambda s: s.config(body.reward_cut, body.fee_share))

    @router.post("/deposit")
    def deposit(body: Deposit, _: Admin) -> Any:
        """Fund the ticket deposit and reserve."""
        return run(lambda s: s.deposit(body.deposit_wei, body.reserve_wei))

    @router.post("/reserve")
    def reserve(body: Amount, _: Admin) -> Any:
        """Add to the reserve."""
        return run(lambda s: s.reserve(body.amount_wei))

    @router.post("/service-uri")
    def service_uri(body: ServiceURI, _: Admin) -> Any:
        """Advertise the node's service URI in the ServiceRegistry."""
        from chain.service_uri import InvalidServiceURI, parse

        try:
            parse(body.uri)  # refused as a bad argument even on an off-chain node
        except InvalidServiceURI as e:
            raise _Refused(400, str(e)) from e
        return run(lambda s: s.set_service_uri(body.uri))

    @router.post("/unlock")
    def unlock(_: Admin) -> Any:
        """Start unlocking the deposit and reserve."""
        return run(lambda s: s.unlock())

    @router.post("/withdraw")
    def withdraw(_: Admin) -> Any:
        """Withdraw an unlocked deposit and reserve."""
        return run(lambda s: s.withdraw())

    return router


def install(api: FastAPI, settings: NodeSettings) -> None:
    """Mount the routes on ``api`` with their error mapping."""
    api.state.node_settings = settings
    api.include_router(chain_router(settings))

    @api.exception_handler(_Refused)
    def _refused(_: Request, e: _Refused) -> JSONResponse:
        return error_response(e.status, str(e))

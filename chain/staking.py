"""livepeer_cli's operations, once: read the account's state, stake, set terms, fund tickets.

``farm chain …`` (the CLI) and the node API's ``/chain/…`` routes (the same operations for
remote use, behind the admin token) both call :class:`Staking`; neither talks to contracts
itself. Amounts are integers in wei (LPT and ETH both have 18 decimals); percentages are
floats in 0-100 and go on chain in Livepeer's parts-per-million (``10000`` = 1 %).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

from chain.client import (
    ChainClient,
    ContractNotRegistered,
    ContractReverted,
    NoSigningKey,
    TransactionFailed,
    parse_address,
)
from chain.errors import ChainError
from chain.reward import RewardService
from chain.service_uri import InvalidServiceURI

__all__ = ["PERC_DIVISOR", "InsufficientBalance", "InvalidArgument", "Staking", "TxResult"]

#: Livepeer's percentages are integers out of 1,000,000 (MathUtils.PERC_DIVISOR).
PERC_DIVISOR: Final = 1_000_000
#: Explicit gas limits for the staking calls: their estimates can move with the pool.
STAKING_GAS: Final = 1_000_000
#: The contracts' amounts and lock ids are uint256.
UINT256_LIMIT: Final = 2**256
#: LPT and ETH both have 18 decimals.
DECIMALS: Final = 18


class InvalidArgument(ChainError):
    """Raised when a staking operation gets an amount, address, lock id or percentage that
    the contracts would refuse; nothing is sent."""


class InsufficientBalance(ChainError):
    """Raised when the account holds less than an operation would spend; nothing is sent."""


@dataclass(frozen=True, slots=True)
class TxResult:
    """One mined transaction: what it called, its hash and the gas it used."""

    op: str
    tx: str
    gas_used: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.op}: ok (tx {self.tx}, gas {self.gas_used})"


def _positive(name: str, value: int) -> int:
    if value <= 0:
        raise InvalidArgument(f"{name} must be positive, got {value}")
    if value >= UINT256_LIMIT:
        raise InvalidArgument(f"{name} {value} wei does not fit a uint256")
    return value


def _lock_id(lock_id: int) -> int:
    if not 0 <= lock_id < UINT256_LIMIT:
        raise InvalidArgument(f"unbonding lock id must be >= 0 and fit a uint256, got {lock_id}")
    return lock_id


def _address(name: str, value: str) -> str:
    """``value`` checksummed; InvalidArgument when it is not a non-zero address."""
    try:
        checksummed = parse_address(value)
    except ValueError as e:
        raise InvalidArgument(f"{name}: {e}") from None
    if int(checksummed, 16) == 0:
        raise InvalidArgument(f"{name} is the zero address")
    return str(checksummed)


def _tokens(wei: int, unit: str) -> str:
    """``wei`` in whole tokens, exactly: 1500000000000000000 -> '1.5 LPT'."""
    whole, fraction = divmod(wei, 10**DECIMALS)
    digits = f"{fraction:0{DECIMALS}d}".rstrip("0")
    return f"{whole}.{digits} {unit}" if digits else f"{whole} {unit}"


def _perc(name: str, percent: float) -> int:
    if not 0 <= percent <= 100:
        raise InvalidArgument(f"{name} must be within 0-100 %, got {percent}")
    return round(percent * PERC_DIVISOR / 100)


class Staking:
    """The orchestrator's (or a delegator's, or a sender's) on-chain operations."""

    def __init__(self, client: ChainClient) -> None:
        self.client = client

    @property
    def me(self) -> str:
        """The checksummed address of the client's key."""
        account = self.client._account
        if account is None:
            raise NoSigningKey("no private key: set FARM_ETH_PRIVATE_KEY")
        return str(account.address)

    def _send(self, op: str, fn: Any, **kwargs: Any) -> TxResult:
        if kwargs.get("gas") is not None:
            # An explicit gas limit skips the estimate, the node's own check: simulate first,
            # so a call the contract refuses is not mined (and paid for) as a failure.
            reason = self.client.revert_reason(fn, sender=self.client.address)
            if reason is not None:
                raise ContractReverted(f"{op} would revert: {reason} (nothing sent)", reason)
        try:
            receipt = self.client.transact(fn, **kwargs)
        except TransactionFailed as e:
            # An explicit gas limit skips the estimate, so say why it failed from a replay.
            reason = self.client.revert_reason(fn, sender=self.client.address)
            if reason is None:
                raise
            raise TransactionFailed(f"{e}: {reason}", e.tx_hash, e.receipt) from e
        return TxResult(op, "0x" + bytes(receipt["transactionHash"]).hex(), receipt["gasUsed"])

    # ---- reads -------------------------------------------------------------------------

    def round(self) -> dict[str, Any]:
        c = self.client
        return {
            "round": c.current_round(),
            "initialized": c.current_round_initialized(),
            "length": c.round_length(),
        }

    def status(self) -> dict[str, Any]:
        """The round and, with a key, the account's stake, terms, fees, deposit and reserve."""
        c = self.client
        out: dict[str, Any] = {
            **self.round(),
            "block": c.last_seen_l1_block(),
            "gas_price_wei": c.gas_price(),
        }
        if c.address is None:
            return out
        me = c.address
        delegator = c.call(c.bonding.functions.getDelegator(self.me))
        t = c.transcoder_info(me)
        sender = c.sender_info(me)
        out.update(
            {
                "account": "0x" + me.hex(),
                "bonded_wei": int(delegator[0]),
                "delegate": str(delegator[2]),
                "active": c.is_active_transcoder(me),
                "reward_cut_percent": t.reward_cut * 100 / PERC_DIVISOR,
                "fee_share_percent": t.fee_share * 100 / PERC_DIVISOR,
                "last_reward_round": t.last_reward_round,
                "pending_fees_wei": c.fees(me),
                "deposit_wei": sender.deposit,
                "reserve_wei": sender.reserve,
                "withdraw_round": sender.withdraw_round,
                "service_uri": self.service_uri(),
            }
        )
        return out

    def service_uri(self) -> str | None:
        """The service URI this account advertises: "" when none, None when the chain has
        no ServiceRegistry."""
        me = self.client.address
        if me is None:
            raise NoSigningKey("no private key: set FARM_ETH_PRIVATE_KEY")
        try:
            return self.client.service_uri(me)
        except ContractNotRegistered:
            return None

    # ---- rounds and reward -------------------------------------------------------------

    def initialize_round(self) -> TxResult:
        fn = self.client.rounds.functions.initializeRound()
        return self._send("initializeRound", fn, gas=STAKING_GAS)

    def reward(self) -> str:
        """Claim this round's reward now, with the beat task's checks (once per round)."""
        return RewardService(self.client).run_once()

    # ---- stake -------------------------------------------------------------------------

    def bond(self, amount_wei: int, to: str | None = None) -> list[TxResult]:
        """Approve and bond ``amount_wei`` LPT to ``to`` (default: yourself)."""
        _positive("amount", amount_wei)
        target = self.me if to is None else _address("orchestrator", to)
        bonding = self.client.bonding
        token = self.client.contract("LivepeerToken")
        balance = int(self.client.call(token.functions.balanceOf(self.me)))
        if amount_wei > balance:
            raise InsufficientBalance(
                f"bonding {_tokens(amount_wei, 'LPT')} needs that much LPT; "
                f"{self.me} holds {_tokens(balance, 'LPT')}"
            )
        return [
            self._send("approve", token.functions.approve(bonding.address, amount_wei)),
            self._send("bond", bonding.functions.bond(amount_wei, target), gas=STAKING_GAS),
        ]

    def unbond(self, amount_wei: int) -> TxResult:
        _positive("amount", amount_wei)
        fn = self.client.bonding.functions.unbond(amount_wei)
        return self._send("unbond", fn, gas=STAKING_GAS)

    def rebond(self, lock_id: int) -> TxResult:
        fn = self.client.bonding.functions.rebond(_lock_id(lock_id))
        return self._send("rebond", fn, gas=STAKING_GAS)

    def withdraw_stake(self, lock_id: int) -> TxResult:
        _lock_id(lock_id)
        fn = self.client.bonding.functions.withdrawStake(lock_id)
        return self._send("withdrawStake", fn, gas=STAKING_GAS)

    def withdraw_fees(self, amount_wei: int | None = None) -> TxResult:
        """Withdraw ``amount_wei`` of the earned fees (default: all of them)."""
        me = self.client.address
        if me is None:
            raise NoSigningKey("no private key: set FARM_ETH_PRIVATE_KEY")
        amount = self.client.fees(me) if amount_wei is None else _positive("amount", amount_wei)
        if amount <= 0:
            raise InvalidArgument("no fees to withdraw")
        fn = self.client.bonding.functions.withdrawFees(self.me, amount)
        return self._send("withdrawFees", fn, gas=STAKING_GAS)

    def config(self, reward_cut: float, fee_share: float) -> TxResult:
        """Set the orchestrator's reward cut (kept) and fee share (to delegators), in %."""
        cut, share = _perc("reward cut", reward_cut), _perc("fee share", fee_share)
        fn = self.client.bonding.functions.transcoder(cut, share)
        return self._send("transcoder", fn, gas=STAKING_GAS)

    # ---- ticket sender's deposit and reserve -------------------------------------------

    def deposit(self, deposit_wei: int, reserve_wei: int = 0) -> TxResult:
        if deposit_wei < 0 or reserve_wei < 0 or deposit_wei + reserve_wei == 0:
            raise InvalidArgument("deposit and reserve must be >= 0 and not both zero")
        _positive("deposit and reserve", deposit_wei + reserve_wei)
        fn = self.client.broker.functions.fundDepositAndReserve(deposit_wei, reserve_wei)
        return self._send("fundDepositAndReserve", fn, value=deposit_wei + reserve_wei)

    def reserve(self, amount_wei: int) -> TxResult:
        _positive("reserve", amount_wei)
        fn = self.client.broker.functions.fundReserve()
        return self._send("fundReserve", fn, value=amount_wei)

    def unlock(self) -> TxResult:
        return self._send("unlock", self.client.broker.functions.unlock())

    def withdraw(self) -> TxResult:
        return self._send("withdraw", self.client.broker.functions.withdraw())

    # ---- advertising -------------------------------------------------------------------

    def set_service_uri(self, uri: str) -> TxResult:
        """Advertise ``uri`` (``https://HOST:PORT``) in the ServiceRegistry."""
        try:
            receipt = self.client.set_service_uri(uri)
        except InvalidServiceURI as e:
            raise InvalidArgument(str(e)) from None
        tx = "0x" + bytes(receipt["transactionHash"]).hex()
        return TxResult("setServiceURI", tx, receipt["gasUsed"])

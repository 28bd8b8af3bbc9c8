"""TicketBroker in memory: a :class:`chain.broker.Broker` that applies the contract's rules.

``MemoryBroker`` keeps what TicketBroker, RoundsManager and the BondingManager's fee pools
keep: each sender's deposit, reserve and unlock round, the used ticket hashes, the block, the
rounds and their block hashes, and the transcoder pool. Redemption checks what
``redeemWinningTicket`` checks, in its order and with its revert strings (see
``chain/contracts/src/TicketBroker.sol``): an initialized round, non-zero addresses, 64 bytes
of auxData naming a round with that block hash that is not expired, the recipient rand, a
ticket not used, the sender's signature, the win, a locked sender, and deposit plus reserve
covering the face value. It pays the face value from the deposit, then the rest from the
recipient's share of the reserve this round; a batch runs each ticket in its own sub-call
with 63/64 of the gas left (EIP-150) and swallows their failures.

Each transaction is mined in the next block, as a development node mines. Gas is a simple
model: a fixed cost per redemption, more when it draws on the reserve. It is a real
implementation for tests of the redeemer's logic without a node, not a stand-in for gas
measurements.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from chain.broker import RedeemTx, SenderInfo
from chain.errors import ContractReverted, GasPriceTooHigh, InvalidSignature
from chain.signing import keccak256, recover
from chain.tickets import ZERO_ADDRESS, ZERO_HASH, SignedTicket, Ticket, is_winning

__all__ = [
    "BATCH_GAS",
    "RESERVE_GAS",
    "REVERT_GAS",
    "TICKET_GAS",
    "TX_GAS",
    "MemoryBroker",
]

#: Every transaction's intrinsic gas.
TX_GAS: Final = 21_000
#: A redemption paid from the deposit.
TICKET_GAS: Final = 90_000
#: What drawing on the reserve costs on top.
RESERVE_GAS: Final = 60_000
#: What a redemption that reverts burns.
REVERT_GAS: Final = 30_000
#: The batch call's own cost, besides its sub-calls.
BATCH_GAS: Final = 30_000
#: The address transactions come from unless another is given.
DEFAULT_ACCOUNT: Final = bytes.fromhex("a0" * 20)


@dataclass
class _Sender:
    deposit: int = 0
    withdraw_round: int = 0


@dataclass
class _Reserve:
    funds: int = 0
    claimed_for_round: dict[int, int] = field(default_factory=dict)
    claimed_by_address: dict[tuple[int, bytes], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Tx:
    block: int
    tx_hash: bytes
    origin: bytes
    redeemed: frozenset[bytes]


@dataclass
class _State:
    """What the contracts hold; shared by every account's MemoryBroker."""

    block: int
    round_length: int
    ticket_validity_period: int
    unlock_period: int
    gas_price: int
    last_initialized_round: int = 0
    block_hashes: dict[int, bytes] = field(default_factory=dict)
    senders: dict[bytes, _Sender] = field(default_factory=dict)
    reserves: dict[bytes, _Reserve] = field(default_factory=dict)
    used: set[bytes] = field(default_factory=set)
    #: The transcoder pool (each active); fees go to registered transcoders only.
    transcoders: list[bytes] = field(default_factory=list)
    fees: dict[bytes, int] = field(default_factory=dict)
    txs: list[_Tx] = field(default_factory=list)
    before_next_tx: list[Callable[[], object]] = field(default_factory=list)

    def round_of(self, block: int) -> int:
        return block // self.round_length


class MemoryBroker:
    """TicketBroker, RoundsManager and fee pools in memory, sending as ``address``."""

    def __init__(
        self,
        *,
        address: bytes = DEFAULT_ACCOUNT,
        block: int = 1000,
        round_length: int = 100,
        ticket_validity_period: int = 2,
        unlock_period: int = 2,
        gas_price: int = 1_000_000_000,
        max_gas_price_wei: int | None = None,
        state: _State | None = None,
    ) -> None:
        """A fresh chain at ``block``, its round initialized; ``state`` shares another
        broker's chain (see :meth:`account`)."""
        self._state = state or _State(
            block, round_length, ticket_validity_period, unlock_period, gas_price
        )
        self._address = address
        self.max_gas_price_wei = max_gas_price_wei
        if state is None:
            self.initialize_round()

    def account(self, address: bytes) -> MemoryBroker:
        """The same chain, sending from ``address`` (anyone may redeem a ticket)."""
        return MemoryBroker(
            address=address, max_gas_price_wei=self.max_gas_price_wei, state=self._state
        )

    # ---- the chain moving on -----------------------------------------------------------

    def mine(self, blocks: int = 1) -> None:
        """Advance the chain by ``blocks`` empty blocks."""
        self._state.block += blocks

    def initialize_round(self) -> None:
        """RoundsManager.initializeRound: record the current round and its block hash."""
        s = self._state
        round_ = s.round_of(s.block)
        s.block_hashes.setdefault(round_, keccak256(b"memory block %d" % s.block))
        s.last_initialized_round = round_

    def next_round(self) -> None:
        """Mine to the first block of the next round and initialize it."""
        s = self._state
        self.mine((s.round_of(s.block) + 1) * s.round_length - s.block)
        self.initialize_round()

    def set_gas_price(self, wei: int) -> None:
        """The gas price from now on."""
        self._state.gas_price = wei

    def before_next_transaction(self, action: Callable[[], object]) -> None:
        """Run ``action`` just before this chain's next transaction is mined: another
        account's transaction that lands first, as happens between an estimate and a send."""
        self._state.before_next_tx.append(action)

    # ---- senders and transcoders -------------------------------------------------------

    def fund_deposit_and_reserve(self, sender: bytes, deposit: int, reserve: int = 0) -> None:
        """fundDepositAndReserve from ``sender``, which cancels an unlock in progress."""
        s = self._state
        s.senders.setdefault(sender, _Sender()).deposit += deposit
        s.reserves.setdefault(sender, _Reserve()).funds += reserve
        s.senders[sender].withdraw_round = 0

    def unlock(self, sender: bytes) -> None:
        """Start the sender's unlock: it may withdraw ``unlock_period`` rounds from now."""
        s = self._state
        info = s.senders.setdefault(sender, _Sender())
        info.withdraw_round = s.round_of(s.block) + s.unlock_period

    def withdraw(self, sender: bytes) -> int:
        """Pay out the sender's deposit and reserve after its unlock; returns the amount."""
        s = self._state
        info = s.senders.setdefault(sender, _Sender())
        reserve = s.reserves.setdefault(sender, _Reserve())
        if info.withdraw_round == 0 or s.round_of(s.block) < info.withdraw_round:
            raise ContractReverted("withdraw reverted: account is locked", "account is locked")
        amount = info.deposit + reserve.funds
        info.deposit, info.withdraw_round, reserve.funds = 0, 0, 0
        return amount

    def register_transcoder(self, transcoder: bytes) -> None:
        """Add ``transcoder`` to the pool: it may take fees and claim from reserves."""
        if transcoder not in self._state.transcoders:
            self._state.transcoders.append(transcoder)

    def fees(self, transcoder: bytes) -> int:
        """The fees redemptions paid ``transcoder``."""
        return self._state.fees.get(transcoder, 0)

    # ---- ChainView and reads -----------------------------------------------------------

    @property
    def address(self) -> bytes | None:
        """The account this broker sends from."""
        return self._address

    def withdraw_round(self, sender: bytes) -> int:
        """The round the sender's unlock completes, 0 when it is not unlocking."""
        return self.sender_info(sender).withdraw_round

    def last_initialized_round(self) -> int:
        """The last round initialized."""
        return self._state.last_initialized_round

    def last_seen_l1_block(self) -> int:
        """The latest block."""
        return self._state.block

    def current_round(self) -> int:
        """The round of the latest block."""
        return self._state.round_of(self._state.block)

    def current_round_initialized(self) -> bool:
        """Whether the current round is initialized."""
        return self._state.last_initialized_round == self.current_round()

    def round_length(self) -> int:
        """Blocks per round."""
        return self._state.round_length

    def ticket_validity_period(self) -> int:
        """Rounds a ticket stays redeemable after its creation round."""
        return self._state.ticket_validity_period

    def block_hash_for_round(self, round: int) -> bytes:
        """The block hash recorded for ``round`` (zero when not initialized)."""
        return self._state.block_hashes.get(round, ZERO_HASH)

    def gas_price(self) -> int:
        """The gas price."""
        return self._state.gas_price

    def sender_info(self, sender: bytes) -> SenderInfo:
        """The sender's deposit, withdraw round and reserve."""
        s = self._state
        info = s.senders.get(sender, _Sender())
        reserve = s.reserves.get(sender, _Reserve())
        return SenderInfo(
            deposit=info.deposit,
            withdraw_round=info.withdraw_round,
            reserve=reserve.funds,
            reserve_claimed_in_current_round=reserve.claimed_for_round.get(s.round_of(s.block), 0),
        )

    def claimable_reserve(self, sender: bytes, recipient: bytes) -> int:
        """What ``recipient`` may still draw from the sender's reserve this round."""
        return _claimable(self._state, sender, recipient, self._state.round_of(self._state.block))

    def max_float(self, sender: bytes, recipient: bytes, *, pending: int = 0) -> int:
        """The sender's deposit plus the recipient's reserve allocation, less ``pending``."""
        deposit = self.sender_info(sender).deposit
        return max(0, deposit + self.claimable_reserve(sender, recipient) - pending)

    def used(self, ticket_hash: bytes) -> bool:
        """Whether the ticket with this hash was redeemed."""
        return ticket_hash in self._state.used

    def find_redemption(
        self, ticket: Ticket, *, lookback_blocks: int
    ) -> tuple[bytes, bytes] | None:
        """(tx hash, tx sender) of the transaction that redeemed ``ticket`` lately."""
        ticket_hash = ticket.hash()
        since = self._state.block - lookback_blocks
        for tx in reversed(self._state.txs):
            if tx.block >= since and ticket_hash in tx.redeemed:
                return tx.tx_hash, tx.origin
        return None

    # ---- redemption --------------------------------------------------------------------

    def estimate_redeem(self, ticket: SignedTicket) -> int:
        """The gas redeeming this ticket alone takes; ContractReverted when it would revert."""
        state = copy.deepcopy(self._state)
        state.block += 1  # estimates run on the pending block
        reason, gas = _redeem(state, ticket)
        if reason is not None:
            raise ContractReverted(f"estimate redeemWinningTicket reverted: {reason}", reason)
        return TX_GAS + gas

    def estimate_batch_redeem(self, tickets: Sequence[SignedTicket]) -> int:
        """The gas the batch takes with every sub-call given what it needs."""
        state = copy.deepcopy(self._state)
        state.block += 1
        if not _round_initialized(state):
            reason = "current round is not initialized"
            raise ContractReverted(f"estimate batchRedeemWinningTickets reverted: {reason}", reason)
        total = TX_GAS + BATCH_GAS
        for ticket in tickets:
            total += _redeem(state, ticket)[1]
        return total

    def redeem_winning_ticket(self, ticket: SignedTicket, *, gas: int) -> RedeemTx:
        """Mine ``redeemWinningTicket`` with this gas limit."""
        return self._transact([ticket], gas, batch=False)

    def batch_redeem_winning_tickets(
        self, tickets: Sequence[SignedTicket], *, gas: int
    ) -> RedeemTx:
        """Mine ``batchRedeemWinningTickets`` with this gas limit."""
        return self._transact(list(tickets), gas, batch=True)

    def _transact(self, tickets: list[SignedTicket], gas: int, *, batch: bool) -> RedeemTx:
        s = self._state
        if self.max_gas_price_wei is not None and s.gas_price > self.max_gas_price_wei:
            raise GasPriceTooHigh(
                f"gas price {s.gas_price} wei exceeds the maximum {self.max_gas_price_wei}"
            )
        while s.before_next_tx:
            s.before_next_tx.pop(0)()
        if self._address is None:
            raise ContractReverted("no account to send from", "")
        s.block += 1
        tx_hash = keccak256(b"memory tx %d" % len(s.txs))
        before = set(s.used)
        work = copy.deepcopy(s)
        if batch:
            succeeded, gas_used = _run_batch(work, tickets, gas)
        else:
            reason, cost = _redeem(work, tickets[0])
            needed = TX_GAS + cost
            succeeded = reason is None and needed <= gas
            gas_used = min(gas, needed)
        if succeeded:
            # Keep the outcome, not the scratch copy's hooks and transaction log.
            s.senders, s.reserves, s.used, s.fees = (
                work.senders,
                work.reserves,
                work.used,
                work.fees,
            )
        redeemed = frozenset(s.used - before) if succeeded else frozenset()
        s.txs.append(_Tx(s.block, tx_hash, self._address, redeemed))
        return RedeemTx(tx_hash=tx_hash, gas_used=gas_used, succeeded=succeeded, redeemed=redeemed)


# ---- the contract's rules -------------------------------------------------------------------


def _round_initialized(s: _State) -> bool:
    return s.last_initialized_round == s.round_of(s.block)


def _claimable(s: _State, sender: bytes, claimant: bytes, round_: int) -> int:
    if claimant not in s.transcoders:
        return 0
    reserve = s.reserves.get(sender, _Reserve())
    allocation = (reserve.funds + reserve.claimed_for_round.get(round_, 0)) // len(s.transcoders)
    claimed = reserve.claimed_by_address.get((round_, claimant), 0)
    return max(0, allocation - claimed)


def _check(s: _State, signed: SignedTicket) -> str | None:
    """The revert reason of ``redeemWinningTicket`` in state ``s``, None when it pays."""
    ticket, round_ = signed.ticket, s.round_of(s.block)
    if not _round_initialized(s):
        return "current round is not initialized"
    if ticket.recipient == ZERO_ADDRESS:
        return "ticket recipient is null address"
    if ticket.sender == ZERO_ADDRESS:
        return "ticket sender is null address"
    aux_data = ticket.aux_data
    if len(aux_data) != 64:
        return "invalid length for ticket auxData: must be 64 bytes"
    block_hash = s.block_hashes.get(ticket.creation_round, ZERO_HASH)
    if block_hash == ZERO_HASH:
        return "ticket creationRound does not have a block hash"
    if block_hash != ticket.creation_round_block_hash:
        return "ticket creationRoundBlockHash invalid for creationRound"
    if ticket.creation_round + s.ticket_validity_period <= round_:
        return "ticket is expired"
    if keccak256(signed.recipient_rand.to_bytes(32, "big")) != ticket.recipient_rand_hash:
        return "recipientRand does not match recipientRandHash"
    ticket_hash = ticket.hash()
    if ticket_hash in s.used:
        return "ticket is used"
    if len(signed.sig) != 65:
        return "INVALID_SIGNATURE_LENGTH"
    try:
        signer = recover(ticket_hash, signed.sig)
    except InvalidSignature:
        signer = ZERO_ADDRESS
    if signer != ticket.sender:
        return "invalid signature over ticket hash"
    if not is_winning(signed.sig, signed.recipient_rand, ticket.win_prob):
        return "ticket did not win"
    sender = s.senders.get(ticket.sender, _Sender())
    if sender.withdraw_round != 0 and round_ >= sender.withdraw_round:
        return "sender is unlocked"
    if sender.deposit + s.reserves.get(ticket.sender, _Reserve()).funds < ticket.face_value:
        return "sender deposit and reserve insufficient to cover ticket face value"
    return None


def _redeem(s: _State, signed: SignedTicket) -> tuple[str | None, int]:
    """Apply ``redeemWinningTicket`` to ``s``: (revert reason or None, gas it takes)."""
    reason = _check(s, signed)
    if reason is not None:
        return reason, REVERT_GAS
    ticket, round_ = signed.ticket, s.round_of(s.block)
    sender = s.senders.setdefault(ticket.sender, _Sender())
    gas = TICKET_GAS
    if ticket.face_value > sender.deposit:
        gas += RESERVE_GAS
        reserve = s.reserves.setdefault(ticket.sender, _Reserve())
        wanted = ticket.face_value - sender.deposit
        claim = min(wanted, _claimable(s, ticket.sender, ticket.recipient, round_))
        amount = sender.deposit + claim
    else:
        amount, claim, reserve = ticket.face_value, 0, _Reserve()
    if amount > 0 and ticket.recipient not in s.transcoders:
        return "transcoder must be registered", REVERT_GAS
    s.used.add(ticket.hash())
    if ticket.face_value > sender.deposit:
        sender.deposit = 0
        reserve.funds -= claim
        reserve.claimed_for_round[round_] = reserve.claimed_for_round.get(round_, 0) + claim
        key = (round_, ticket.recipient)
        reserve.claimed_by_address[key] = reserve.claimed_by_address.get(key, 0) + claim
    else:
        sender.deposit -= ticket.face_value
    s.fees[ticket.recipient] = s.fees.get(ticket.recipient, 0) + amount
    return None, gas


def _run_batch(s: _State, tickets: list[SignedTicket], gas: int) -> tuple[bool, int]:
    """Apply ``batchRedeemWinningTickets`` to ``s``: (succeeded, gas used). Each sub-call gets
    63/64 of the gas left; one that fails or runs out is undone and the loop goes on."""
    if gas < TX_GAS + BATCH_GAS:
        return False, gas
    if not _round_initialized(s):
        return False, TX_GAS + REVERT_GAS
    left = gas - TX_GAS - BATCH_GAS
    for ticket in tickets:
        allowed = left - left // 64
        trial = copy.deepcopy(s)
        reason, cost = _redeem(trial, ticket)
        if reason is None and cost <= allowed:
            s.senders, s.reserves, s.used, s.fees = (
                trial.senders,
                trial.reserves,
                trial.used,
                trial.fees,
            )
        left -= min(cost, allowed)
    return True, gas - left

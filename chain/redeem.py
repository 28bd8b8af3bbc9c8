"""Redeeming the queued winning tickets, many per transaction.

``Redeemer.run_once`` is what the beat task calls: it takes the tickets whose params have
expired (go-livepeer waits for the same, so recipientRand is not revealed while the sender can
still use the params) and

1. sends nothing while the current round is not initialized or the gas price is above the
   maximum: every ticket stays queued;
2. estimates each ticket's ``redeemWinningTicket`` alone (eth_estimateGas on the pending
   block) and sorts it by the revert reason when the estimate says it would fail: one that
   can never pay (expired, used, bad signature or rand, wrong block hash) is given up; one
   that may pay later (sender short of funds or unlocked) is kept for another try, with the
   reason; a ticket used on chain by one of our own transactions (a receipt lost to an RPC
   failure) is recorded as redeemed;
3. drops tickets worth less than their share of the transaction's cost, go-livepeer's
   "insufficient ticket face value for redeem tx cost", with the reason recorded;
4. sends one ticket as ``redeemWinningTicket``, several as one ``batchRedeemWinningTickets``,
   with a gas limit from the estimates plus headroom. The batch swallows its tickets'
   failures, out-of-gas ones included, so its own estimate cannot say whether every ticket
   fits: its limit is the sum of its tickets' estimates (each sub-call gets 63/64 of what is
   left, EIP-150), never less than the node's estimate of the whole batch, and a batch that
   estimate says would revert is not sent. A ticket whose estimate alone would not hold in
   the batch (its sender's deposit used up by earlier tickets of the batch, so it draws on
   the reserve, which costs more) waits for the next run; so do tickets past the
   transaction's gas cap;
5. reads each ticket's outcome back: a ``WinningTicketRedeemed`` log in the receipt means
   redeemed; a ticket that reverted but is still unused stays queued (go-livepeer drops it,
   #4013) and is sent alone next time, where a failure reverts instead of being swallowed;
   one another transaction used first is given up.

A node that cannot be reached raises ChainUnavailable from ``run_once``; tickets not yet
recorded stay pending, so nothing is lost. The chain is a :class:`chain.broker.Broker`: the
web3 client in production, ``chain.memory_broker.MemoryBroker`` in tests of this logic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final

from chain.broker import Broker, RedeemTx
from chain.errors import ContractReverted, GasPriceTooHigh, TransactionRejected
from chain.queue import QueuedTicket, TicketQueue
from chain.tickets import SignedTicket, Ticket

__all__ = [
    "BATCH_BASE_GAS",
    "GAS_HEADROOM",
    "PERMANENT_REVERTS",
    "RedeemReport",
    "Redeemer",
]

#: Gas reserved for the batch call itself (its loop, calldata and the sub-calls' setup).
BATCH_BASE_GAS: Final = 100_000
#: The limit over the estimate: state can change between the estimate and the block (a
#: redemption that draws on the reserve takes 376-411k gas on Livepeer's contracts, and
#: about 200k on the development ones).
GAS_HEADROOM: Final = Fraction(5, 4)
#: A transaction may use at most this much gas (under a 30M block limit).
MAX_TX_GAS: Final = 15_000_000
#: Revert reasons after which a ticket can never be redeemed.
PERMANENT_REVERTS: Final = (
    "ticket is expired",
    "does not have a block hash",
    "creationRoundBlockHash invalid",
    "recipientRand does not match",
    "invalid signature",
    "ticket did not win",
    "null address",
    "auxData",
)
_USED: Final = "ticket is used"
#: The reason recorded for a ticket that reverted inside a batch; it is sent alone next time.
_IN_BATCH: Final = "not redeemed inside the batch"


@dataclass
class RedeemReport:
    """What one ``run_once`` did; hashes are ticket hashes."""

    block: int
    #: Why nothing was sent this time (tickets left queued), None when a batch went out or
    #: there was nothing to send.
    skipped: str | None = None
    gas_price: int = 0
    tx_hash: bytes | None = None
    gas_used: int = 0
    redeemed: list[bytes] = field(default_factory=list)
    #: Kept queued for another try, with the reason.
    retried: dict[bytes, str] = field(default_factory=dict)
    #: Given up for good (the queue's "failed"), with the reason.
    given_up: dict[bytes, str] = field(default_factory=dict)
    #: Left for the next run untouched (not an attempt), with the reason.
    waiting: dict[bytes, str] = field(default_factory=dict)
    #: The gas limit of the transaction sent.
    gas_limit: int = 0
    #: The face value the batch's redemptions paid in total.
    face_value_redeemed: int = 0


def _ticket_hash(item: QueuedTicket) -> bytes:
    return item.ticket.hash()


def _signed(item: QueuedTicket) -> SignedTicket:
    return SignedTicket(item.ticket, item.sig, item.recipient_rand)


class Redeemer:
    """Redeems due tickets from a :class:`TicketQueue` through a :class:`Broker`."""

    def __init__(
        self,
        broker: Broker,
        queue: TicketQueue,
        *,
        batch_size: int = 20,
        max_gas_price_wei: int | None = None,
        tx_cost_guard: Fraction | int = 1,
        gas_per_ticket: int = 0,
        batch_base_gas: int = BATCH_BASE_GAS,
        gas_headroom: Fraction = GAS_HEADROOM,
        scan_limit: int | None = None,
        log_lookback_blocks: int | None = None,
    ) -> None:
        """``max_gas_price_wei`` defaults to the broker's; a ticket is dropped when its face
        value is below ``tx_cost_guard`` x its share of the batch's cost (estimated gas x gas
        price / tickets). Each ticket is allowed its estimate x ``gas_headroom``, and at
        least ``gas_per_ticket``. Up to ``scan_limit`` due tickets (10 batches) are examined
        per run, so tickets kept for later cannot starve newer ones."""
        if batch_size <= 0 or gas_per_ticket < 0 or batch_base_gas < 0:
            raise ValueError("batch_size must be positive, gas allowances not negative")
        if tx_cost_guard < 0:
            raise ValueError("tx_cost_guard cannot be negative")
        if gas_headroom < 1:
            raise ValueError("gas_headroom must be at least 1")
        self.broker = broker
        self.queue = queue
        self.batch_size = batch_size
        self.max_gas_price_wei = (
            max_gas_price_wei if max_gas_price_wei is not None else broker.max_gas_price_wei
        )
        self.tx_cost_guard = Fraction(tx_cost_guard)
        self.gas_per_ticket = gas_per_ticket
        self.batch_base_gas = batch_base_gas
        self.gas_headroom = Fraction(gas_headroom)
        self.scan_limit = scan_limit if scan_limit is not None else 10 * self.batch_size
        self.log_lookback_blocks = log_lookback_blocks

    def ticket_gas(self, estimate: int) -> int:
        """One ticket's allowance: its estimate with headroom, at least ``gas_per_ticket``."""
        return max(math.ceil(estimate * self.gas_headroom), self.gas_per_ticket)

    def gas_limit(self, estimates: list[int]) -> int:
        """The gas limit for tickets with these estimates (each alone): one ticket is sent
        as ``redeemWinningTicket``, several as a batch whose every sub-call is handed only
        63/64 of the gas left (EIP-150), on top of the batch's own cost."""
        if len(estimates) == 1:
            return self.ticket_gas(estimates[0])
        sub_calls = sum(math.ceil(self.ticket_gas(e) * 64 / 63) for e in estimates)
        return self.batch_base_gas + sub_calls

    def tx_cost_share(self, estimates: list[int], gas_price: int) -> Fraction:
        """Each ticket's share of the expected cost at ``gas_price``, times the guard."""
        return Fraction(sum(estimates) * gas_price, len(estimates)) * self.tx_cost_guard

    # ---- one run ---------------------------------------------------------------------

    def run_once(self) -> RedeemReport:
        """Redeem what is due now in one transaction; see the module docstring."""
        block = self.broker.last_seen_l1_block()
        report = RedeemReport(block=block)
        due = self.queue.due(block, limit=self.scan_limit)
        if not due:
            return report
        if not self.broker.current_round_initialized():
            report.skipped = f"round {self.broker.current_round()} is not initialized"
            return report
        report.gas_price = self.broker.gas_price()
        if self.max_gas_price_wei is not None and report.gas_price > self.max_gas_price_wei:
            report.skipped = (
                f"gas price {report.gas_price} wei is above the maximum {self.max_gas_price_wei}"
            )
            return report

        batch = self._select(due, report)
        batch = self._drop_below_cost(batch, report)
        if batch:
            self._send(batch, report)
        return report

    # ---- steps -----------------------------------------------------------------------

    def _select(
        self, due: Iterable[QueuedTicket], report: RedeemReport
    ) -> list[tuple[QueuedTicket, int]]:
        """Estimate each due ticket alone; keep up to a batch of the ones that would pay, with
        their estimates."""
        # A ticket that reverted inside a batch goes first, and alone: a failure there
        # reverts the transaction instead of being swallowed, and its estimate is exact.
        alone = [item for item in due if item.last_error and _IN_BATCH in item.last_error]
        others = [item for item in due if item not in alone]
        batch: list[tuple[QueuedTicket, int]] = []
        funds: dict[bytes, tuple[int, int]] = {}  # sender -> (deposit, reserve) left
        deposits: dict[bytes, int] = {}  # sender -> deposit before this batch
        for item in alone + others:
            ticket_hash = _ticket_hash(item)
            if len(batch) >= self.batch_size or (batch and batch[0][0] in alone):
                break
            estimate = self._estimate(item)
            if isinstance(estimate, str):
                reason = estimate
                if _USED in reason:
                    self._already_used(item, report)
                elif any(p in reason for p in PERMANENT_REVERTS):
                    self._give_up(report, ticket_hash, reason)
                else:
                    self._retry(report, ticket_hash, reason)
                continue
            sender, face_value = item.ticket.sender, item.ticket.face_value
            if sender not in funds:
                info = self.broker.sender_info(sender)
                funds[sender] = (info.deposit, info.reserve)
                deposits[sender] = info.deposit
            deposit, reserve = funds[sender]
            if face_value > deposit + reserve:
                # Earlier tickets of this batch use up what the sender has left.
                self._retry(report, ticket_hash, "insufficient sender funds in this batch")
                continue
            if deposit < face_value <= deposits[sender]:
                # Alone it was estimated against a deposit that earlier tickets of this batch
                # spend: here it would draw on the reserve, which costs more than estimated.
                report.waiting[ticket_hash] = "draws on the reserve after this batch; next run"
                continue
            if self.gas_limit([e for _, e in batch] + [estimate]) > MAX_TX_GAS:
                report.waiting[ticket_hash] = "past this transaction's gas cap; next run"
                break
            drawn = min(deposit, face_value)
            funds[sender] = (deposit - drawn, reserve - (face_value - drawn))
            batch.append((item, estimate))
        return batch

    def _drop_below_cost(
        self, batch: list[tuple[QueuedTicket, int]], report: RedeemReport
    ) -> list[tuple[QueuedTicket, int]]:
        """go-livepeer's face value check against each ticket's share of the tx cost."""
        while batch:
            share = self.tx_cost_share([e for _, e in batch], report.gas_price)
            keep = [(item, e) for item, e in batch if item.ticket.face_value >= share]
            for item, _ in batch:
                if item.ticket.face_value < share:
                    self._give_up(
                        report,
                        _ticket_hash(item),
                        f"insufficient ticket face value {item.ticket.face_value} wei for its "
                        f"share of the redeem tx cost {int(share)} wei",
                    )
            if len(keep) == len(batch):
                break
            batch = keep
        return batch

    def _send(self, selected: list[tuple[QueuedTicket, int]], report: RedeemReport) -> None:
        batch = [item for item, _ in selected]
        gas = self.gas_limit([e for _, e in selected])
        tx: RedeemTx
        try:
            if len(batch) == 1:
                report.gas_limit = gas
                tx = self.broker.redeem_winning_ticket(_signed(batch[0]), gas=gas)
            else:
                signed = [_signed(item) for item in batch]
                gas = max(gas, self.ticket_gas(self.broker.estimate_batch_redeem(signed)))
                report.gas_limit = gas
                tx = self.broker.batch_redeem_winning_tickets(signed, gas=gas)
        except GasPriceTooHigh as e:
            report.skipped = str(e)
            return
        except (ContractReverted, TransactionRejected) as e:
            for item in batch:
                self._retry(report, _ticket_hash(item), f"batch not sent: {e}")
            return
        report.tx_hash = tx.tx_hash
        report.gas_used = tx.gas_used
        for item in batch:
            ticket_hash = _ticket_hash(item)
            if ticket_hash in tx.redeemed:
                self.queue.redeemed(ticket_hash, tx.tx_hash)
                report.redeemed.append(ticket_hash)
                report.face_value_redeemed += item.ticket.face_value
        for item in batch:
            ticket_hash = _ticket_hash(item)
            if ticket_hash in tx.redeemed:
                continue
            if self.broker.used(ticket_hash):
                self._already_used(item, report)
                continue
            estimate = self._estimate(item)
            reason = estimate if isinstance(estimate, str) else None
            if len(batch) > 1:
                why = f"{_IN_BATCH} (gas used {report.gas_used} of {gas})"
                reason = f"{why}: {reason}" if reason else why
            self._retry(report, ticket_hash, f"not redeemed: {reason or 'reverted'}")

    # ---- helpers ---------------------------------------------------------------------

    def _estimate(self, item: QueuedTicket) -> int | str:
        """The gas the ticket alone needs, or the revert reason when it would fail."""
        try:
            return self.broker.estimate_redeem(_signed(item))
        except ContractReverted as e:
            return e.reason or "reverted without a reason"

    def _already_used(self, item: QueuedTicket, report: RedeemReport) -> None:
        """A ticket used on chain: ours if one of our transactions redeemed it."""
        ticket_hash = _ticket_hash(item)
        found = self._find_redemption(item.ticket)
        if found is not None and found[1] == self.broker.address:
            self.queue.redeemed(ticket_hash, found[0])
            report.redeemed.append(ticket_hash)
            return
        where = f" in tx 0x{found[0].hex()}" if found is not None else ""
        self._give_up(report, ticket_hash, f"ticket is used: redeemed by another sender{where}")

    def _find_redemption(self, ticket: Ticket) -> tuple[bytes, bytes] | None:
        """(tx hash, tx sender) of the transaction that redeemed ``ticket``, if any."""
        lookback = self.log_lookback_blocks
        if lookback is None:
            # A used ticket that is not expired was redeemed within its validity period.
            validity = self.broker.ticket_validity_period()
            lookback = (validity + 1) * self.broker.round_length()
        return self.broker.find_redemption(ticket, lookback_blocks=lookback)

    def _retry(self, report: RedeemReport, ticket_hash: bytes, reason: str) -> None:
        self.queue.retry_later(ticket_hash, reason)
        report.retried[ticket_hash] = reason

    def _give_up(self, report: RedeemReport, ticket_hash: bytes, reason: str) -> None:
        self.queue.give_up(ticket_hash, reason)
        report.given_up[ticket_hash] = reason

"""What the ticket validator and the redeemer need from the chain, as go-livepeer's ``pm``
declares ``Broker`` and ``eth`` implements it.

:class:`ChainView` is the part a ticket's validation reads (is the sender unlocking, which
block and round is it); :class:`Broker` adds what redemption needs: TicketBroker's senders,
used tickets and the two redeem calls, and the round they run in. ``chain.client.ChainClient``
implements both over JSON-RPC; ``chain.memory_broker.MemoryBroker`` implements them in memory
with the contract's rules, for tests and for code that runs without a node.

Every method may raise a :class:`chain.errors.ChainError`; ``ChainUnavailable`` means the
chain could not be reached and the call may be retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from chain.tickets import SignedTicket, Ticket

__all__ = ["Broker", "ChainView", "RedeemTx", "SenderInfo"]


@dataclass(frozen=True, slots=True)
class SenderInfo:
    """A sender's funds in TicketBroker (``getSenderInfo``)."""

    deposit: int
    #: The round its unlock completes; 0 when no unlock is in progress.
    withdraw_round: int
    #: Reserve funds not yet claimed.
    reserve: int
    #: Reserve claimed in the current round, by all recipients together.
    reserve_claimed_in_current_round: int


@dataclass(frozen=True, slots=True)
class RedeemTx:
    """A mined redemption transaction and what it did."""

    tx_hash: bytes
    gas_used: int
    #: False when the transaction reverted (status 0): nothing in it took effect.
    succeeded: bool
    #: The hashes of the tickets its ``WinningTicketRedeemed`` logs name. A batch swallows its
    #: tickets' failures, so this, not ``succeeded``, says which were paid.
    redeemed: frozenset[bytes]


class ChainView(Protocol):
    """What validating a received ticket reads from the chain."""

    def withdraw_round(self, sender: bytes) -> int:
        """The round the sender's unlock completes, 0 when it is not unlocking."""
        ...

    def last_initialized_round(self) -> int:
        """The last round RoundsManager initialized."""
        ...

    def last_seen_l1_block(self) -> int:
        """The latest L1 block number the node has seen."""
        ...


class Broker(ChainView, Protocol):
    """TicketBroker and its round, as the redeemer uses them; a superset of ChainView."""

    #: Transactions are not sent above this gas price (wei); None: no cap.
    max_gas_price_wei: int | None

    @property
    def address(self) -> bytes | None:
        """The account redemptions are sent from (None when it cannot send)."""
        ...

    def current_round(self) -> int:
        """The round of the latest block."""
        ...

    def current_round_initialized(self) -> bool:
        """Whether the current round is initialized; TicketBroker redeems nothing before."""
        ...

    def round_length(self) -> int:
        """Blocks per round."""
        ...

    def ticket_validity_period(self) -> int:
        """Rounds a ticket stays redeemable after its creation round."""
        ...

    def gas_price(self) -> int:
        """The gas price a transaction sent now pays, in wei."""
        ...

    def sender_info(self, sender: bytes) -> SenderInfo:
        """The sender's deposit, withdraw round and reserve."""
        ...

    def used(self, ticket_hash: bytes) -> bool:
        """Whether the ticket with this hash was redeemed (``usedTickets``)."""
        ...

    def estimate_redeem(self, ticket: SignedTicket) -> int:
        """The gas ``redeemWinningTicket`` of this ticket alone takes if sent now; raises
        ContractReverted with the contract's reason when it would revert."""
        ...

    def estimate_batch_redeem(self, tickets: Sequence[SignedTicket]) -> int:
        """The node's estimate for ``batchRedeemWinningTickets`` of these tickets. The batch
        swallows its tickets' failures, so this says little about whether each fits."""
        ...

    def redeem_winning_ticket(self, ticket: SignedTicket, *, gas: int) -> RedeemTx:
        """Send ``redeemWinningTicket`` with this gas limit and wait until it is mined.

        A revert mined is a RedeemTx that did not succeed; raises GasPriceTooHigh,
        TransactionRejected or ContractReverted when nothing was mined.
        """
        ...

    def batch_redeem_winning_tickets(
        self, tickets: Sequence[SignedTicket], *, gas: int
    ) -> RedeemTx:
        """Send ``batchRedeemWinningTickets`` with this gas limit; as redeem_winning_ticket."""
        ...

    def find_redemption(
        self, ticket: Ticket, *, lookback_blocks: int
    ) -> tuple[bytes, bytes] | None:
        """(tx hash, tx sender) of the transaction that redeemed ``ticket`` within the last
        ``lookback_blocks`` blocks; None when none is found."""
        ...

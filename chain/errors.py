"""The chain package's one error hierarchy.

Ticket errors carry ``fatal``, go-livepeer's distinction between a ticket that must be refused
(the payment is rejected) and one that is accepted with a warning: only expired ticket params
are non-fatal there, and a winning ticket with expired params is still queued for redemption.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from chain.validation import Receipt

__all__ = [
    "ChainError",
    "ChainUnavailable",
    "ContractReverted",
    "GasPriceTooHigh",
    "InsufficientSenderReserve",
    "InvalidAuxData",
    "InvalidRecipient",
    "InvalidRecipientRand",
    "InvalidSender",
    "InvalidSignature",
    "NonceReplayed",
    "SenderUnlocking",
    "TicketError",
    "TicketParamsExpired",
    "TooManyNonces",
    "TransactionRejected",
]


class ChainError(Exception):
    """Raised when anything in the chain package fails; the root of its hierarchy."""


class ChainUnavailable(ChainError):
    """Raised when the node cannot be reached or does not answer in time; safe to retry."""


class ContractReverted(ChainError):
    """Raised when a call or gas estimate reverts; ``reason`` holds the revert string."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        #: The revert reason as the node reports it ("" when it gave none).
        self.reason = reason


class GasPriceTooHigh(ChainError):
    """Raised when the gas price exceeds the configured maximum; nothing is sent."""


class TransactionRejected(ChainError):
    """Raised when the node refuses a transaction (nonce, funds, fee) before mining it."""


class InsufficientSenderReserve(ChainError):
    """Raised when no face value both covers the ticket's cost and fits the sender's funds."""


class TicketError(ChainError):
    """Raised when a received ticket is not accepted as it stands."""

    #: A fatal error refuses the payment; a non-fatal one accepts it with a warning.
    fatal: ClassVar[bool] = True


class InvalidAuxData(TicketError):
    """Raised when a ticket's auxData is not the 64 bytes of creationRound and its block hash."""


class SenderUnlocking(TicketError):
    """Raised when the sender's deposit unlocks in or before the round after the current one."""


class InvalidRecipient(TicketError):
    """Raised when a ticket is addressed to another recipient."""


class InvalidSender(TicketError):
    """Raised when a ticket's sender is the zero address."""


class InvalidRecipientRand(TicketError):
    """Raised when the rand derived from the ticket's params does not hash to recipientRandHash."""


class InvalidSignature(TicketError):
    """Raised when a signature is malformed, malleable (high s, bad v) or not the sender's."""


class NonceReplayed(TicketError):
    """Raised when a sender nonce is used twice under the same recipientRandHash."""


class TooManyNonces(TicketError):
    """Raised when a sender has used more nonces than allowed under one recipientRandHash."""


class TicketParamsExpired(TicketError):
    """Raised when a valid ticket's params expired; non-fatal, the receipt still counts."""

    fatal: ClassVar[bool] = False

    def __init__(self, message: str, receipt: Receipt) -> None:
        super().__init__(message)
        #: What the ticket was worth and whether it won, as if its params were still fresh.
        self.receipt = receipt

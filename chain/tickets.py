"""Livepeer probabilistic-micropayment tickets, byte-compatible with TicketBroker.

A ticket is hashed as ``keccak256(abi.encodePacked(recipient, sender, faceValue, winProb,
senderNonce, recipientRandHash, auxData))``; the sender signs that hash eth_sign style; the
ticket wins when ``uint256(keccak256(sig ‖ recipientRand)) < winProb``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from chain.errors import InvalidAuxData
from chain.signing import keccak256, recover

__all__ = [
    "MAX_WIN_PROB",
    "ZERO_ADDRESS",
    "ZERO_HASH",
    "SignedTicket",
    "Ticket",
    "address",
    "expected_value",
    "is_winning",
    "parse_aux_data",
    "recipient_rand_hash",
]

UINT256_MAX: Final = 2**256 - 1
#: winProb that always wins; TicketBroker's probability is winProb / (2^256 - 1).
MAX_WIN_PROB: Final = UINT256_MAX
UINT32_MAX: Final = 2**32 - 1
ZERO_ADDRESS: Final = bytes(20)
ZERO_HASH: Final = bytes(32)


def address(value: str | bytes) -> bytes:
    """A 20-byte address from ``0x…`` hex (any case) or bytes."""
    raw = bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else value
    if len(raw) != 20:
        raise ValueError(f"an address is 20 bytes, got {len(raw)}")
    return raw


def _uint256(value: int) -> bytes:
    return value.to_bytes(32, "big")


@dataclass(frozen=True, slots=True)
class Ticket:
    """One ticket as TicketBroker sees it; auxData is built from the creation round fields."""

    recipient: bytes
    sender: bytes
    face_value: int
    win_prob: int
    sender_nonce: int
    recipient_rand_hash: bytes
    creation_round: int = 0
    creation_round_block_hash: bytes = ZERO_HASH

    def __post_init__(self) -> None:
        for name in ("recipient", "sender"):
            if len(getattr(self, name)) != 20:
                raise ValueError(f"{name} must be 20 bytes")
        for name in ("recipient_rand_hash", "creation_round_block_hash"):
            if len(getattr(self, name)) != 32:
                raise ValueError(f"{name} must be 32 bytes")
        for name in ("face_value", "win_prob", "creation_round"):
            if not 0 <= getattr(self, name) <= UINT256_MAX:
                raise ValueError(f"{name} must be a uint256")
        # go-livepeer keeps the nonce as a uint32 (it is a uint256 on chain).
        if not 0 <= self.sender_nonce <= UINT32_MAX:
            raise ValueError("sender_nonce must be a uint32")

    @property
    def aux_data(self) -> bytes:
        """creationRound (uint256) ‖ creationRoundBlockHash, or empty when both are zero
        (as go-livepeer does; such a ticket cannot be redeemed on chain)."""
        if self.creation_round == 0 and self.creation_round_block_hash == ZERO_HASH:
            return b""
        return _uint256(self.creation_round) + self.creation_round_block_hash

    def packed(self) -> bytes:
        """abi.encodePacked of the ticket's fields in TicketBroker's order."""
        return b"".join(
            (
                self.recipient,
                self.sender,
                _uint256(self.face_value),
                _uint256(self.win_prob),
                _uint256(self.sender_nonce),
                self.recipient_rand_hash,
                self.aux_data,
            )
        )

    def hash(self) -> bytes:
        """The 32-byte ticket hash, as TicketBroker's getTicketHash computes it."""
        return keccak256(self.packed())

    def recover_signer(self, sig: bytes) -> bytes:
        """The address that signed this ticket; raises InvalidSignature for a malformed one."""
        return recover(self.hash(), sig)

    def is_winning(self, sig: bytes, recipient_rand: int) -> bool:
        """Whether this ticket wins with the signature and the recipient's rand."""
        return is_winning(sig, recipient_rand, self.win_prob)

    def expected_value(self) -> Fraction:
        """faceValue x winProb / (2^256 - 1), in wei, exact."""
        return expected_value(self.face_value, self.win_prob)

    def as_abi_tuple(self) -> tuple[str, str, int, int, int, bytes, bytes]:
        """The (address,address,uint256,uint256,uint256,bytes32,bytes) tuple for web3 calls."""
        return (
            "0x" + self.recipient.hex(),
            "0x" + self.sender.hex(),
            self.face_value,
            self.win_prob,
            self.sender_nonce,
            self.recipient_rand_hash,
            self.aux_data,
        )


@dataclass(frozen=True, slots=True)
class SignedTicket:
    """A winning ticket as redemption sends it: the ticket, its signature and the recipient's
    rand (go-livepeer's ``SignedTicket``)."""

    ticket: Ticket
    sig: bytes
    recipient_rand: int

    def hash(self) -> bytes:
        """The ticket's hash."""
        return self.ticket.hash()


def parse_aux_data(aux_data: bytes) -> tuple[int, bytes]:
    """(creationRound, creationRoundBlockHash) from auxData; empty means (0, zero hash)."""
    if aux_data == b"":
        return 0, ZERO_HASH
    if len(aux_data) != 64:
        raise InvalidAuxData("invalid length for ticket auxData: must be 64 bytes")
    return int.from_bytes(aux_data[:32], "big"), aux_data[32:]


def recipient_rand_hash(recipient_rand: int) -> bytes:
    """The commitment to a recipient rand: keccak256 of it as a 32-byte big-endian uint256."""
    return keccak256(_uint256(recipient_rand))


def is_winning(sig: bytes, recipient_rand: int, win_prob: int) -> bool:
    """TicketBroker's win check: uint256(keccak256(sig ‖ uint256 rand)) < winProb."""
    return int.from_bytes(keccak256(sig + _uint256(recipient_rand)), "big") < win_prob


def expected_value(face_value: int, win_prob: int) -> Fraction:
    """What a ticket is worth on average: faceValue x winProb / (2^256 - 1), as go-livepeer's
    Ticket.EV, so a sender's and a recipient's books agree to the wei."""
    return Fraction(face_value * win_prob, MAX_WIN_PROB)

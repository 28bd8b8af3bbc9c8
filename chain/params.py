"""The recipient's side of a ticket: the params an orchestrator hands a sender.

Following go-livepeer's ``pm/recipient.go``:

- ``recipientRand = HMAC-SHA256(secret, seed ‖ sender ‖ faceValue ‖ winProb ‖ expirationBlock
  ‖ price numerator ‖ price denominator ‖ auxData)``, integers as minimal big-endian bytes. The
  recipient keeps no state per sender: the seed and params come back with every ticket, and a
  sender that alters any of them fails the rand/hash check.
- ``recipientRandHash = keccak256(uint256 rand)`` is the commitment the sender signs over.
- faceValue is what a redemption transaction costs times a multiplier, capped by what the
  sender can cover; winProb makes faceValue x winProb / (2^256 - 1) at least the ticket's EV.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Protocol

from chain.errors import InsufficientSenderReserve
from chain.tickets import MAX_WIN_PROB, ZERO_HASH, Ticket, recipient_rand_hash

__all__ = [
    "DEFAULT_REDEEM_GAS_L2",
    "DEFAULT_TICKET_EV",
    "PARAMS_EXPIRY_BLOCKS",
    "ParamsChain",
    "RecipientConfig",
    "TicketParams",
    "TicketParamsIssuer",
    "creation_round",
    "face_value",
    "issue_params",
    "win_prob",
]

#: Blocks (L1) a set of params stays valid after the last block the recipient saw.
PARAMS_EXPIRY_BLOCKS: Final = 40
#: faceValue = EV x this when the transaction cost comes out lower than EV.
EV_MULTIPLIER: Final = 100
#: go-livepeer's hard-coded average gas price (3 gwei) for the last tx-cost check.
AVG_GAS_PRICE: Final = 3_000_000_000
DEFAULT_REDEEM_GAS_L2: Final = 1_200_000
DEFAULT_TICKET_EV: Final = 8_000_000_000
DEFAULT_TX_COST_MULTIPLIER: Final = 100


def _min_bytes(value: int) -> bytes:
    """big.Int.Bytes(): minimal big-endian, empty for zero."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


@dataclass(frozen=True, slots=True)
class RecipientConfig:
    """How an orchestrator prices its tickets (go-livepeer's -ticketEV, -maxFaceValue …)."""

    ev: int = DEFAULT_TICKET_EV
    redeem_gas: int = DEFAULT_REDEEM_GAS_L2
    tx_cost_multiplier: int = DEFAULT_TX_COST_MULTIPLIER
    min_gas_price: int = 0
    #: 0 for no cap.
    max_face_value: int = 0

    def __post_init__(self) -> None:
        if self.ev <= 0:
            raise ValueError("ev must be positive")
        if self.redeem_gas <= 0 or self.tx_cost_multiplier <= 0:
            raise ValueError("redeem_gas and tx_cost_multiplier must be positive")
        if self.min_gas_price < 0 or self.max_face_value < 0:
            raise ValueError("min_gas_price and max_face_value cannot be negative")


def face_value(config: RecipientConfig, gas_price: int, max_float: int) -> int:
    """The face value for a sender whose reserve allocation leaves it ``max_float`` wei.

    Raises InsufficientSenderReserve when the cap leaves less than EV, or less than the
    redemption's cost both at ``gas_price`` and at a 3 gwei average.
    """
    gas_price = max(gas_price, config.min_gas_price)
    tx_cost = config.redeem_gas * gas_price
    value = tx_cost * config.tx_cost_multiplier
    if value < config.ev:
        value = config.ev * EV_MULTIPLIER
    value = min(value, max_float)
    if config.max_face_value > 0:
        value = min(value, config.max_face_value)
    if value < config.ev:
        raise InsufficientSenderReserve(
            f"insufficient sender reserve: face value {value} is below the ticket EV {config.ev}"
        )
    if value < tx_cost and value < config.redeem_gas * AVG_GAS_PRICE:
        raise InsufficientSenderReserve(
            f"insufficient sender reserve: face value {value} is below the redeem cost {tx_cost}"
        )
    return value


def win_prob(ev: int, face_value: int) -> int:
    """EV x ceil((2^256 - 1) / faceValue): 0 for a zero face value, and capped at 2^256 - 1
    (which the formula passes by under EV wei when EV does not divide 2^256 - 1)."""
    if face_value == 0:
        return 0
    return min(ev * -(-MAX_WIN_PROB // face_value), MAX_WIN_PROB)


def creation_round(
    last_initialized: int, block_hash_for_round: Callable[[int], bytes]
) -> tuple[int, bytes]:
    """The round and block hash to stamp on new tickets: the last initialized round, or the
    one before it when its block hash reads as zero (Arbitrum can report one, go-livepeer
    #2360)."""
    block_hash = block_hash_for_round(last_initialized)
    if block_hash == ZERO_HASH and last_initialized > 0:
        return last_initialized - 1, block_hash_for_round(last_initialized - 1)
    return last_initialized, block_hash


@dataclass(frozen=True, slots=True)
class TicketParams:
    """What the recipient sends a sender, and what comes back with each ticket."""

    recipient: bytes
    face_value: int
    win_prob: int
    recipient_rand_hash: bytes
    seed: int
    expiration_block: int
    price_per_pixel: Fraction
    creation_round: int
    creation_round_block_hash: bytes

    def ticket(self, sender: bytes, sender_nonce: int) -> Ticket:
        """The ticket a sender makes from these params."""
        return Ticket(
            recipient=self.recipient,
            sender=sender,
            face_value=self.face_value,
            win_prob=self.win_prob,
            sender_nonce=sender_nonce,
            recipient_rand_hash=self.recipient_rand_hash,
            creation_round=self.creation_round,
            creation_round_block_hash=self.creation_round_block_hash,
        )


class TicketParamsIssuer:
    """An orchestrator's address, its secret and pricing: issues params, re-derives rands."""

    def __init__(
        self, recipient: bytes, config: RecipientConfig, secret: bytes | None = None
    ) -> None:
        if len(recipient) != 20:
            raise ValueError("recipient must be 20 bytes")
        if secret is not None and len(secret) != 32:
            raise ValueError("the secret must be 32 bytes")
        self.recipient = recipient
        self.config = config
        # go-livepeer draws a new secret per process; outstanding params die with it.
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    def __repr__(self) -> str:  # never show the secret
        return f"TicketParamsIssuer(0x{self.recipient.hex()})"

    def recipient_rand(
        self,
        seed: int,
        sender: bytes,
        face_value: int,
        win_prob: int,
        expiration_block: int,
        price_per_pixel: Fraction,
        aux_data: bytes,
    ) -> int:
        """The rand behind a set of params, as an integer."""
        message = b"".join(
            (
                _min_bytes(seed),
                sender,
                _min_bytes(face_value),
                _min_bytes(win_prob),
                _min_bytes(expiration_block),
                _min_bytes(price_per_pixel.numerator),
                _min_bytes(price_per_pixel.denominator),
                aux_data,
            )
        )
        return int.from_bytes(hmac.digest(self._secret, message, hashlib.sha256), "big")

    def ticket_params(
        self,
        sender: bytes,
        price_per_pixel: Fraction,
        *,
        gas_price: int,
        max_float: int,
        last_seen_l1_block: int,
        creation_round: int,
        creation_round_block_hash: bytes,
        seed: int | None = None,
    ) -> TicketParams:
        """Fresh params for ``sender``; ``max_float`` is what its reserve allocation covers."""
        if price_per_pixel < 0:
            raise ValueError("price_per_pixel cannot be negative")
        value = face_value(self.config, gas_price, max_float)
        prob = win_prob(self.config.ev, value)
        expiration_block = last_seen_l1_block + PARAMS_EXPIRY_BLOCKS
        seed = seed if seed is not None else int.from_bytes(secrets.token_bytes(32), "big")
        aux = Ticket(
            recipient=self.recipient,
            sender=sender,
            face_value=value,
            win_prob=prob,
            sender_nonce=0,
            recipient_rand_hash=ZERO_HASH,
            creation_round=creation_round,
            creation_round_block_hash=creation_round_block_hash,
        ).aux_data
        rand = self.recipient_rand(
            seed, sender, value, prob, expiration_block, price_per_pixel, aux
        )
        return TicketParams(
            recipient=self.recipient,
            face_value=value,
            win_prob=prob,
            recipient_rand_hash=recipient_rand_hash(rand),
            seed=seed,
            expiration_block=expiration_block,
            price_per_pixel=price_per_pixel,
            creation_round=creation_round,
            creation_round_block_hash=creation_round_block_hash,
        )


class ParamsChain(Protocol):
    """What issuing params reads from the chain (chain.client.ChainClient provides it)."""

    def gas_price(self) -> int: ...

    def max_float(self, sender: bytes, recipient: bytes, *, pending: int = 0) -> int: ...

    def last_seen_l1_block(self) -> int: ...

    def last_initialized_round(self) -> int: ...

    def block_hash_for_round(self, round: int) -> bytes: ...


def issue_params(
    issuer: TicketParamsIssuer,
    chain: ParamsChain,
    sender: bytes,
    price_per_pixel: Fraction,
    *,
    pending: int,
) -> TicketParams:
    """Fresh params for ``sender`` from the chain as it stands: the current creation round,
    the gas price, and what the sender can still pay this recipient, less ``pending`` (the
    face value of its winners not yet redeemed, which are owed already)."""
    round_, block_hash = creation_round(chain.last_initialized_round(), chain.block_hash_for_round)
    return issuer.ticket_params(
        sender,
        price_per_pixel,
        gas_price=chain.gas_price(),
        max_float=chain.max_float(sender, issuer.recipient, pending=pending),
        last_seen_l1_block=chain.last_seen_l1_block(),
        creation_round=round_,
        creation_round_block_hash=block_hash,
    )

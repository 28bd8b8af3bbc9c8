"""Receiving a ticket: go-livepeer's ReceiveTicket, step for step.

1. derive the recipient rand from the params that came back with the ticket;
2. refuse a sender whose deposit unlocks by the next round;
3. check recipient, sender, the rand against recipientRandHash, and the signature;
4. run the win check;
5. refuse a replayed sender nonce, or too many under one recipientRandHash;
6. report expired params as non-fatal: the receipt still counts and a winner is still queued.

Like go-livepeer it does not check creationRound when a ticket arrives; redemption does. The
chain is read through :class:`chain.broker.ChainView`, the part of the Broker validation
needs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Protocol

import redis

from chain.broker import ChainView
from chain.errors import (
    InvalidRecipient,
    InvalidRecipientRand,
    InvalidSender,
    InvalidSignature,
    NonceReplayed,
    SenderUnlocking,
    TicketError,
    TicketParamsExpired,
    TooManyNonces,
)
from chain.params import TicketParamsIssuer
from chain.queue import Winner
from chain.signing import recover
from chain.tickets import ZERO_ADDRESS, Ticket, is_winning, recipient_rand_hash

__all__ = [
    "MAX_SENDER_NONCES",
    "NONCE_TTL_S",
    "ChainView",
    "MemoryNonceStore",
    "NonceStore",
    "Receipt",
    "RedisNonceStore",
    "StaticChainView",
    "TicketReceiver",
    "winners_of",
]

#: Nonces one sender may use under one recipientRandHash (go-livepeer's maxSenderNonces).
MAX_SENDER_NONCES: Final = 600
#: How long a recipientRandHash's nonces are remembered. go-livepeer forgets them once the
#: params expire (40 blocks); remembering them for two days, past a ticket's two-round
#: validity, means an expired-params ticket (accepted, non-fatal) cannot be replayed later.
NONCE_TTL_S: Final = 2 * 24 * 3600


@dataclass
class StaticChainView:
    """A ChainView with fixed numbers, for tests and for offline use."""

    round: int = 0
    l1_block: int = 0
    withdraw_rounds: dict[bytes, int] | None = None

    def withdraw_round(self, sender: bytes) -> int:
        """The configured withdraw round for ``sender``, 0 by default."""
        return (self.withdraw_rounds or {}).get(sender, 0)

    def last_initialized_round(self) -> int:
        """The configured round."""
        return self.round

    def last_seen_l1_block(self) -> int:
        """The configured L1 block."""
        return self.l1_block


class NonceStore(Protocol):
    """Remembers the sender nonces seen under each recipientRandHash."""

    def add(self, rand_hash: bytes, nonce: int) -> None:
        """Record ``nonce``; raise NonceReplayed if it was seen, TooManyNonces if full."""
        ...

    def add_all(self, nonces: Sequence[tuple[bytes, int]]) -> tuple[int, NonceError | None]:
        """``add`` each (rand_hash, nonce) in order up to the first refusal; (how many were
        recorded, that refusal or None)."""
        ...

    def discard(self, rand_hash: bytes, nonce: int) -> None:
        """Forget ``nonce`` again: its ticket was part of a payment refused as a whole."""
        ...


_ADD_NONCE: Final = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return -1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return -2 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

#: _ADD_NONCE for a payment's tickets in order (KEYS[i] and ARGV[2 + i]; ARGV[1] the cap,
#: ARGV[2] the TTL), stopping at the first refused: {nonces added, 1 or that one's code}.
_ADD_NONCES: Final = """
for i = 1, #KEYS do
  local nonce = ARGV[i + 2]
  if redis.call('SISMEMBER', KEYS[i], nonce) == 1 then return {i - 1, -1} end
  if redis.call('SCARD', KEYS[i]) >= tonumber(ARGV[1]) then return {i - 1, -2} end
  redis.call('SADD', KEYS[i], nonce)
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return {#KEYS, 1}
"""


class RedisNonceStore:
    """A Redis set per recipientRandHash, checked and extended atomically by one script."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "farm:chain:nonces:",
        max_nonces: int = MAX_SENDER_NONCES,
        ttl_s: int = NONCE_TTL_S,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._max = max_nonces
        self._ttl = ttl_s
        self._script = client.register_script(_ADD_NONCE)
        self._batch = client.register_script(_ADD_NONCES)

    def add(self, rand_hash: bytes, nonce: int) -> None:
        """Record ``nonce``; raise NonceReplayed if it was seen, TooManyNonces if full."""
        key = self._prefix + rand_hash.hex()
        result = self._script(keys=[key], args=[nonce, self._max, self._ttl])
        _raise_for(int(result), rand_hash, nonce)

    def add_all(self, nonces: Sequence[tuple[bytes, int]]) -> tuple[int, NonceError | None]:
        """Record each (rand_hash, nonce) in order, in one round trip, up to the first one
        ``add`` would refuse; (how many were recorded, that refusal or None)."""
        if not nonces:
            return 0, None
        keys = [self._prefix + rand_hash.hex() for rand_hash, _ in nonces]
        args = [self._max, self._ttl, *(nonce for _, nonce in nonces)]
        added, code = (int(x) for x in self._batch(keys=keys, args=args))
        if added == len(nonces):
            return added, None
        return added, _refusal(int(code), *nonces[added])

    def discard(self, rand_hash: bytes, nonce: int) -> None:
        """Forget ``nonce`` again: its ticket was part of a payment refused as a whole."""
        self._client.srem(self._prefix + rand_hash.hex(), nonce)


class MemoryNonceStore:
    """The same contract in process memory, for tests and a single-process node."""

    def __init__(self, *, max_nonces: int = MAX_SENDER_NONCES, ttl_s: float = NONCE_TTL_S) -> None:
        self._max = max_nonces
        self._ttl = ttl_s
        self._sets: dict[bytes, tuple[float, set[int]]] = {}

    def add(self, rand_hash: bytes, nonce: int) -> None:
        """Record ``nonce``; raise NonceReplayed if it was seen, TooManyNonces if full."""
        now = time.monotonic()
        expires, seen = self._sets.get(rand_hash, (0.0, set()))
        if expires <= now:
            seen = set()
        result = -1 if nonce in seen else -2 if len(seen) >= self._max else 1
        _raise_for(result, rand_hash, nonce)
        seen.add(nonce)
        self._sets[rand_hash] = (now + self._ttl, seen)

    def add_all(self, nonces: Sequence[tuple[bytes, int]]) -> tuple[int, NonceError | None]:
        """Record each (rand_hash, nonce) in order up to the first one ``add`` refuses;
        (how many were recorded, that refusal or None)."""
        return _add_each(self, nonces)

    def discard(self, rand_hash: bytes, nonce: int) -> None:
        """Forget ``nonce`` again: its ticket was part of a payment refused as a whole."""
        self._sets.get(rand_hash, (0.0, set()))[1].discard(nonce)


NonceError = NonceReplayed | TooManyNonces


def _add_each(
    store: NonceStore, nonces: Sequence[tuple[bytes, int]]
) -> tuple[int, NonceError | None]:
    for i, (rand_hash, nonce) in enumerate(nonces):
        try:
            store.add(rand_hash, nonce)
        except (NonceReplayed, TooManyNonces) as e:
            return i, e
    return len(nonces), None


def _refusal(result: int, rand_hash: bytes, nonce: int) -> NonceError | None:
    if result == -1:
        return NonceReplayed(f"sender nonce {nonce} already used for 0x{rand_hash.hex()}")
    if result == -2:
        return TooManyNonces(f"too many sender nonces for 0x{rand_hash.hex()} (nonce {nonce})")
    return None


def _raise_for(result: int, rand_hash: bytes, nonce: int) -> None:
    error = _refusal(result, rand_hash, nonce)
    if error is not None:
        raise error


@dataclass(frozen=True, slots=True)
class Receipt:
    """A ticket that passed validation: what to credit, and what to keep if it won."""

    ticket: Ticket
    sig: bytes
    ticket_hash: bytes
    recipient_rand: int
    won: bool
    #: faceValue x winProb / (2^256 - 1) wei, exact: what the sender is credited.
    expected_value: Fraction


def winners_of(receipts: Sequence[Receipt], expiration_block: int) -> list[Winner]:
    """The winning tickets among ``receipts`` (of params expiring at ``expiration_block``), as
    the ticket queue stores them."""
    return [(r.ticket, r.sig, r.recipient_rand, expiration_block) for r in receipts if r.won]


class TicketReceiver:
    """Validates the tickets paid to one recipient, in go-livepeer's order."""

    def __init__(self, issuer: TicketParamsIssuer, chain: ChainView, nonces: NonceStore) -> None:
        self.issuer = issuer
        self.chain = chain
        self.nonces = nonces

    def receive_ticket(
        self,
        ticket: Ticket,
        sig: bytes,
        *,
        seed: int,
        expiration_block: int,
        price_per_pixel: Fraction,
    ) -> Receipt:
        """Validate one ticket with the params it was made from.

        Raises a TicketError; for TicketParamsExpired (not fatal) ``error.receipt`` still
        holds the credit and, when it won, the ticket to queue for redemption.
        """
        receipt = self._check(ticket, sig, seed, expiration_block, price_per_pixel)
        self.nonces.add(ticket.recipient_rand_hash, ticket.sender_nonce)
        if expiration_block <= self.chain.last_seen_l1_block():
            raise TicketParamsExpired(f"ticket params expired at block {expiration_block}", receipt)
        return receipt

    def receive_tickets(
        self,
        tickets: Sequence[tuple[Ticket, bytes]],
        *,
        seed: int,
        expiration_block: int,
        price_per_pixel: Fraction,
    ) -> tuple[list[Receipt], TicketError | None]:
        """A payment's tickets, as ``receive_ticket`` one after the other until the first
        error, with their nonces recorded in one round trip: (the receipts of the tickets
        before the first error, that error or None).

        Every ticket that ``receive_ticket`` would have accepted before the error has its
        receipt, and only those have their nonces recorded. TicketParamsExpired comes with
        the first ticket's receipt (its ``receipt``), as ``receive_ticket`` would answer it.
        """
        expired = expiration_block <= self.chain.last_seen_l1_block()
        if expired:
            tickets = tickets[:1]  # receive_ticket stops after the first one's answer
        receipts: list[Receipt] = []
        error: TicketError | None = None
        for ticket, sig in tickets:
            try:
                receipts.append(self._check(ticket, sig, seed, expiration_block, price_per_pixel))
            except TicketError as e:
                error = e
                break
        added, refused = self.nonces.add_all(
            [(r.ticket.recipient_rand_hash, r.ticket.sender_nonce) for r in receipts]
        )
        if refused is not None:
            return receipts[:added], refused
        if expired and receipts:
            message = f"ticket params expired at block {expiration_block}"
            return receipts, TicketParamsExpired(message, receipts[0])
        return receipts, error

    def _check(
        self,
        ticket: Ticket,
        sig: bytes,
        seed: int,
        expiration_block: int,
        price_per_pixel: Fraction,
    ) -> Receipt:
        """Steps 1-4: the ticket's receipt, or the TicketError refusing it."""
        rand = self.issuer.recipient_rand(
            seed,
            ticket.sender,
            ticket.face_value,
            ticket.win_prob,
            expiration_block,
            price_per_pixel,
            ticket.aux_data,
        )
        withdraw_round = self.chain.withdraw_round(ticket.sender)
        if withdraw_round != 0 and withdraw_round <= self.chain.last_initialized_round() + 1:
            raise SenderUnlocking(
                f"sender 0x{ticket.sender.hex()} unlocks in round {withdraw_round}"
            )
        if ticket.recipient != self.issuer.recipient:
            raise InvalidRecipient(f"ticket is for 0x{ticket.recipient.hex()}, not this node")
        if ticket.sender == ZERO_ADDRESS:
            raise InvalidSender("ticket sender is the zero address")
        if recipient_rand_hash(rand) != ticket.recipient_rand_hash:
            raise InvalidRecipientRand("recipientRand does not match recipientRandHash")
        ticket_hash = ticket.hash()
        if recover(ticket_hash, sig) != ticket.sender:
            raise InvalidSignature("invalid signature over ticket hash")
        return Receipt(
            ticket=ticket,
            sig=sig,
            ticket_hash=ticket_hash,
            recipient_rand=rand,
            won=is_winning(sig, rand, ticket.win_prob),
            expected_value=ticket.expected_value(),
        )

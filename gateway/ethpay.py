"""ETH-deposit payment: clients pay jobs with Livepeer tickets in a ``Livepeer-Payment`` header
(go-livepeer's base64 protobuf ``net.Payment``, chain.payment).

The gateway is the tickets' recipient, as an orchestrator is in go-livepeer: a client asks for
ticket params (``GET /api/ticket-params?sender=0x…``), signs tickets with
``chain.sender.TicketSender``, and sends them with each job. Each valid ticket credits its
expected value to the sender's balance; each job is debited the advertised price per pixel
times the encoded pixels, as go-livepeer's orchestrator does; too little balance gets
go-livepeer's answer, 400 "Insufficient balance". Winning tickets are stored durably before
the job runs, for the redemption task.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import redis
from sqlalchemy import Engine, insert
from sqlalchemy.exc import IntegrityError

from chain.errors import ChainError, InsufficientSenderReserve, TicketError, TicketParamsExpired
from chain.params import ParamsChain, RecipientConfig, TicketParamsIssuer, issue_params
from chain.payment import Payment, PaymentMalformed, decode_payment, params_to_json
from chain.queue import TicketQueue
from chain.validation import RedisNonceStore, TicketReceiver, winners_of
from farm.runtime import redis_py_url, utcnow
from gateway import metrics as gateway_metrics
from gateway.errors import BadRequest, InsufficientCredit, Unavailable
from gateway.ledger import Ledger
from gateway.models import ApiKey
from gateway.payments import CreditPayment, Hold

__all__ = ["EthPayments", "TicketChain", "TicketPayment", "parse_price"]

log = logging.getLogger(__name__)

#: Where the operator's ticket price lives (``price_per_unit/pixels_per_unit``).
PRICE_KEY = "farm:gateway:eth-price"
#: How long a gateway process trusts its copy of the price.
PRICE_CACHE_S = 1.0


def parse_price(raw: str) -> Fraction:
    num, _, den = raw.partition("/")
    return Fraction(int(num), int(den or "1"))


class TicketChain(ParamsChain, Protocol):
    """What ticket payments read from the chain (chain.client.ChainClient provides it)."""

    def withdraw_round(self, sender: bytes) -> int: ...


@dataclass(frozen=True, slots=True)
class Credited:
    """What one Livepeer-Payment header brought: the sender's account and the credit."""

    key_id: str
    credit: int
    winners: int
    #: The price the sender was quoted in the params it paid with, wei per pixel.
    price_per_pixel: Fraction


class EthPayments:
    """Issues ticket params, validates payments, credits senders, queues winners."""

    def __init__(
        self,
        chain: TicketChain,
        ledger: Ledger,
        engine: Engine,
        redis_url: str,
        recipient: bytes,
        secret: bytes,
        price_per_pixel: Fraction,
        config: RecipientConfig | None = None,
    ) -> None:
        self.chain = chain
        self.ledger = ledger
        self._default_price = price_per_pixel
        self._price: tuple[float, Fraction] = (float("-inf"), price_per_pixel)
        self.issuer = TicketParamsIssuer(recipient, config or RecipientConfig(), secret)
        self._redis = redis.Redis.from_url(redis_py_url(redis_url))
        self.receiver = TicketReceiver(self.issuer, chain, RedisNonceStore(self._redis))
        self.queue = TicketQueue(engine)
        self.queue.create_schema()
        self._accounts: set[str] = set()
        self._lock = threading.Lock()

    def ticket_params(self, sender: bytes) -> dict[str, Any]:
        """Fresh params for ``sender`` and the price they pay per pixel."""
        with _chain_errors():
            return self._ticket_params(sender)

    def _ticket_params(self, sender: bytes) -> dict[str, Any]:
        params = issue_params(
            self.issuer,
            self.chain,
            sender,
            self.price_per_pixel,
            pending=self.queue.pending_face_value(sender),
        )
        return {
            "ticketParams": params_to_json(params),
            "price": {
                "pricePerUnit": self.price_per_pixel.numerator,
                "pixelsPerUnit": self.price_per_pixel.denominator,
            },
        }

    def account(self, sender: bytes) -> str:
        """The ledger account holding ``sender``'s ticket credit (created on first use)."""
        key_id = "eth" + hashlib.sha256(sender).hexdigest()[:29]
        with self._lock:
            if key_id in self._accounts:
                return key_id
        try:
            with self.ledger.engine.begin() as conn:
                conn.execute(
                    insert(ApiKey).values(
                        id=key_id,
                        name=f"eth:0x{sender.hex()}",
                        balance=0,
                        created_at=utcnow(),
                        # Never a bearer key: the hash of nothing anyone can send.
                        key_hash=hashlib.sha256(b"eth-account:" + sender).hexdigest(),
                    )
                )
        except IntegrityError:
            pass
        with self._lock:
            self._accounts.add(key_id)
        return key_id

    def receive(self, header: str) -> Credited:
        """Validate every ticket of a payment; credit the sender; queue the winners."""
        try:
            payment: Payment = decode_payment(header)
        except PaymentMalformed as e:
            raise BadRequest(f"invalid Livepeer-Payment: {e}") from e
        with _chain_errors():
            return self._receive(header, payment)

    def _receive(self, header: str, payment: Payment) -> Credited:
        key_id = self.account(payment.sender)
        if payment.params is None or not payment.tickets:
            # A sender spending credit it already has: nothing binds a price it states
            # without tickets, so it pays the price quoted now.
            return Credited(key_id, 0, 0, self.price_per_pixel)
        params = payment.params
        # All or nothing: a payment with any bad ticket is refused whole, with no credit and
        # no winner kept, so a client can never half-pay. The tickets are checked in
        # ReceiveTicket's order and their nonces recorded in one round trip.
        receipts, error = self.receiver.receive_tickets(
            payment.tickets,
            seed=params.seed,
            expiration_block=params.expiration_block,
            price_per_pixel=params.price_per_pixel,
        )
        if error is not None:
            # The tickets accepted before the refused one are not spent: their nonces may
            # come again in a corrected payment. (Expired params answer with the first
            # ticket's own receipt; its nonce stays spent, as the params are.)
            if not isinstance(error, TicketParamsExpired):
                for accepted in receipts:
                    self.receiver.nonces.discard(
                        accepted.ticket.recipient_rand_hash, accepted.ticket.sender_nonce
                    )
            gateway_metrics.payment_refused(type(error).__name__)
            if isinstance(error, TicketParamsExpired):
                # go-livepeer accepts these with a warning; this gateway asks for fresh
                # params instead, so old params can never be spent again.
                raise BadRequest(f"invalid ticket: {error}; fetch new ticket params") from error
            raise BadRequest(f"invalid ticket: {error}") from error
        credit = sum((r.expected_value for r in receipts), Fraction(0))
        for receipt in receipts:
            gateway_metrics.ticket_received(float(receipt.expected_value) / 1e9)
            if receipt.won:
                gateway_metrics.winning_ticket_received()
        winners = winners_of(receipts, params.expiration_block)
        # Durable before the job runs, so no winner is lost with the request: in one
        # transaction.
        if winners:
            self.queue.add_all(winners)
        amount = int(credit)  # whole wei; the fraction of a wei stays with the gateway
        if amount:
            self.ledger.topup(key_id, amount, idempotency_key=f"tickets:{header[-64:]}")
        return Credited(key_id, amount, len(winners), params.price_per_pixel)

    @staticmethod
    def cost(pixels: int, price_per_pixel: Fraction) -> int:
        """Wei for ``pixels`` at ``price_per_pixel``, rounded up."""
        return -(-pixels * price_per_pixel.numerator // price_per_pixel.denominator)

    @property
    def price_per_pixel(self) -> Fraction:
        """The price quoted in new ticket params: the operator's (``farm chain config
        --price-per-unit``), shared by every gateway process through Redis, else the setting."""
        now = time.monotonic()
        if now - self._price[0] > PRICE_CACHE_S:
            raw = self._redis.get(PRICE_KEY)
            text = raw.decode() if isinstance(raw, bytes) else raw
            price = parse_price(text) if text else self._default_price
            self._price = (now, price)
        return self._price[1]

    def set_price(self, price_per_unit: int, pixels_per_unit: int) -> Fraction:
        """Quote ``price_per_unit`` wei per ``pixels_per_unit`` pixels in new params from now
        on; params already issued keep the price they were issued with."""
        if price_per_unit < 0 or pixels_per_unit <= 0:
            raise BadRequest("price_per_unit must be >= 0 and pixels_per_unit > 0")
        price = Fraction(price_per_unit, pixels_per_unit)
        self._redis.set(PRICE_KEY, f"{price_per_unit}/{pixels_per_unit}")
        self._price = (time.monotonic(), price)
        return price

    def close(self) -> None:
        self._redis.close()


@contextmanager
def _chain_errors() -> Iterator[None]:
    """Chain failures as the gateway's errors: the sender's problem (400) or the node's (503)."""
    try:
        yield
    except InsufficientSenderReserve as e:
        raise BadRequest(str(e)) from e
    except ChainError as e:
        if isinstance(e, TicketError):
            raise
        raise Unavailable(f"chain unavailable: {e}") from e


class TicketPayment:
    """Payment from a ticket-funded balance: go-livepeer's 400 when it runs short."""

    def __init__(self, ledger: Ledger, key_id: str) -> None:
        self._credit = CreditPayment(ledger, key_id)

    @contextmanager
    def hold(self, ref: str, estimate: int) -> Iterator[Hold]:
        try:
            with self._credit.hold(ref, estimate) as hold:
                yield hold
        except InsufficientCredit as e:
            raise BadRequest(f"Insufficient balance: {e}") from e

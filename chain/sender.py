"""The sender's side (Python SDK): make and sign tickets that pay for jobs.

    sender = TicketSender(private_key)
    header = sender.pay(params, value_wei)       # params from the gateway's ticket-params route
    requests.post(url, data=segment, headers={"Livepeer-Payment": header, ...})

Each ticket is worth faceValue x winProb / (2^256 - 1) in expectation; ``pay`` signs enough of
them to cover ``value_wei``, with increasing nonces per recipientRandHash.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from fractions import Fraction
from typing import Final

from chain.params import TicketParams
from chain.payment import MAX_TICKETS, encode_payment
from chain.signing import Signer

__all__ = ["FEE_MARGIN", "TicketSender", "fee_pixels", "tickets_needed"]

#: go-livepeer's gateway pays 2 % over its estimate of a segment's pixels (the exact double).
FEE_MARGIN: Final = Fraction(1.02)


def fee_pixels(profiles: Iterable[tuple[int, int, Fraction]], duration_s: float) -> int:
    """The pixels a go-livepeer gateway pays ahead for a segment: the sum over its profiles
    (width, height, frame rate) of width x height x ceil(fps) x ceil(seconds), with a frame
    rate of 0 (pass-through) counted as 60."""
    seconds = math.ceil(duration_s)
    return sum(w * h * (math.ceil(fps) if fps else 60) * seconds for w, h, fps in profiles)


def tickets_needed(balance: Fraction, min_credit: Fraction, ev: Fraction) -> int:
    """Tickets a sender sends to bring ``balance`` up to ``min_credit`` (go-livepeer's
    StageUpdate): none while the balance covers it, else enough of ``ev`` each."""
    if balance >= min_credit:
        return 0
    return math.ceil((min_credit - balance) / ev)


class TicketSender:
    """Signs tickets for one sender key; thread-safe nonce counters per params."""

    def __init__(self, private_key: bytes | str) -> None:
        key = (
            bytes.fromhex(private_key.removeprefix("0x"))
            if isinstance(private_key, str)
            else private_key
        )
        self.signer = Signer(key)
        self._nonces: dict[bytes, int] = {}
        self._lock = threading.Lock()

    @property
    def address(self) -> bytes:
        return self.signer.address

    def tickets_for(self, params: TicketParams, value_wei: int) -> int:
        """How many tickets cover ``value_wei`` in expected value."""
        ev = params.ticket(self.address, 0).expected_value()
        if ev <= 0:
            raise ValueError("these ticket params carry no value")
        return max(1, math.ceil(value_wei / ev))

    def pay(self, params: TicketParams, value_wei: int) -> str:
        """A Livepeer-Payment header worth at least ``value_wei`` in expected value."""
        count = self.tickets_for(params, value_wei)
        if count > MAX_TICKETS:
            raise ValueError(f"{count} tickets needed; ask for params with a larger face value")
        with self._lock:
            first = self._nonces.get(params.recipient_rand_hash, 0) + 1
            self._nonces[params.recipient_rand_hash] = first + count - 1
        signed = []
        for nonce in range(first, first + count):
            ticket = params.ticket(self.address, nonce)
            signed.append((nonce, self.signer.sign_hash(ticket.hash())))
        return encode_payment(self.address, params, signed)

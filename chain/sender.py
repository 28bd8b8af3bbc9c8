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

from chain.params import TicketParams
from chain.payment import MAX_TICKETS, encode_payment
from chain.signing import Signer

__all__ = ["TicketSender"]


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

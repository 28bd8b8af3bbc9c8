"""How a job is paid for: the seam between the routes and the ways of paying.

A route asks :func:`payment_for` for the caller's :class:`PaymentMethod` and runs the job
inside ``payment.hold(ref, estimate)``. API keys pay from their credit balance; streams the
auth webhook allowed are billed outside the gateway. ETH deposits paid with Livepeer tickets
(a ``Livepeer-Payment`` header, the chain issue) are a third implementation of the same
protocol: validate the tickets, credit their expected value, then hold and settle the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from gateway.ledger import Ledger

__all__ = ["CreditPayment", "ExternalPayment", "Hold", "PaymentMethod"]


class Hold:
    """A reservation in progress: the route sets ``actual`` once the job's cost is known."""

    def __init__(self, reserved: int) -> None:
        self.reserved = reserved
        self.actual: int | None = None
        self.charged = 0


class PaymentMethod(Protocol):
    """One way of paying for jobs."""

    def hold(self, ref: str, estimate: int) -> AbstractContextManager[Hold]: ...


class CreditPayment:
    """An API key's credit: reserve the estimate, settle the actual cost, release on failure."""

    def __init__(self, ledger: Ledger, key_id: str) -> None:
        self.ledger = ledger
        self.key_id = key_id

    @contextmanager
    def hold(self, ref: str, estimate: int) -> Iterator[Hold]:
        self.ledger.reserve(self.key_id, estimate, ref)
        hold = Hold(estimate)
        try:
            yield hold
        except BaseException:
            self.ledger.release(self.key_id, estimate, ref)
            raise
        if hold.actual is None:
            self.ledger.release(self.key_id, estimate, ref)
        else:
            hold.charged = self.ledger.settle(self.key_id, estimate, hold.actual, ref)


class ExternalPayment:
    """Streams the auth webhook allowed: billed by whoever runs the webhook, not here."""

    @contextmanager
    def hold(self, ref: str, estimate: int) -> Iterator[Hold]:
        yield Hold(0)

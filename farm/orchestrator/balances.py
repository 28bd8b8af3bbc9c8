"""Sender balances: credit from tickets, debits for work, kept exactly as fractions of a wei.

go-livepeer keeps a balance per (sender, session) in memory as a big rational, and drops one
that stays idle for 10 minutes. Here the balance is a ``numerator/denominator`` string in
Redis, updated under WATCH so that the node processes behind one service URI share it and a
restart keeps it; it expires after the same idle time.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final

import redis

__all__ = ["IDLE_S", "Balances"]

#: go-livepeer's cleanup of balances nobody has touched.
IDLE_S: Final = 600


def _parse(raw: bytes | str | None) -> Fraction:
    if raw is None:
        return Fraction(0)
    text = raw.decode() if isinstance(raw, bytes) else raw
    num, _, den = text.partition("/")
    return Fraction(int(num), int(den or "1"))


class Balances:
    """Balances of senders with this orchestrator, keyed by (sender, session or capability)."""

    def __init__(self, client: redis.Redis, prefix: str = "farm:orch:balance:") -> None:
        self._redis = client
        self._prefix = prefix

    def _key(self, sender: bytes, session: str) -> str:
        return f"{self._prefix}{sender.hex()}:{session}"

    def get(self, sender: bytes, session: str) -> Fraction:
        """The balance now (0 for one never credited or expired)."""
        return _parse(self._redis.get(self._key(sender, session)))

    def add(self, sender: bytes, session: str, amount: Fraction) -> Fraction:
        """Add ``amount`` (negative to debit); the new balance."""
        key = self._key(sender, session)
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    value = _parse(pipe.get(key)) + amount
                    pipe.multi()
                    pipe.set(key, f"{value.numerator}/{value.denominator}", ex=IDLE_S)
                    pipe.execute()
                    return value
                except redis.WatchError:
                    continue

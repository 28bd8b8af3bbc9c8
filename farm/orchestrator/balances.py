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


#: Set KEYS[1] to ARGV[2] (expiring in ARGV[3] s) if it still holds ARGV[1] ('' for absent):
#: {1}; else {0, what it holds}, for the caller to add to again.
_SWAP = """
local cur = redis.call('GET', KEYS[1])
if (cur == false and ARGV[1] == '') or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return {1}
end
return {0, cur}
"""


def _text(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


class Balances:
    """Balances of senders with this orchestrator, keyed by (sender, session or capability).

    An update is one compare-and-swap script call: the new value is computed here, exactly,
    from the value this process last read or wrote for the key, and written only if Redis
    still holds that value; otherwise the script answers what it holds and the sum is made
    again. Redis stays the only truth (the remembered value is a guess at it), and a key
    updated only through this process costs one round trip."""

    def __init__(self, client: redis.Redis, prefix: str = "farm:orch:balance:") -> None:
        self._redis = client
        self._prefix = prefix
        self._swap = client.register_script(_SWAP)
        #: key -> the raw value this process last saw there ('' for none).
        self._seen: dict[str, str] = {}

    def _key(self, sender: bytes, session: str) -> str:
        return f"{self._prefix}{sender.hex()}:{session}"

    def get(self, sender: bytes, session: str) -> Fraction:
        """The balance now (0 for one never credited or expired)."""
        key = self._key(sender, session)
        raw = self._redis.get(key)
        self._remember(key, raw)
        return _parse(raw)

    def add(self, sender: bytes, session: str, amount: Fraction) -> Fraction:
        """Add ``amount`` (negative to debit); the new balance."""
        key = self._key(sender, session)
        seen = self._seen.get(key, "")
        while True:
            value = _parse(seen or None) + amount
            text = _text(value)
            done = self._swap(keys=[key], args=[seen, text, IDLE_S])
            if int(done[0]) == 1:
                self._remember(key, text)
                return value
            raw = done[1] if len(done) > 1 else None
            seen = (raw.decode() if isinstance(raw, bytes) else raw) or ""

    def _remember(self, key: str, raw: bytes | str | None) -> None:
        if len(self._seen) > 100_000:  # sessions come and go
            self._seen.clear()
        self._seen[key] = (raw.decode() if isinstance(raw, bytes) else raw) or ""

"""The chain as the orchestrator reads it per request, refreshed behind the requests.

Every ``/segment`` refreshes the sender's ticket params and validates its tickets, which reads
the round, its block hash, the latest block, the gas price, whether this node is active, and
the sender's deposit, reserve and unlock round. go-livepeer keeps these in watchers updated
per block. Here a value is read from the chain when first asked for; after ``ttl_s`` (about a
block on L1) the next request still gets it at once while one background thread reads it
again, so a segment waits for no chain round trip in the steady state. A value nobody asked
for in ``max_stale_s`` is read again before it is used.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from chain.client import ChainClient

__all__ = ["CachedChain"]

_T = TypeVar("_T")
log = logging.getLogger(__name__)


class CachedChain:
    """The reads of ``ChainClient`` the orchestrator makes, each cached for ``ttl_s``."""

    def __init__(self, client: ChainClient, ttl_s: float = 2.0, max_stale_s: float = 30.0) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.max_stale_s = max_stale_s
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self._refreshing: set[Hashable] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="chain-refresh")

    def _cached(self, key: Hashable, read: Callable[[], _T]) -> _T:
        if self.ttl_s <= 0:
            return read()
        now = time.monotonic()
        hit = self._values.get(key)
        if hit is not None and now - hit[0] < self.max_stale_s:
            if now - hit[0] >= self.ttl_s:
                self._refresh(key, read)
            value: _T = hit[1]
            return value
        value = read()
        self._store(key, value)
        return value

    def _store(self, key: Hashable, value: object) -> None:
        if len(self._values) > 10_000:  # senders come and go
            self._values.clear()
        self._values[key] = (time.monotonic(), value)

    def _refresh(self, key: Hashable, read: Callable[[], object]) -> None:
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)

        def run() -> None:
            try:
                self._store(key, read())
            except Exception as e:  # the next request past max_stale_s reads it itself
                log.warning("chain read failed: %s", e)
            finally:
                with self._lock:
                    self._refreshing.discard(key)

        self._pool.submit(run)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def last_initialized_round(self) -> int:
        return self._cached("round", self.client.last_initialized_round)

    def current_round(self) -> int:
        return self._cached("current", self.client.current_round)

    def block_hash_for_round(self, round: int) -> bytes:
        return self._cached(("hash", round), lambda: self.client.block_hash_for_round(round))

    def last_seen_l1_block(self) -> int:
        return self._cached("block", self.client.last_seen_l1_block)

    def gas_price(self) -> int:
        return self._cached("gas", self.client.gas_price)

    def is_active_transcoder(self, transcoder: bytes) -> bool:
        return self._cached(
            ("active", transcoder), lambda: self.client.is_active_transcoder(transcoder)
        )

    def withdraw_round(self, sender: bytes) -> int:
        return self._cached(
            ("sender", sender), lambda: self.client.sender_info(sender)
        ).withdraw_round

    def max_float(self, sender: bytes, recipient: bytes, *, pending: int = 0) -> int:
        """The sender's deposit plus this recipient's reserve allocation, less ``pending``
        (read fresh: it changes with every winner kept)."""
        deposit = self._cached(("sender", sender), lambda: self.client.sender_info(sender)).deposit
        reserve = self._cached(
            ("reserve", sender, recipient),
            lambda: self.client.claimable_reserve(sender, recipient),
        )
        return max(0, deposit + reserve - pending)

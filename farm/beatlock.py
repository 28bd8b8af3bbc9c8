"""One beat per cluster: a lock in Redis with a time to live.

Two beats would publish every reconcile pass (and every chain task) twice. ``farm beat``
takes the lock before it starts scheduling and renews it while it runs; a second beat waits,
and says so in its log, until the lock's holder stops renewing it (stopped, killed, its host
gone), then takes over within the lock's TTL.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable

import redis

from farm.registry import redis_py_url

__all__ = ["BEAT_LOCK_KEY", "BeatLock"]

log = logging.getLogger(__name__)

BEAT_LOCK_KEY = "farm:beat:lock"

# Renew only while this process holds the lock; after a flush, take it again if free.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
if not holder then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def _stop_this_process() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


class BeatLock:
    """The cluster's beat lock, as held (or waited for) by this process."""

    def __init__(
        self,
        url: str,
        ttl_s: float,
        *,
        key: str = BEAT_LOCK_KEY,
        on_lost: Callable[[], None] = _stop_this_process,
    ) -> None:
        self.key = key
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.on_lost = on_lost
        self._redis = redis.Redis.from_url(redis_py_url(url), socket_timeout=max(1.0, ttl_s / 3))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def interval_s(self) -> float:
        return self.ttl_ms / 3000

    def holder(self) -> str | None:
        value = self._redis.get(self.key)
        return value.decode() if isinstance(value, bytes) else None

    def try_acquire(self) -> bool:
        return bool(self._redis.set(self.key, self.owner, nx=True, px=self.ttl_ms))

    def acquire(self) -> None:
        """Wait until this process holds the lock, logging who holds it meanwhile."""
        waited = False
        last: str | None = None
        while not self._stop.is_set():
            try:
                if self.try_acquire():
                    if waited:
                        log.warning("beat lock taken over by %s (%s is gone)", self.owner, last)
                    else:
                        log.info("beat lock held by %s", self.owner)
                    return
                holder = self.holder()
                if holder != last and holder is not None:
                    log.warning(
                        "another beat holds the beat lock (%s); waiting to take over", holder
                    )
                    last = holder
                waited = True
            except redis.RedisError as e:
                log.warning("cannot reach Redis for the beat lock, retrying: %s", e)
            self._stop.wait(self.interval_s)
        raise InterruptedError("stopped while waiting for the beat lock")

    def keep(self) -> None:
        """Renew the lock in the background; if another process holds it (this one stalled
        past the TTL), call ``on_lost`` (by default, stop this process)."""
        self._thread = threading.Thread(target=self._renew, name="farm-beat-lock", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        renew = self._redis.register_script(_RENEW)
        while not self._stop.wait(self.interval_s):
            try:
                held = renew(keys=[self.key], args=[self.owner, self.ttl_ms])
            except redis.RedisError as e:
                log.warning("cannot renew the beat lock, retrying: %s", e)
                continue
            if not held:
                log.error(
                    "beat lock lost to %s; stopping this beat so only one runs", self.holder()
                )
                self.on_lost()
                return

    def release(self) -> None:
        """Stop renewing, and free the lock if this process holds it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self._redis.register_script(_RELEASE)(keys=[self.key], args=[self.owner])
        except redis.RedisError as e:
            log.warning("cannot release the beat lock (it expires by itself): %s", e)
        finally:
            self._redis.close()

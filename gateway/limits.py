"""Per-key limits in Redis: a token-bucket request rate and a cap on concurrent jobs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from farm.runtime import redis_py_url
from gateway.errors import RateLimited, Unavailable

__all__ = ["Limiter"]

# Token bucket: KEYS[1] bucket; ARGV rate (tokens/s), burst, now (s). Returns {allowed, wait_ms}.
_BUCKET = """
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed, wait = 0, math.ceil((1 - tokens) / rate * 1000)
if tokens >= 1 then tokens, allowed, wait = tokens - 1, 1, 0 end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, wait}
"""


class Limiter:
    """Rate and concurrency limits shared by every gateway process through Redis."""

    def __init__(self, url: str, per_minute: int, burst: int, max_jobs: int) -> None:
        self._redis = redis.Redis.from_url(
            redis_py_url(url), socket_timeout=2, socket_connect_timeout=2
        )
        self._bucket = self._redis.register_script(_BUCKET)
        self.rate = per_minute / 60.0
        self.burst = burst
        self.max_jobs = max_jobs

    def hit(self, key_id: str) -> None:
        """Count one request; RateLimited (with Retry-After) past the key's rate."""
        try:
            allowed, wait_ms = self._bucket(
                keys=[f"gw:rate:{key_id}"], args=[self.rate, self.burst, time.time()]
            )
        except redis.RedisError as e:
            raise Unavailable(f"rate limiter unreachable: {e}") from e
        if not allowed:
            raise RateLimited(
                f"rate limit of {self.rate * 60:g} requests/minute exceeded",
                retry_after=max(1.0, int(wait_ms) / 1000),
            )

    @contextmanager
    def job(self, key_id: str, cap: int | None = None, kind: str = "jobs") -> Iterator[None]:
        """Hold one of the key's concurrent-job slots for the duration of the block."""
        cap = cap or self.max_jobs
        name = f"gw:{kind}:{key_id}"
        try:
            pipe = self._redis.pipeline()
            pipe.incr(name)
            pipe.expire(name, 3600)
            count = int(pipe.execute()[0])
        except redis.RedisError as e:
            raise Unavailable(f"rate limiter unreachable: {e}") from e
        if count > cap:
            self._redis.decr(name)
            raise RateLimited(f"at most {cap} concurrent {kind} per key", retry_after=1.0)
        try:
            yield
        finally:
            # On a Redis failure the counter expires within the hour.
            with contextlib.suppress(redis.RedisError):
                self._redis.decr(name)

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self._redis.close()

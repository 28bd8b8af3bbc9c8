"""LLM chunks from the worker to the client: one Redis stream per job, in the registry's Redis.

The worker appends each chunk as it comes from the runner, then an ``end`` entry once the job
is recorded done, or an ``error`` entry once it is recorded failed. The stream expires an hour
after its last entry. Readers start from the beginning, so a late reader misses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import redis
from celery import Celery

from farm.context import worker_context
from farm.registry import RegistryUnavailable, redis_py_url
from farm.resources import Resources

__all__ = ["ChunkStream", "StreamEvent", "streams_of"]

_PREFIX = "farm:ai:stream:"
#: (kind, payload): ("chunk", LLM chunk), ("end", {}) or ("error", {"code", "message"}).
StreamEvent = tuple[str, dict[str, Any]]


class ChunkStream:
    """Writes and reads the chunk streams of AI jobs."""

    def __init__(self, url: str, ttl_s: int = 3600) -> None:
        self.ttl_s = ttl_s
        self._redis = redis.Redis.from_url(
            redis_py_url(url), socket_timeout=30, socket_connect_timeout=5
        )

    def _add(self, job_id: str, kind: str, payload: dict[str, Any]) -> None:
        key = _PREFIX + job_id
        try:
            pipe = self._redis.pipeline()
            pipe.xadd(key, {"t": kind, "d": json.dumps(payload)})
            pipe.expire(key, self.ttl_s)
            pipe.execute()
        except redis.RedisError as e:
            raise RegistryUnavailable(f"chunk stream unreachable: {e}") from e

    def push(self, job_id: str, chunk: dict[str, Any]) -> None:
        self._add(job_id, "chunk", chunk)

    def end(self, job_id: str) -> None:
        self._add(job_id, "end", {})

    def error(self, job_id: str, code: str, message: str) -> None:
        self._add(job_id, "error", {"code": code, "message": message})

    def read(self, job_id: str, after: str, block_s: float) -> Iterator[tuple[str, StreamEvent]]:
        """(entry id, event) for entries after ``after`` ("0" for all), waiting up to block_s."""
        try:
            answer = self._redis.xread(
                {_PREFIX + job_id: after}, count=500, block=max(1, int(block_s * 1000))
            )
        except redis.RedisError as e:
            raise RegistryUnavailable(f"chunk stream unreachable: {e}") from e
        for _key, entries in cast(
            list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]], answer or []
        ):
            for entry_id, fields in entries:
                kind = fields[b"t"].decode()
                yield entry_id.decode(), (kind, json.loads(fields[b"d"]))

    def close(self) -> None:
        self._redis.close()


def streams_of(app: Celery, res: Resources) -> ChunkStream:
    """This process's chunk stream client (built on first use, kept in the worker context)."""
    context = worker_context(app)
    if context.ai_streams is None:
        context.ai_streams = ChunkStream(res.settings.redis_registry_url())
    return context.ai_streams

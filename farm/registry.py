"""The capability registry: what every live worker can do, from short-TTL heartbeats.

Each worker writes one Redis key with its capabilities (GPUs, NVENC/NVDEC codecs and free
sessions, CPU codecs, capacity, load, region, queues) every few seconds with a TTL of three
beats, so a dead worker disappears on its own. The router reads the live set.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from farm.errors import RetryableError

__all__ = ["Capabilities", "Heartbeat", "Registry", "RegistryUnavailable", "redis_py_url"]

log = logging.getLogger(__name__)
_PREFIX = "farm:worker:"
#: stream -> the worker that keeps its encoders (farm.media.encoders).
_STREAM_PREFIX = "farm:stream:"


def redis_py_url(url: str) -> str:
    """A Celery/kombu Redis URL in the form redis-py takes (``redis+socket://`` -> ``unix://``)."""
    if url.startswith("redis+socket://"):
        return "unix://" + url[len("redis+socket://") :]
    return url


class RegistryUnavailable(RetryableError):
    """Raised when the registry's Redis cannot be reached."""

    code = "registry_unavailable"


@dataclass(slots=True)
class Capabilities:
    """One worker's advertisement."""

    worker: str
    queues: list[str]
    capacity: int
    region: str = "local"
    load: int = 0
    #: Codecs this worker encodes on NVENC, e.g. ["h264", "hevc"].
    gpu_codecs: list[str] = field(default_factory=list)
    #: Codecs this worker decodes on NVDEC.
    gpu_decoders: list[str] = field(default_factory=list)
    cpu_codecs: list[str] = field(default_factory=list)
    #: GPUs as farm.gpu.GpuInfo.to_dict() gives them.
    gpus: list[dict[str, Any]] = field(default_factory=list)
    #: Free NVENC sessions on this worker's GPUs; None where the driver sets no limit.
    free_encoder_sessions: int | None = None
    ai_models: list[dict[str, Any]] = field(default_factory=list)
    kind: str = "local"
    pid: int | None = None
    started_at: float = field(default_factory=time.time)
    seen_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Capabilities:
        data = json.loads(raw)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Registry:
    """Reads and writes heartbeats in Redis."""

    def __init__(self, url: str, heartbeat_s: float = 2.0) -> None:
        self.url = url
        self.heartbeat_s = heartbeat_s
        self.ttl_ms = max(1000, int(heartbeat_s * 3000))
        self._redis = redis.Redis.from_url(
            redis_py_url(url), socket_timeout=5, socket_connect_timeout=5
        )

    def beat(self, caps: Capabilities) -> None:
        caps.seen_at = time.time()
        try:
            self._redis.set(_PREFIX + caps.worker, caps.to_json(), px=self.ttl_ms)
        except redis.RedisError as e:
            raise RegistryUnavailable(f"registry unreachable: {e}") from e

    def remove(self, worker: str) -> None:
        try:
            self._redis.delete(_PREFIX + worker)
        except redis.RedisError as e:
            log.warning("could not remove %s from the registry: %s", worker, e)

    def live(self) -> list[Capabilities]:
        """Every worker whose heartbeat has not expired."""
        try:
            keys = list(self._redis.scan_iter(match=_PREFIX + "*", count=500))
            values = self._redis.mget(keys) if keys else []
        except redis.RedisError as e:
            raise RegistryUnavailable(f"registry unreachable: {e}") from e
        workers = []
        for raw in values:
            if raw is None:
                continue
            try:
                workers.append(Capabilities.from_json(raw))
            except (ValueError, TypeError) as e:
                log.warning("ignoring a malformed heartbeat: %s", e)
        return sorted(workers, key=lambda c: c.worker)

    def pin_stream(self, stream: str, worker: str, ttl_s: float) -> None:
        """Say that ``worker`` keeps ``stream``'s encoders, for ``ttl_s`` (its encoders'
        idle expiry): the stream's next segment is sent there (farm.router.route_stream)."""
        try:
            self._redis.set(_STREAM_PREFIX + stream, worker, px=max(1, int(ttl_s * 1000)))
        except redis.RedisError as e:
            raise RegistryUnavailable(f"registry unreachable: {e}") from e

    def pinned(self, stream: str) -> str | None:
        """The worker that kept ``stream``'s encoders after its last segment, if any."""
        try:
            raw = self._redis.get(_STREAM_PREFIX + stream)
        except redis.RedisError as e:
            raise RegistryUnavailable(f"registry unreachable: {e}") from e
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self._redis.close()


class Heartbeat:
    """A daemon thread that beats a worker's current capabilities until stopped."""

    def __init__(self, registry: Registry, snapshot: Callable[[], Capabilities]) -> None:
        self.registry = registry
        self.snapshot = snapshot
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="farm-heartbeat", daemon=True)
        self.worker: str | None = None

    def start(self) -> None:
        self._beat()
        self._thread.start()

    def beat_now(self) -> None:
        """Beat at once (when load changed), besides the regular beats."""
        self._beat()

    def _beat(self) -> None:
        caps = self.snapshot()
        self.worker = caps.worker
        try:
            self.registry.beat(caps)
        except RegistryUnavailable as e:
            log.warning("%s", e)

    def _run(self) -> None:
        while not self._stop.wait(self.registry.heartbeat_s):
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self.worker:
            self.registry.remove(self.worker)

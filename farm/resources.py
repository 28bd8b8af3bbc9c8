"""Process-wide clients built once from settings: job store, blob store, registry."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from farm.blobstore import BlobStore, blob_store_from_url
from farm.jobs import JobStore
from farm.notices import Announcer
from farm.registry import Registry
from farm.settings import ClusterSettings

__all__ = ["Resources", "is_unreachable"]


@dataclass
class Resources:
    """Lazily built clients for one process; safe to share between threads."""

    settings: ClusterSettings
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _jobs: JobStore | None = None
    _blobs: BlobStore | None = None
    _registry: Registry | None = None
    _writers: ThreadPoolExecutor | None = None
    _announcer: Announcer | None = None

    def close(self) -> None:
        """Release connections (the clients are rebuilt on next use)."""
        with self._lock:
            if self._writers is not None:
                self._writers.shutdown(wait=True)
                self._writers = None
            if self._registry is not None:
                self._registry.close()
                self._registry = None
            if self._announcer is not None:
                self._announcer.close()
                self._announcer = None
            if self._jobs is not None:
                self._jobs.engine.dispose()
                self._jobs = None
            close = getattr(self._blobs, "close", None)
            if close is not None:
                close()
            self._blobs = None

    @property
    def jobs(self) -> JobStore:
        with self._lock:
            if self._jobs is None:
                store = JobStore(self.settings.database_url)
                try:
                    store.create_schema()
                except Exception:
                    store.engine.dispose()  # kept only once its schema is known to exist
                    raise
                self._jobs = store
            return self._jobs

    @property
    def blobs(self) -> BlobStore:
        with self._lock:
            if self._blobs is None:
                self._blobs = blob_store_from_url(self.settings.blob_url)
            return self._blobs

    @property
    def writers(self) -> ThreadPoolExecutor:
        """Threads for independent writes made side by side: a job's input beside its row,
        a segment's renditions beside each other. Built on first use, so a forked worker
        child builds its own."""
        with self._lock:
            if self._writers is None:
                self._writers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="farm-write")
            return self._writers

    @property
    def registry(self) -> Registry:
        with self._lock:
            if self._registry is None:
                self._registry = Registry(
                    self.settings.redis_registry_url(), self.settings.heartbeat_s
                )
            return self._registry

    @property
    def announcer(self) -> Announcer:
        """Publishes job notices to their submitters (farm.notices), on the registry's Redis."""
        with self._lock:
            if self._announcer is None:
                self._announcer = Announcer(self.settings.redis_registry_url())
            return self._announcer

    def announce(
        self, channel: Any, job_id: str, state: str, result: dict[str, Any] | None = None
    ) -> None:
        """Tell a final job's submitter, on the channel its spec names (farm.notices)."""
        self.announcer.announce(channel, job_id, state, result)


def is_unreachable(e: BaseException) -> bool:
    """Whether a database or Redis error means the service cannot be reached now (and a
    retry may succeed), not a bug."""
    if isinstance(e, DBAPIError):
        return isinstance(e, OperationalError | InterfaceError) or e.connection_invalidated
    return isinstance(e, redis.ConnectionError | redis.TimeoutError)

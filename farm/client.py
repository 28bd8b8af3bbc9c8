"""The farm's Python client: submit a segment with profiles, then wait for or poll the result.

client = FarmClient(ClusterSettings())
job = client.submit(segment_bytes, parse_profiles("P360p30fps16x9,P240p30fps16x9"))
result = client.wait(job.id, timeout=30)
for r in result.renditions:
    data = client.rendition_bytes(r)

Part of the farm's public face (see :mod:`farm`): besides the client and its results, it
exports what a caller of a cluster needs to reach and time it: the cluster's connection
settings, the error for an unknown job, segment timeouts and the ticket queue the cluster
announces.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import SQLAlchemyError

from farm.celery_app import create_app
from farm.chain_tasks import announced_ticket_queue
from farm.errors import (
    FarmError,
    InputInvalid,
    JobError,
    JobNotFound,
    NoCapacity,
    ServiceUnavailable,
)
from farm.jobs import JobStore, JobView
from farm.media.output import check_format
from farm.media.profiles import VideoProfile
from farm.publish import job_timeout_s, need_of, publish
from farm.registry import Capabilities
from farm.resources import Resources
from farm.router import Need, Route, route_transcode
from farm.settings import ClusterSettings
from farm.timeouts import MIN_TIMEOUT_S, segment_timeout

if TYPE_CHECKING:
    from farm.ai.client import AIClient

__all__ = [
    "MIN_TIMEOUT_S",
    "ClusterSettings",
    "FarmClient",
    "JobFailedError",
    "JobNotFound",
    "JobResult",
    "JobTimeout",
    "RenditionRef",
    "announced_ticket_queue",
    "segment_timeout",
]

log = logging.getLogger(__name__)


class JobFailedError(JobError):
    """Raised by :meth:`FarmClient.wait` when the job failed; ``code`` is the job's error code."""

    def __init__(self, job: JobView) -> None:
        super().__init__(f"job {job.id} failed: {job.error}")
        self.code = job.error_code or "job_failed"
        self.job = job


class JobTimeout(JobError):
    """Raised by :meth:`FarmClient.wait` when the job is not final in time."""

    code = "wait_timeout"


@dataclass(frozen=True, slots=True)
class RenditionRef:
    """A finished rendition: where it is and what it holds."""

    name: str
    key: str
    format: str
    width: int
    height: int
    frames: int
    pixels: int
    bytes: int
    duration: float
    start: float
    encoder: str


@dataclass(frozen=True, slots=True)
class JobResult:
    """A finished transcode job."""

    job_id: str
    renditions: tuple[RenditionRef, ...]
    encoded_pixels: int
    decoded_pixels: int
    worker: str
    timings: dict[str, float]
    raw: dict[str, Any]

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> JobResult:
        return cls(
            job_id=payload["job_id"],
            renditions=tuple(RenditionRef(**r) for r in payload["renditions"]),
            encoded_pixels=payload["encoded_pixels"],
            decoded_pixels=payload["decoded_pixels"],
            worker=payload["worker"],
            timings=payload["timings"],
            raw=payload,
        )


def _backend_lost(e: RuntimeError) -> bool:
    """Whether Celery's result consumer raised ``e`` because it could not reconnect to the
    result backend (it says the app must be restarted; it recovers on the next call)."""
    return isinstance(e.__cause__, OSError | RedisConnectionError | OperationalError)


def _forget(result: Any) -> None:
    """Stop listening for ``result`` now. Celery does it when the object is collected, where
    a result backend that lost its connection (a Redis restart) raises, unseen, from
    ``__del__`` at whatever moment the collector runs."""
    backend, result.backend = result.backend, None
    try:
        backend.remove_pending_result(result)
    except Exception as e:  # the backend reconnects on its next use
        log.debug("result %s: could not stop listening: %s", result.id, e)


class FarmClient:
    """Submits transcode jobs to one cluster and collects their results."""

    def __init__(self, settings: ClusterSettings | None = None, app: Celery | None = None) -> None:
        self.settings = settings or ClusterSettings()
        self.app = app or create_app(self.settings)
        if app is None and self.settings.broker_url.startswith(("redis", "rediss")):
            # A broker host that stops answering must not hold a submit for minutes: a
            # publish is one small write, so a few seconds without a reply mean it is gone.
            self.app.conf.broker_transport_options = {
                **self.app.conf.broker_transport_options,
                "socket_connect_timeout": 3,
                "socket_timeout": 3,
            }
            self.app.conf.task_publish_retry_policy = {
                "max_retries": 1,
                "interval_start": 0,
                "interval_step": 0.2,
                "interval_max": 0.2,
            }
        self._res = Resources(self.settings)
        self._live: tuple[float, list[Capabilities]] = (0.0, [])
        self._ai: AIClient | None = None

    def _live_workers(self, fresh: bool = False) -> list[Capabilities]:
        # Heartbeats live for three beats; reading them once per quarter beat is fresh enough
        # and keeps a registry scan off every submission of a busy client.
        now = time.monotonic()
        if fresh or now - self._live[0] > self.settings.heartbeat_s / 4:
            self._live = (now, self._res.registry.live())
        return self._live[1]

    def _route(self, need: Need) -> Route:
        try:
            return route_transcode(need, self._live_workers())
        except NoCapacity:
            return route_transcode(need, self._live_workers(fresh=True))

    @property
    def jobs(self) -> JobStore:
        return self._res.jobs

    def route(self, profiles: Sequence[VideoProfile], device: str = "any") -> Route:
        """The queue a ladder would go to now (raises NoCapacity when none serves it)."""
        return self._route(need_of(profiles, device))

    def submit(
        self,
        data: bytes,
        profiles: Sequence[VideoProfile],
        *,
        fmt: str = "mpegts",
        duration: float | None = None,
        device: str = "any",
        job_id: str | None = None,
    ) -> JobView:
        """Store the input, record the job, then publish it; returns the queued job.

        Raises NoCapacity when no live worker can serve the ladder, before anything is stored.
        """
        check_format(fmt)
        if not data:
            raise InputInvalid("input is empty (0 bytes)")
        need = need_of(profiles, device)
        route = self._route(need)
        job_id = job_id or uuid.uuid4().hex
        input_key = f"jobs/{job_id}/in"
        spec = {
            "input_key": input_key,
            "profiles": [p.to_json() for p in profiles],
            "format": fmt,
            "duration": duration,
            "need": {"codec": need.codec, "renditions": need.renditions, "device": need.device},
        }
        task_id = f"{job_id}.1"
        # The input and the job row are both written before the publish, side by side: they
        # are independent round trips to two stores.
        stored = self._res.writers.submit(self._res.blobs.put, input_key, data)
        try:
            job = self.jobs.create(
                job_id,
                kind="transcode",
                queue=route.queue,
                spec=spec,
                task_id=task_id,
                timeout_s=job_timeout_s(duration),
                queued_timeout_s=self.settings.queued_timeout_s,
            )
        finally:
            error = stored.exception()
        if error is not None:
            # The job row exists but can never run: fail it before reporting the store's error.
            self._never_published(job_id, error)
            raise error
        with self._publishing(job_id):
            publish(self.app, queue=route.queue, job_id=job_id, task_id=task_id, spec=spec)
        return job

    @contextmanager
    def _publishing(self, job_id: str) -> Iterator[None]:
        """Around the first publish of a recorded job: a broker or result backend that cannot
        be reached is ServiceUnavailable, and the job is failed. The caller is told to try
        again (perhaps on another orchestrator), so the reconciler must not run the job behind
        its back once the broker is back."""
        try:
            yield
        except (OperationalError, OSError, RuntimeError) as e:
            # RuntimeError: Celery's result consumer gave up subscribing to the job's result.
            if isinstance(e, RuntimeError) and not _backend_lost(e):
                raise
            raise self._unpublished(job_id, e) from e

    def _unpublished(self, job_id: str, e: Exception) -> ServiceUnavailable:
        error = ServiceUnavailable(f"broker unreachable: {e.__cause__ or e}")
        self._never_published(job_id, error)
        return error

    def _never_published(self, job_id: str, error: BaseException) -> None:
        """Fail a recorded job that was not published, so the reconciler never runs it."""
        code = getattr(error, "code", None) or "input_unstored"
        try:
            self.jobs.fail(job_id, str(code), str(error))
        except SQLAlchemyError as store_error:
            log.warning("job %s was not published and could not be failed: %s", job_id, store_error)

    def get(self, job_id: str, with_attempts: bool = False) -> JobView:
        return self.jobs.get(job_id, with_attempts)

    def wait(self, job: str | JobView, timeout: float = 60.0) -> JobResult:
        """Block until the job is done; raise JobFailedError or JobTimeout otherwise."""
        view, payload = self.wait_for(job, timeout, lambda p: p.get("renditions") is not None)
        if payload is not None:
            return JobResult.from_payload(payload)
        if view.state != "done" or view.result is None:
            raise JobFailedError(self.jobs.get(view.id))
        return JobResult.from_payload(view.result)

    def wait_for(
        self, job: str | JobView, timeout: float, finished: Callable[[dict[str, Any]], bool]
    ) -> tuple[JobView, dict[str, Any] | None]:
        """Block until the job is final: (view, the task's payload when ``finished`` accepts
        it, else None and the final row). Raises JobTimeout.

        Wakes on the result backend's notification rather than polling the job table; the
        table is read when the backend has no answer (a republished job, a lost backend).
        """
        deadline = time.monotonic() + timeout
        view = self.jobs.get(job) if isinstance(job, str) else job
        while not view.final:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeout(f"job {view.id} still {view.state} after {timeout:g} s")
            payload: Any = None
            result = self.app.AsyncResult(view.task_id)
            try:
                payload = result.get(
                    timeout=min(remaining, 1.0), propagate=False, disable_sync_subtasks=False
                )
            except CeleryTimeout:
                pass
            except (OSError, FarmError, RedisConnectionError, OperationalError):
                # The backend restarted or blinked; the job table still has the truth.
                time.sleep(min(0.2, max(remaining, 0)))
            finally:
                _forget(result)
            if isinstance(payload, dict) and finished(payload):
                # The task returns exactly what it recorded, after recording it.
                return view, payload
            view = self.jobs.get(view.id)
            if payload is not None and not view.final:
                time.sleep(0.05)  # a result for a superseded message; the row decides
        return view, None

    @property
    def ai(self) -> AIClient:
        """AI jobs on this cluster (farm.ai.client.AIClient)."""
        if self._ai is None:
            from farm.ai.client import AIClient

            self._ai = AIClient(self)
        return self._ai

    def close(self) -> None:
        """Release broker, backend and database connections."""
        if self._ai is not None:
            self._ai.close()
        self._res.close()
        self.app.close()

    def __enter__(self) -> FarmClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def rendition_bytes(self, rendition: RenditionRef) -> bytes:
        return self._res.blobs.get(rendition.key)

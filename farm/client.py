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

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery

from farm.chain_tasks import announced_ticket_queue
from farm.cluster_link import ClusterLink, JobFailedError, JobTimeout
from farm.errors import FarmError, InputInvalid, JobNotFound, NoCapacity
from farm.jobs import JobStore, JobView
from farm.media.output import check_format
from farm.media.profiles import VideoProfile
from farm.publish import job_timeout_s, need_of, publish
from farm.router import Need, Route, route_stream
from farm.settings import ClusterSettings
from farm.timeouts import MIN_TIMEOUT_S, segment_timeout

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
    #: keccak256 of the rendition's bytes, hex, when the job asked for it (``keccak=True``).
    keccak: str | None = None


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
    #: A segment of a stream: every rendition went on with the encoder the stream's previous
    #: segment left open on the same worker (farm.media.encoders).
    reused: bool = False

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
            reused=bool(payload.get("reused", False)),
        )


class FarmClient:
    """Submits transcode jobs to one cluster and collects their results."""

    def __init__(self, settings: ClusterSettings | None = None, app: Celery | None = None) -> None:
        self._link = ClusterLink(settings or ClusterSettings(), app)
        self.settings = self._link.settings
        self.app = self._link.app
        self._res = self._link.res
        #: stream -> the worker its last segment here said keeps its encoders.
        self._kept: dict[str, str] = {}

    def _route(self, need: Need, stream: str | None = None) -> Route:
        pinned = self._pinned(stream) if stream else None
        try:
            return route_stream(need, self._link.live_workers(), pinned)
        except NoCapacity:
            return route_stream(need, self._link.live_workers(fresh=True), pinned)

    def _pinned(self, stream: str) -> str | None:
        """The worker that keeps ``stream``'s encoders; None when none does or the registry
        cannot say (the segment then takes the capability queue). The answer to the stream's
        last segment through this client says it without a round trip; the registry's pin
        (which workers write for every client of the cluster) says it otherwise."""
        kept = self._kept.get(stream)
        if kept is not None:
            return kept
        try:
            return self._res.registry.pinned(stream)
        except FarmError:
            return None

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
        stream: str | None = None,
        keccak: bool = False,
        show_from: float | None = None,
    ) -> JobView:
        """Store the input, record the job, then publish it; returns the queued job.

        ``stream`` names the stream the segment belongs to (the node passes its session):
        segments of one stream go to the worker that keeps its encoders open, while it is
        live, and reuse them where they can (farm.media.encoders). Without it, or once that
        worker is gone, a segment goes to its capability queue like any job.

        ``keccak``: the worker also hashes each rendition (``RenditionRef.keccak``), for a
        caller that signs them.

        ``show_from``: the input starts with pictures that only prime the decoder; the
        renditions start at this time (seconds, the input's timeline; farm.media.segmenter).

        Raises NoCapacity when no live worker can serve the ladder, before anything is stored.
        """
        check_format(fmt)
        if not data:
            raise InputInvalid("input is empty (0 bytes)")
        if show_from is not None and not math.isfinite(show_from):
            raise InputInvalid(f"show_from must be a finite time, got {show_from!r}")
        need = need_of(profiles, device)
        route = self._route(need, stream)
        job_id = job_id or uuid.uuid4().hex
        input_key = f"jobs/{job_id}/in"
        spec = {
            "input_key": input_key,
            "profiles": [p.to_json() for p in profiles],
            "format": fmt,
            "duration": duration,
            "need": {"codec": need.codec, "renditions": need.renditions, "device": need.device},
        }
        if stream:
            spec["stream"] = stream
        if keccak:
            spec["keccak"] = True
        if show_from is not None:
            spec["show_from"] = float(show_from)
        self._link.ask_for_notice(spec)
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
            self._link.never_published(job_id, error)
            raise error
        with self._link.publishing(job_id):
            publish(self.app, queue=route.queue, job_id=job_id, task_id=task_id, spec=spec)
        return job

    def get(self, job_id: str, with_attempts: bool = False) -> JobView:
        return self.jobs.get(job_id, with_attempts)

    def wait(self, job: str | JobView, timeout: float = 60.0) -> JobResult:
        """Block until the job is done; raise JobFailedError or JobTimeout otherwise."""
        self._link.refresh_live()  # a transcode takes longer than a registry read
        view, payload = self._link.wait_for(job, timeout, lambda p: p.get("renditions") is not None)
        if payload is None:
            if view.state != "done" or view.result is None:
                raise JobFailedError(self.jobs.get(view.id))
            payload = view.result
        result = JobResult.from_payload(payload)
        self._remember(view.spec.get("stream"), result)
        return result

    def _remember(self, stream: str | None, result: JobResult) -> None:
        """Which worker keeps ``stream``'s encoders after ``result``: its worker, when it
        kept any of them (a stale answer only costs the next segment fresh encoders)."""
        if not stream:
            return
        encoders = result.raw.get("encoders") or {}
        if encoders.get("reused", 0) + encoders.get("opened", 0) > 0:
            if len(self._kept) > 10_000:  # streams come and go
                self._kept.clear()
            self._kept[stream] = result.worker
        else:
            self._kept.pop(stream, None)

    def close(self) -> None:
        """Release broker, backend and database connections."""
        self._link.close()

    def __enter__(self) -> FarmClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def rendition_bytes(self, rendition: RenditionRef) -> bytes:
        return self._res.blobs.get(rendition.key)

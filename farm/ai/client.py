"""The AI client: submit AI jobs, wait for their results, stream LLM chunks, read media.

ai = AIClient(ClusterSettings())
job_id = ai.submit(pipeline="upscale", model_id=..., params={"prompt": "x"},
                   files={"image": png_bytes})
result = ai.wait(job_id, timeout=60)          # AIResult, media as farm-blob:<key>
data = ai.media(result.media[0].key)

Part of the farm's public face (see :mod:`farm`), beside the transcode client
(:mod:`farm.client`); each holds its own link to the cluster (farm.cluster_link).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from celery import Celery

from farm.ai.config import PIPELINES
from farm.ai.results import AIResult, blob_key
from farm.ai.routing import AIRoute, route_ai
from farm.ai.stream import ChunkStream
from farm.cluster_link import ClusterLink, JobFailedError, JobTimeout
from farm.errors import AIRequestInvalid, NoCapacity
from farm.jobs import JobView
from farm.publish import publish_ai
from farm.settings import ClusterSettings

__all__ = ["AIClient"]


class AIClient:
    """Submits AI jobs to one cluster and collects their results."""

    def __init__(self, settings: ClusterSettings | None = None, app: Celery | None = None) -> None:
        self._link = ClusterLink(settings or ClusterSettings(), app)
        self.settings = self._link.settings
        self._streams: ChunkStream | None = None

    def route(self, pipeline: str, model_id: str) -> AIRoute:
        """Where a job for (pipeline, model) would go now; NoCapacity when nowhere."""
        try:
            return route_ai(pipeline, model_id, self._link.live_workers())
        except NoCapacity:
            return route_ai(pipeline, model_id, self._link.live_workers(fresh=True))

    def submit(
        self,
        pipeline: str,
        model_id: str,
        params: Mapping[str, Any] | None = None,
        files: Mapping[str, bytes] | None = None,
        *,
        job_id: str | None = None,
    ) -> str:
        """Store the files, record the job and send it to the best worker; returns its id.

        Raises NoCapacity when no live worker serves (pipeline, model_id) with a free slot,
        before anything is stored; AIRequestInvalid for an unknown pipeline or bad fields.
        """
        if pipeline not in PIPELINES:
            raise AIRequestInvalid(f"unknown pipeline {pipeline!r}")
        if not model_id:
            raise AIRequestInvalid("model_id is required")
        route = self.route(pipeline, model_id)
        job_id = job_id or uuid.uuid4().hex
        keys = {}
        for name, data in (files or {}).items():
            if not isinstance(data, bytes | bytearray):
                raise AIRequestInvalid(f"file {name} must be bytes")
            keys[name] = f"ai/{job_id}/in/{name}"
            self._link.res.blobs.put(keys[name], bytes(data))
        spec = {
            "pipeline": pipeline,
            "model_id": model_id,
            "params": dict(params or {}),
            "files": keys,
            "tried": [],
            "reasons": [],
        }
        self._link.ask_for_notice(spec)
        task_id = f"{job_id}.1"
        settings = self.settings
        self._link.jobs.create(
            job_id,
            kind="ai",
            queue=route.queue,
            spec=spec,
            task_id=task_id,
            timeout_s=settings.ai_timeout_s + 10.0,
            queued_timeout_s=settings.queued_timeout_s,
        )
        with self._link.publishing(job_id):
            publish_ai(self._link.app, queue=route.queue, job_id=job_id, task_id=task_id, spec=spec)
        return job_id

    def wait(self, job_id: str, timeout: float = 60.0) -> AIResult:
        """Block until the job is done; JobFailedError (with .code) or JobTimeout otherwise."""
        view, payload = self._link.wait_for(job_id, timeout, lambda p: "response" in p)
        if payload is None and view.state == "done":
            payload = view.result
        if payload is None:
            raise JobFailedError(self._link.jobs.get(job_id))
        return AIResult.from_payload(payload)

    def stream(self, job_id: str, timeout: float = 60.0) -> Iterator[dict[str, Any]]:
        """The LLM chunks of a job submitted with ``stream: true``, as the worker gets them.

        Ends after the chunk with ``finish_reason``; raises JobFailedError when the job fails
        (before or during the stream) and JobTimeout when it does not end in time.
        """
        job = self._link.jobs.get(job_id)
        if not job.spec.get("params", {}).get("stream"):
            raise AIRequestInvalid(f"job {job_id} was not submitted with stream: true")
        if self._streams is None:
            self._streams = ChunkStream(self.settings.redis_registry_url())
        deadline = time.monotonic() + timeout
        after = "0"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeout(f"job {job_id} stream not finished after {timeout:g} s")
            got = False
            for entry_id, (kind, payload) in self._streams.read(job_id, after, min(remaining, 1.0)):
                after, got = entry_id, True
                if kind == "chunk":
                    yield payload
                elif kind == "end":
                    return
                else:
                    raise JobFailedError(self._link.jobs.get(job_id))
            if not got:
                view = self._link.jobs.get(job_id)
                if view.state == "failed":  # failed where no error entry was written
                    raise JobFailedError(view)

    def get(self, job_id: str, with_attempts: bool = False) -> JobView:
        return self._link.jobs.get(job_id, with_attempts)

    def media(self, key: str) -> bytes:
        """The bytes of one result file, by blob key or ``farm-blob:<key>`` URL."""
        return self._link.res.blobs.get(blob_key(key))

    def close(self) -> None:
        """Release the chunk stream, broker, backend and database connections."""
        if self._streams is not None:
            self._streams.close()
            self._streams = None
        self._link.close()

    def __enter__(self) -> AIClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

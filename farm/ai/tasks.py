"""The AI task: run a job on this worker's runner for its model, or hand it to another worker.

A job goes to one chosen worker's own queue (farm.ai.routing). When that worker's runner is
missing, down, answering ERROR or full, or fails the request, the job moves to the next live
worker that serves the model and has not tried it; when none is left it fails with
``insufficient_capacity``. Bad requests (the runner's 400/422) fail at once with
``invalid_request``. Media in the response go to the blob store as ``farm-blob:<key>`` URLs;
LLM chunks of a streamed request go to the job's chunk stream (farm.ai.stream).
"""

from __future__ import annotations

import logging
import time
from typing import Any, NoReturn

import httpx
from celery import Celery, Task

from farm import metrics
from farm.ai.results import rehost
from farm.ai.routing import route_ai
from farm.ai.stream import streams_of
from farm.blobstore import BlobMissing
from farm.context import worker_context
from farm.errors import (
    FarmError,
    InputMissing,
    InsufficientCapacity,
    JobNotFound,
    NoCapacity,
    RunnerFailed,
)
from farm.fetch import FetchPolicy
from farm.publish import AI_TASK, publish_ai
from farm.tasks import JobFailed, resources, skip_missing

__all__ = ["register_ai_tasks"]

log = logging.getLogger(__name__)


def register_ai_tasks(app: Celery) -> None:
    """Define the AI task on ``app``."""

    @app.task(
        name=AI_TASK,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        throws=(JobFailed,),
        shared=False,
    )
    def ai_task(self: Task, job_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        return _AIAttempt(self, app, job_id, spec).run()


class _AIAttempt:
    """One attempt of one AI job on this worker."""

    def __init__(self, task: Task, app: Celery, job_id: str, spec: dict[str, Any]) -> None:
        self.app, self.job_id, self.spec = app, job_id, spec
        self.res = resources(app)
        self.task_id: str = task.request.id
        self.worker = worker_context(app).instance or f"{task.request.hostname}"
        self.pipeline, self.model_id = spec["pipeline"], spec["model_id"]
        self.params: dict[str, Any] = spec.get("params", {})
        self.stream = self.pipeline == "llm" and bool(self.params.get("stream"))
        self.sent = 0
        self.runner_host: str | None = None

    def run(self) -> dict[str, Any]:
        settings = self.res.settings
        try:
            claim = self.res.jobs.start_attempt(
                self.job_id,
                self.task_id,
                self.worker,
                self.worker,
                max_attempts=settings.max_attempts + len(self.spec.get("tried", [])),
                run_timeout_s=settings.ai_timeout_s + 10.0,
            )
        except JobNotFound:
            return skip_missing(self.task_id, self.job_id)
        if claim.status in ("final", "stale"):
            log.info("skipping %s for job %s (%s)", self.task_id, self.job_id, claim.status)
            return {"job_id": self.job_id, "skipped": True, "state": claim.status}
        if claim.status == "exhausted":
            last = self.res.jobs.get(self.job_id).error or "the worker was lost each time"
            self._fail("max_attempts", f"gave up after {claim.attempts - 1} attempt(s): {last}")
        started = time.perf_counter()
        try:
            response = self._call()
            response, media = rehost(
                response,
                self.job_id,
                self.res.blobs,
                self.res.settings.ai_max_result_bytes,
                self._media_policy(),
            )
        except BlobMissing as e:
            self._fail(InputMissing.code, str(e))
        except (InsufficientCapacity, RunnerFailed) as e:
            if self.sent:  # part of the answer is out: another worker cannot take over
                self._fail(e.code, f"{e} (after {self.sent} chunk(s))")
            return self._move(e)
        except FarmError as e:
            self._fail(e.code, str(e))
        seconds = time.perf_counter() - started
        payload = {
            "job_id": self.job_id,
            "pipeline": self.pipeline,
            "model_id": self.model_id,
            "worker": self.worker,
            "response": response,
            "media": [
                {"key": m.key, "content_type": m.content_type, "size": m.size} for m in media
            ],
            "timings": {"total": seconds},
        }
        if self.res.jobs.complete(
            self.job_id, self.task_id, self.worker, payload, {"total": seconds}
        ):
            self.res.announce(self.spec.get("notify"), self.job_id, "done", payload)
            metrics.ai_job_done(self.pipeline, self.model_id, seconds)
        if self.stream:
            streams_of(self.app, self.res).end(self.job_id)
        return payload

    def _call(self) -> dict[str, Any]:
        pool = worker_context(self.app).ai_pool
        if pool is None:
            raise InsufficientCapacity(f"{self.worker} runs no AI models")
        runner = pool.acquire(self.pipeline, self.model_id)
        if runner.http is not None:
            self.runner_host = httpx.URL(runner.http.url).host
        try:
            files = {name: self.res.blobs.get(key) for name, key in self.spec["files"].items()}
            streams = streams_of(self.app, self.res)

            def on_chunk(chunk: dict[str, Any]) -> None:
                streams.push(self.job_id, chunk)
                self.sent += 1

            try:
                return dict(runner.run(self.params, files, on_chunk if self.stream else None))
            except FarmError:
                raise
            except Exception as e:  # a built-in pipeline's bug is this runner's failure
                log.exception("runner for %s %s failed", self.pipeline, self.model_id)
                raise RunnerFailed(f"{self.pipeline} pipeline error: {e}") from e
        finally:
            pool.release(runner)

    def _media_policy(self) -> FetchPolicy:
        """Where result media may be fetched from: the operator's runner (whatever its
        address), public addresses, and FARM_FETCH_ALLOW."""
        policy = self.res.settings.fetch_policy()
        return policy.with_hosts(self.runner_host) if self.runner_host else policy

    def _move(self, error: FarmError) -> dict[str, Any]:
        tried = [*self.spec.get("tried", []), self.worker]
        reasons = [*self.spec.get("reasons", []), f"{self.worker}: {error}"]
        try:
            route = route_ai(self.pipeline, self.model_id, self.res.registry.live(), tried)
        except (NoCapacity, FarmError):
            self._fail(
                InsufficientCapacity.code,
                f"insufficient capacity for {self.pipeline} {self.model_id}: " + "; ".join(reasons),
            )
        jobs = self.res.jobs
        jobs.attempt_failed(
            self.job_id, self.task_id, self.worker, error.code, str(error), final=False
        )
        spec = {**self.spec, "tried": tried, "reasons": reasons}
        seen = jobs.get(self.job_id)
        task_id = f"{self.job_id}.{seen.publishes + 1}"
        if jobs.republished(seen, task_id, route.queue, spec=spec):
            publish_ai(self.app, queue=route.queue, job_id=self.job_id, task_id=task_id, spec=spec)
        metrics.ai_job_moved(self.pipeline, self.model_id, error.code)
        log.warning("job %s moves from %s to %s: %s", self.job_id, self.worker, route.queue, error)
        return {"job_id": self.job_id, "moved_to": route.workers[0]}

    def _fail(self, code: str, message: str) -> NoReturn:
        if self.res.jobs.attempt_failed(
            self.job_id, self.task_id, self.worker, code, message, final=True
        ):
            self.res.announce(self.spec.get("notify"), self.job_id, "failed")
        metrics.ai_job_failed(self.pipeline, self.model_id, code)
        if self.stream:
            streams_of(self.app, self.res).error(self.job_id, code, message)
        log.warning("job %s failed on %s (%s): %s", self.job_id, self.worker, code, message)
        raise JobFailed(f"{code}: {message}")

"""Celery tasks: transcode a segment, and reconcile jobs the broker may have lost."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any, NoReturn, TypeVar

import redis
from celery import Celery, Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from sqlalchemy.exc import DBAPIError

from farm import metrics
from farm.blobstore import BlobMissing, BlobStoreFailed
from farm.context import BlobOps, JobOps, TaskStores, worker_context
from farm.errors import (
    AccessDenied,
    CredentialRevoked,
    FarmError,
    InputMissing,
    RetryableError,
    TranscodeTimeout,
    VerificationFailed,
    WorkerFailed,
)
from farm.media.engine import EngineOptions, transcode
from farm.media.output import EXTENSIONS
from farm.media.profiles import profiles_from_json
from farm.media.result import TranscodeResult
from farm.publish import job_timeout_s
from farm.reconcile import reconcile
from farm.resources import Resources, is_unreachable

__all__ = [
    "BlobOps",
    "JobFailed",
    "JobOps",
    "TaskStores",
    "register_tasks",
    "resources",
    "stores",
    "use_engine",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class JobFailed(FarmError):
    """Raised by a task when its job failed for good; the job row has the reason."""

    code = "job_failed"


def resources(app: Celery) -> Resources:
    """This cluster's clients in the process running ``app``'s tasks (farm.context)."""
    return worker_context(app).resources


def use_engine(app: Celery, engine: Callable[..., TranscodeResult] | None) -> None:
    """Make ``engine`` the transcode step of ``app``'s tasks, called as the local engine is
    (``engine(data, profiles, opts) -> TranscodeResult``); None restores the local engine.
    The node's go-livepeer bridge pushes segments to remote transcoders this way."""
    worker_context(app).engine = engine


def stores(app: Celery) -> TaskStores:
    """Where ``app``'s tasks read and write: a remote transcoder's node API, or this
    cluster's stores."""
    return worker_context(app).stores


def _worker_name(task: Task) -> str:
    # Celery's name for the worker, which Flower shows; a local worker's is also its name in
    # the capability registry (farm.worker), so status, Flower and the attempt log agree.
    return task.request.hostname or socket.gethostname()


def output_key(job_id: str, name: str, fmt: str, attempt: int) -> str:
    """Where an attempt stores a rendition. Each attempt has keys of its own, so one that
    finishes late never rewrites what the attempt that won the job recorded, and needs no
    look at the job before it stores."""
    return f"jobs/{job_id}/out/{attempt}/{name}.{EXTENSIONS[fmt]}"


def register_tasks(app: Celery) -> None:
    """Define the farm's tasks on ``app``."""

    # A failed job is expected: Celery logs it in one line, without a traceback.
    @app.task(
        name="farm.transcode",
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        throws=(JobFailed,),
        shared=False,
    )
    def transcode_task(
        self: Task, job_id: str, spec: dict[str, Any], avoid: str | None = None, handbacks: int = 0
    ) -> dict[str, Any]:
        if avoid is not None and _hand_back(self, app, avoid, handbacks):
            raise self.retry(
                countdown=0.2, max_retries=None, kwargs={"avoid": avoid, "handbacks": handbacks + 1}
            )
        return _run_transcode(self, app, job_id, spec)

    @app.task(name="farm.reconcile", ignore_result=True, shared=False)
    def reconcile_task() -> dict[str, int]:
        return reconcile(app, resources(app))

    @app.task(name="farm.ping", shared=False)
    def ping_task() -> str:
        return "pong"


def _run_transcode(task: Task, app: Celery, job_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    context = worker_context(app)
    res = context.stores
    worker = _worker_name(task)
    task_id = task.request.id
    started = time.perf_counter()
    instance = context.instance
    try:
        jobs, blobs = res.jobs, res.blobs
        claim = jobs.start_attempt(
            job_id,
            task_id,
            worker,
            instance,
            max_attempts=res.settings.max_attempts,
            run_timeout_s=job_timeout_s(spec.get("duration")),
        )
    except CredentialRevoked as e:
        # A remote transcoder whose credential ended: the job is not ours; give it back.
        raise Reject(str(e), requeue=True) from e
    except RetryableError as e:
        raise task.retry(exc=e, countdown=2.0, max_retries=None) from e
    except (DBAPIError, redis.RedisError) as e:
        if not is_unreachable(e):
            raise
        # The job store is down: nothing was claimed; try again shortly rather than leave the
        # job to the reconciler's queued timeout.
        log.warning("job store unreachable claiming %s, retrying: %s", job_id, e)
        raise task.retry(exc=e, countdown=2.0, max_retries=None) from e
    if claim.status in ("final", "stale"):
        # A redelivered or superseded message: the job finished or was republished.
        log.info("skipping %s for job %s (%s)", task_id, job_id, claim.status)
        return {"job_id": job_id, "skipped": True, "state": claim.status}
    # Once claimed, the outcome must reach the job row: a store that is down for a moment is
    # waited for, not left for the reconciler to run the job again. The input is waited for
    # until the soft limit (a transcode must still fit); a finished result, its renditions and
    # a failure are kept until the job's deadline, which the hard limit outlasts
    # (farm.publish.time_limits).
    soft = task.request.timelimit[1] if task.request.timelimit else None
    begun = time.monotonic() - (time.perf_counter() - started)
    deadline = begun + job_timeout_s(spec.get("duration"))
    fetch_by = min(deadline, begun + float(soft) - 1.0) if soft else deadline
    record_by = deadline - 1.0
    if claim.status == "exhausted":
        last = jobs.last_error(job_id) or "the worker was lost each time"
        message = f"gave up after {claim.attempts - 1} attempt(s); last error: {last}"
        _until_reachable(
            lambda: jobs.attempt_failed(
                job_id, task_id, worker, "max_attempts", message, final=True
            ),
            job_id,
            record_by,
            "recording",
        )
        metrics.job_failed("max_attempts")
        raise JobFailed(message)
    timings: dict[str, float] = {}
    fail = partial(
        _failed,
        task,
        jobs,
        job_id,
        task_id,
        worker,
        max_attempts=res.settings.max_attempts,
        attempts=claim.attempts,
        record_by=record_by,
    )
    try:
        fetch = partial(blobs.get, spec["input_key"])
        data = _until_reachable(fetch, job_id, fetch_by, "fetching the input of")
        timings["fetch"] = time.perf_counter() - started
        profiles = profiles_from_json(spec["profiles"])
        opts = EngineOptions(
            fmt=spec.get("format", "mpegts"),
            preset=spec.get("preset", "veryfast"),
            gpu=context.gpu,
            deadline_s=float(soft) if soft else None,
            verify=res.settings.verify_renditions,
        )
        cpu = time.process_time()
        result = (context.engine or transcode)(data, profiles, opts)
        timings["engine"] = result.timings["total"]
        # CPU seconds of the whole process (the engine's threads too) while it ran: what the
        # data plane cost, as against the control plane around it (make bench-costs).
        timings["engine_cpu"] = time.process_time() - cpu
        # Celery drops the request after it has stored the answer: the engine's decoder and
        # encoders are freed then, not on the way to the caller.
        task.request.farm_spent = result.spent
        result = _chaos(result, res.settings.chaos, claim.attempts)
        if result.verification:
            for failure in result.verification:
                metrics.verification_failed(failure.reason)
            raise VerificationFailed(
                "rendition verification failed: " + "; ".join(map(str, result.verification))
            )
        if result.verification is not None:
            timings["verify"] = result.timings.get("verify", 0.0)
            metrics.segment_verified(timings["verify"])
    except AccessDenied as e:
        # A remote transcoder whose job another worker holds now: not ours to fail.
        log.warning("job %s moved on from %s: %s", job_id, worker, e)
        return {"job_id": job_id, "skipped": True, "state": "superseded"}
    except Exception as e:
        return fail(_classify(e, task))
    # The result exists: from here it is kept until it is recorded (or the job's deadline).
    try:
        t = time.perf_counter()
        outputs = [
            (output_key(job_id, r.profile.name, r.fmt, claim.attempts), r)
            for r in result.renditions
        ]
        _store_all(res, job_id, [(key, r.data) for key, r in outputs], record_by)
        renditions = [{**r.summary(), "key": key} for key, r in outputs]
        timings["store"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - started
        payload = {
            "job_id": job_id,
            "renditions": renditions,
            "decoder": result.decoder,
            "decoded_frames": result.decoded_frames,
            "decoded_pixels": result.decoded_pixels,
            "encoded_pixels": result.encoded_pixels,
            "input_start": result.input_start,
            "input_duration": result.input_duration,
            "worker": worker,
            "timings": timings,
        }
        # The write is idempotent (a repeat after a lost answer finds the job done), so it is
        # safe to repeat while the store is unreachable.
        won = _until_reachable(
            lambda: jobs.complete(job_id, task_id, worker, payload, timings),
            job_id,
            record_by,
            "recording",
        )
    except AccessDenied as e:
        # The job finished meanwhile (a remote transcoder's node refuses to sign uploads for
        # a final job).
        log.warning("job %s moved on from %s: %s", job_id, worker, e)
        return {"job_id": job_id, "skipped": True, "state": "superseded"}
    except (DBAPIError, redis.RedisError) as e:
        if is_unreachable(e):
            raise  # still down at the job's deadline: the reconciler takes it from here
        return fail(_classify(e, task))
    except Exception as e:
        return fail(_classify(e, task))
    if not won:
        # Another attempt finished the job first (or this one did, and the answer to its
        # first write was lost): the job row holds the result that counts, and waiters read
        # it from there. This attempt's renditions are under its own keys.
        log.info("job %s was finished by another attempt than %s", job_id, task_id)
        return {"job_id": job_id, "skipped": True, "state": "superseded"}
    metrics.segment_transcoded(
        [r.profile.name for r in result.renditions], timings["engine"], result.encoded_pixels
    )
    return payload


def _store_all(res: TaskStores, job_id: str, blobs: list[tuple[str, bytes]], until: float) -> None:
    """Write each (key, data), side by side (each kept while the store is unreachable, as
    ``_until_reachable`` does); the first error is raised once every write has ended, so no
    write is still running when the attempt's outcome is recorded."""
    store = res.blobs

    def put(key: str, data: bytes) -> None:
        _until_reachable(partial(store.put, key, data), job_id, until, "storing a rendition of")

    if len(blobs) == 1:
        put(*blobs[0])
        return
    pending = [res.writers.submit(put, key, data) for key, data in blobs]
    errors = [e for e in map(_outcome, pending) if e is not None]
    if errors:
        raise errors[0]


def _outcome(future: Future[None]) -> BaseException | None:
    """The error ``future`` ended with, waiting for it through the task's soft time limit
    (which bounds the transcode, not the recording of its result)."""
    while True:
        try:
            return future.exception()
        except SoftTimeLimitExceeded:
            log.warning("soft time limit passed while storing renditions; carrying on")


def _until_reachable(op: Callable[[], _T], job_id: str, until: float, doing: str) -> _T:
    """``op`` on the job or blob store, again while the store (or, on a remote transcoder,
    the node API) is unreachable, until ``until`` (time.monotonic()); then the last error
    is raised. A blink of a store neither spends the job's attempts nor loses its result.
    The task's soft time limit, should it pass meanwhile, bounds the transcode, not this."""
    delay = 0.25
    while True:
        try:
            return op()
        except SoftTimeLimitExceeded:
            if time.monotonic() >= until:
                raise
            log.warning("soft time limit passed %s job %s; carrying on", doing, job_id)
            continue
        except (DBAPIError, redis.RedisError, RetryableError) as e:
            if isinstance(e, BlobStoreFailed):
                raise  # the store answered: waiting does not help
            if not isinstance(e, RetryableError) and not is_unreachable(e):
                raise
            if time.monotonic() + delay > until:
                log.error("store unreachable %s job %s, giving up: %s", doing, job_id, e)
                raise
            log.warning("store unreachable %s job %s, retrying: %s", doing, job_id, e)
        try:
            time.sleep(delay)
        except SoftTimeLimitExceeded:
            log.warning("soft time limit passed %s job %s; carrying on", doing, job_id)
        delay = min(delay * 2, 2.0)


def _chaos(result: TranscodeResult, kind: str | None, attempt: int) -> TranscodeResult:
    """Chaos testing: damage the output as configured, then verify what is left."""
    from farm.media.damage import FIRST_ATTEMPT, damage
    from farm.media.verify import verify_result

    if not kind:
        return result
    always, _, kind = kind.rpartition(":")  # "always:truncate" damages every attempt
    if kind in FIRST_ATTEMPT and attempt > 1 and not always:
        return result
    damaged = damage(result, kind)
    damaged.verification = list(verify_result(damaged).failures)
    return damaged


def _hand_back(task: Task, app: Celery, avoid: str, handbacks: int) -> bool:
    """True when this worker failed the job's last attempt and another live worker could
    take it (at most twice, so a job never circles when this is the only good worker)."""
    if handbacks >= 2 or worker_context(app).instance != avoid:
        return False
    if getattr(app, "farm_stores", None) is not None:
        return False  # a remote transcoder cannot read the registry
    queue = (task.request.delivery_info or {}).get("routing_key")
    try:
        live = resources(app).registry.live()
    except FarmError:
        return False
    return any(w.worker != avoid and queue in w.queues for w in live)


def _classify(error: BaseException, task: Task) -> FarmError:
    """The farm error an attempt failed with (retryable or not is its type). An error the
    farm does not know (a bug, an OS error nothing mapped) fails the attempt as retryable,
    with its class and message, so the job never stays running and its cause is kept."""
    if isinstance(error, SoftTimeLimitExceeded):
        return TranscodeTimeout(f"transcode exceeded its {task.request.timelimit} s limit")
    if isinstance(error, BlobMissing):
        return InputMissing(str(error))
    if isinstance(error, FarmError):
        return error
    log.error("unexpected error in job attempt", exc_info=error)
    return WorkerFailed(f"{type(error).__name__}: {error}")


def _failed(
    task: Task,
    jobs: JobOps,
    job_id: str,
    task_id: str,
    worker: str,
    error: FarmError,
    *,
    max_attempts: int,
    attempts: int,
    record_by: float,
) -> NoReturn:
    retryable = isinstance(error, RetryableError)
    final = not retryable or attempts >= max_attempts
    recorded = _until_reachable(
        lambda: jobs.attempt_failed(job_id, task_id, worker, error.code, str(error), final=final),
        job_id,
        record_by,
        "recording",
    )
    metrics.segment_transcode_failed(error.code)
    log.warning("job %s attempt on %s failed (%s): %s", job_id, worker, error.code, error)
    if final:
        if recorded:
            metrics.job_failed(error.code)
        raise JobFailed(f"{error.code}: {error}")
    # Retry with the same task id so the job row stays the owner of the message.
    # The job row caps attempts; Celery's own retry count is not the limit. The retry asks to
    # run elsewhere: a worker that just failed it hands it back while others are alive.
    raise task.retry(
        exc=error,
        countdown=0.5,
        max_retries=None,
        kwargs={"avoid": worker_context(task.app).instance},
    )

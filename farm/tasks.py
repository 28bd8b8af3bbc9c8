"""Celery tasks: transcode a segment, and reconcile jobs the broker may have lost."""

from __future__ import annotations

import logging
import math
import random
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

from chain.signing import keccak256
from farm import metrics
from farm.blobstore import BlobMissing, BlobStoreFailed
from farm.context import BlobOps, JobOps, TaskStores, WorkerContext, worker_context
from farm.errors import (
    AccessDenied,
    CredentialRevoked,
    FarmError,
    InputMissing,
    JobNotFound,
    RetryableError,
    TranscodeTimeout,
    VerificationFailed,
    WorkerFailed,
)
from farm.jobs import StartOutcome
from farm.media.encoders import StreamSession
from farm.media.engine import EngineOptions, transcode
from farm.media.output import EXTENSIONS
from farm.media.profiles import profiles_from_json
from farm.media.result import TranscodeResult
from farm.publish import job_timeout_s
from farm.queues import stream_queue, stream_queue_owner
from farm.reconcile import reconcile
from farm.resources import Resources, is_unreachable
from farm.router import Need, route_transcode

__all__ = [
    "BlobOps",
    "JobFailed",
    "JobOps",
    "TaskStores",
    "register_tasks",
    "resources",
    "skip_missing",
    "stores",
    "use_engine",
]

log = logging.getLogger(__name__)


def skip_missing(task_id: str, job_id: str) -> dict[str, Any]:
    """A task whose job is not in the table (a message from before the table was restored,
    or published to this broker by another cluster): nothing to run and nothing to record;
    the message is acknowledged and dropped."""
    log.warning("skipping %s: no job %s in the job table", task_id, job_id)
    return {"job_id": job_id, "skipped": True, "state": "missing"}


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
        context = worker_context(app)
        if avoid is not None and _hand_back(self, context, avoid, handbacks):
            raise self.retry(
                countdown=0.2, max_retries=None, kwargs={"avoid": avoid, "handbacks": handbacks + 1}
            )
        return _TranscodeAttempt(self, context, job_id, spec).run()

    @app.task(name="farm.reconcile", ignore_result=True, shared=False)
    def reconcile_task() -> dict[str, int]:
        return reconcile(app, resources(app))

    @app.task(name="farm.ping", shared=False)
    def ping_task() -> str:
        return "pong"


class _TranscodeAttempt:
    """One attempt of one transcode job on this worker: claim, fetch, transcode, verify,
    store, complete.

    Once claimed, the outcome must reach the job row: a store that is down for a moment is
    waited for, not left for the reconciler to run the job again. The input is waited for
    until the soft limit (a transcode must still fit); a finished result, its renditions and
    a failure are kept until the job's deadline, which the hard limit outlasts
    (farm.dispatch.time_limits)."""

    __slots__ = (
        "attempt",
        "context",
        "fetch_by",
        "job_id",
        "record_by",
        "soft",
        "spec",
        "started",
        "stores",
        "task",
        "task_id",
        "timeout_s",
        "timings",
        "worker",
    )

    def __init__(
        self, task: Task, context: WorkerContext, job_id: str, spec: dict[str, Any]
    ) -> None:
        self.started = time.perf_counter()
        begun = time.monotonic()
        self.task, self.context, self.stores = task, context, context.stores
        self.job_id, self.spec = job_id, spec
        self.task_id: str = task.request.id
        self.worker = _worker_name(task)
        self.timeout_s = job_timeout_s(spec.get("duration"))
        limits = task.request.timelimit
        self.soft: float | None = float(limits[1]) if limits and limits[1] else None
        deadline = begun + self.timeout_s
        self.fetch_by = min(deadline, begun + self.soft - 1.0) if self.soft else deadline
        self.record_by = deadline - 1.0
        #: The job's attempt number, from the claim (its renditions' keys hold it).
        self.attempt = 0
        self.timings: dict[str, float] = {}

    def run(self) -> dict[str, Any]:
        try:
            claim = self.claim()
        except JobNotFound:
            return skip_missing(self.task_id, self.job_id)
        if claim.status in ("final", "stale"):
            # A redelivered or superseded message: the job finished or was republished.
            log.info("skipping %s for job %s (%s)", self.task_id, self.job_id, claim.status)
            return {"job_id": self.job_id, "skipped": True, "state": claim.status}
        self.attempt = claim.attempts
        if claim.status == "exhausted":
            self.give_up()
        try:
            result = self.transcode(self.fetch())
            self.verify(result)
        except AccessDenied as e:
            # A remote transcoder whose job another worker holds now: not ours to fail.
            return self.superseded(e)
        except Exception as e:
            self.fail(self.classify(e))
        # The result exists: from here it is kept until it is recorded (or the job's deadline).
        try:
            payload = self.store(result)
            won = self.complete(payload)
        except AccessDenied as e:
            # The job finished meanwhile (a remote transcoder's node refuses to sign uploads
            # for a final job).
            return self.superseded(e)
        except (DBAPIError, redis.RedisError) as e:
            if is_unreachable(e):
                raise  # still down at the job's deadline: the reconciler takes it from here
            self.fail(self.classify(e))
        except Exception as e:
            self.fail(self.classify(e))
        if not won:
            # Another attempt finished the job first (or this one did, and the answer to its
            # first write was lost): the job row holds the result that counts, and waiters
            # read it from there. This attempt's renditions are under its own keys.
            log.info("job %s was finished by another attempt than %s", self.job_id, self.task_id)
            return {"job_id": self.job_id, "skipped": True, "state": "superseded"}
        # The submitter hears of it now rather than at its next look at the row.
        self.announce("done", payload)
        self.pin_stream()
        metrics.segment_transcoded(
            [r.profile.name for r in result.renditions],
            self.timings["engine"],
            result.encoded_pixels,
        )
        if result.encoders is not None:
            metrics.stream_encoders(result.encoders)
        return payload

    def claim(self) -> StartOutcome:
        """The job's next attempt for this task, or why there is none; a claim that cannot be
        made now is retried (or, on a remote transcoder whose credential ended, given back)."""
        try:
            return self.stores.jobs.start_attempt(
                self.job_id,
                self.task_id,
                self.worker,
                self.context.instance,
                max_attempts=self.stores.settings.max_attempts,
                run_timeout_s=self.timeout_s,
            )
        except CredentialRevoked as e:
            # A remote transcoder whose credential ended: the job is not ours; give it back.
            raise Reject(str(e), requeue=True) from e
        except RetryableError as e:
            raise self.task.retry(exc=e, countdown=2.0, max_retries=None) from e
        except (DBAPIError, redis.RedisError) as e:
            if not is_unreachable(e):
                raise
            # The job store is down: nothing was claimed; try again shortly rather than leave
            # the job to the reconciler's queued timeout.
            log.warning("job store unreachable claiming %s, retrying: %s", self.job_id, e)
            raise self.task.retry(exc=e, countdown=2.0, max_retries=None) from e

    def give_up(self) -> NoReturn:
        """Fail the job for good: its attempts are spent (workers lost on the way count)."""
        jobs = self.stores.jobs
        last = jobs.last_error(self.job_id) or "the worker was lost each time"
        message = f"gave up after {self.attempt - 1} attempt(s); last error: {last}"
        self._until_reachable(
            lambda: jobs.attempt_failed(
                self.job_id, self.task_id, self.worker, "max_attempts", message, final=True
            ),
            self.record_by,
            "recording",
        )
        self.announce("failed")
        metrics.job_failed("max_attempts")
        raise JobFailed(message)

    def fetch(self) -> bytes:
        """The job's input, waited for while the blob store is unreachable."""
        fetch = partial(self.stores.blobs.get, self.spec["input_key"])
        data = self._until_reachable(fetch, self.fetch_by, "fetching the input of")
        self.timings["fetch"] = time.perf_counter() - self.started
        return data

    def transcode(self, data: bytes) -> TranscodeResult:
        """The renditions of ``data``, by this worker's engine (verified by it, when the
        settings ask), and what tests damage them into (farm.context)."""
        spec, context = self.spec, self.context
        profiles = profiles_from_json(spec["profiles"])
        stream = spec.get("stream")
        opts = EngineOptions(
            fmt=spec.get("format", "mpegts"),
            preset=spec.get("preset", "veryfast"),
            gpu=context.gpu,
            deadline_s=self.soft,
            verify=self.stores.settings.verify_renditions,
            show_from=spec.get("show_from"),
            session=(
                StreamSession(stream, context.encoders)
                if stream and context.encoders is not None
                else None
            ),
        )
        cpu = time.process_time()
        result = (context.engine or transcode)(data, profiles, opts)
        self.timings["engine"] = result.timings["total"]
        # CPU seconds of the whole process (the engine's threads too) while it ran: what the
        # data plane cost, as against the control plane around it (make bench-costs).
        self.timings["engine_cpu"] = time.process_time() - cpu
        # Celery drops the request after it has stored the answer: the engine's decoder and
        # encoders are freed then, not on the way to the caller.
        self.task.request.farm_spent = result.spent
        if context.damage is not None:
            result = context.damage(result, self.attempt)
        return result

    def verify(self, result: TranscodeResult) -> None:
        """Raise VerificationFailed when a rendition failed its checks; count them."""
        if result.verification:
            for failure in result.verification:
                metrics.verification_failed(failure.reason)
            raise VerificationFailed(
                "rendition verification failed: " + "; ".join(map(str, result.verification))
            )
        if result.verification is not None:
            self.timings["verify"] = result.timings.get("verify", 0.0)
            metrics.segment_verified(self.timings["verify"])

    def store(self, result: TranscodeResult) -> dict[str, Any]:
        """Store the renditions under this attempt's keys; the job's result to record."""
        t = time.perf_counter()
        outputs = [
            (output_key(self.job_id, r.profile.name, r.fmt, self.attempt), r)
            for r in result.renditions
        ]
        # A node that signs the renditions' hashes (go-livepeer's TranscodeData.sig) asks for
        # them: each is hashed here, where the bytes are, beside its own write.
        hashes = self._store_all(
            [(key, r.data) for key, r in outputs], hashed=bool(self.spec.get("keccak"))
        )
        renditions = [{**r.summary(), "key": key} for key, r in outputs]
        for entry, digest in zip(renditions, hashes, strict=True):
            if digest is not None:
                entry["keccak"] = digest.hex()
        timings = self.timings
        timings["store"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - self.started
        return {
            "job_id": self.job_id,
            "renditions": renditions,
            "decoder": result.decoder,
            "decoded_frames": result.decoded_frames,
            "decoded_pixels": result.decoded_pixels,
            "encoded_pixels": result.encoded_pixels,
            "input_start": result.input_start,
            "input_duration": result.input_duration,
            "worker": self.worker,
            "timings": timings,
            # A segment of a stream: whether every rendition went on with the encoder its
            # stream's previous segment left open here, and how each got its encoder.
            **(
                {"reused": _all_reused(result.encoders), "encoders": result.encoders}
                if result.encoders is not None
                else {}
            ),
        }

    def pin_stream(self) -> None:
        """Send the stream's next segment to this worker, which keeps its encoders now.

        The pin lasts the encoders' idle expiry; it is written again once a third of that
        has passed, not after every segment (a round trip each)."""
        stream, cache = self.spec.get("stream"), self.context.encoders
        instance = self.context.instance
        if not stream or cache is None or instance is None or cache.kept(stream) == 0:
            return
        pinned, now = self.context.pinned, time.monotonic()
        if now - pinned.get(stream, -math.inf) < cache.idle_s / 3:
            return
        try:
            self.context.resources.registry.pin_stream(stream, instance, cache.idle_s)
        except FarmError as e:
            # Only the stream's next segment is affected: it goes to the capability queue.
            log.warning("could not pin stream %s to %s: %s", stream, instance, e)
            return
        if len(pinned) > 1_000:  # streams come and go
            pinned.clear()
        pinned[stream] = now

    def complete(self, payload: dict[str, Any]) -> bool:
        """Record the job done with ``payload``: False when another attempt finished it."""
        jobs = self.stores.jobs
        # The write is idempotent (a repeat after a lost answer finds the job done), so it is
        # safe to repeat while the store is unreachable.
        return self._until_reachable(
            lambda: jobs.complete(self.job_id, self.task_id, self.worker, payload, self.timings),
            self.record_by,
            "recording",
        )

    def fail(self, error: FarmError) -> NoReturn:
        """Record this attempt's failure; retry the job (with the same task id, asking to
        run elsewhere) or, when the error is permanent or the attempts are spent, fail it."""
        retryable = isinstance(error, RetryableError)
        final = not retryable or self.attempt >= self.stores.settings.max_attempts
        jobs, job_id, worker = self.stores.jobs, self.job_id, self.worker
        recorded = self._until_reachable(
            lambda: jobs.attempt_failed(
                job_id, self.task_id, worker, error.code, str(error), final=final
            ),
            self.record_by,
            "recording",
        )
        metrics.segment_transcode_failed(error.code)
        log.warning("job %s attempt on %s failed (%s): %s", job_id, worker, error.code, error)
        if final:
            if recorded:
                self.announce("failed")
                metrics.job_failed(error.code)
            raise JobFailed(f"{error.code}: {error}")
        # Retry with the same task id so the job row stays the owner of the message.
        # The job row caps attempts; Celery's own retry count is not the limit. The retry asks
        # to run elsewhere: a worker that just failed it hands it back while others are alive.
        queue = _retry_queue(self.task, self.context, self.spec)
        if queue is not None and stream_queue_owner(queue) is not None:
            try:  # where the retry waits, for the reconciler should that worker go
                self.context.resources.jobs.waits_in(job_id, queue)
            except (DBAPIError, FarmError) as e:
                # The job's deadline still bounds the wait: the reconciler republishes it then.
                log.warning("job %s: could not record its retry's queue %s: %s", job_id, queue, e)
        raise self.task.retry(
            exc=error,
            countdown=0.5,
            max_retries=None,
            kwargs={"avoid": self.context.instance},
            **({"queue": queue} if queue is not None else {}),
        )

    def announce(self, state: str, result: dict[str, Any] | None = None) -> None:
        """Tell the job's submitter it is final (farm.notices); its row already says so."""
        self.stores.announce(self.spec.get("notify"), self.job_id, state, result)

    def superseded(self, error: AccessDenied) -> dict[str, Any]:
        """The task's answer when the job moved on to another attempt meanwhile."""
        log.warning("job %s moved on from %s: %s", self.job_id, self.worker, error)
        return {"job_id": self.job_id, "skipped": True, "state": "superseded"}

    def classify(self, error: BaseException) -> FarmError:
        """The farm error this attempt failed with (retryable or not is its type). An error
        the farm does not know (a bug, an OS error nothing mapped) fails the attempt as
        retryable, with its class and message, so the job never stays running and its cause
        is kept."""
        if isinstance(error, SoftTimeLimitExceeded):
            return TranscodeTimeout(f"transcode exceeded its {self.task.request.timelimit} s limit")
        if isinstance(error, BlobMissing):
            return InputMissing(str(error))
        if isinstance(error, FarmError):
            return error
        log.error("unexpected error in job attempt", exc_info=error)
        return WorkerFailed(f"{type(error).__name__}: {error}")

    def _store_all(
        self, blobs: list[tuple[str, bytes]], *, hashed: bool = False
    ) -> list[bytes | None]:
        """Write each (key, data), side by side (each kept while the store is unreachable),
        and with ``hashed`` take each one's keccak256 in the same thread (the hashes of two
        renditions overlap each other and the writes). The hashes, in order (None unhashed).
        The first error is raised once every write has ended, so no write is still running
        when the attempt's outcome is recorded."""
        store, until = self.stores.blobs, self.record_by

        def put(key: str, data: bytes) -> bytes | None:
            digest = keccak256(data) if hashed else None
            self._until_reachable(partial(store.put, key, data), until, "storing a rendition of")
            return digest

        if len(blobs) == 1:
            return [put(*blobs[0])]
        pending = [self.stores.writers.submit(put, key, data) for key, data in blobs]
        errors = [e for e in map(_outcome, pending) if e is not None]
        if errors:
            raise errors[0]
        return [f.result() for f in pending]

    def _until_reachable(self, op: Callable[[], _T], until: float, doing: str) -> _T:
        """``op`` on the job or blob store, again while the store (or, on a remote
        transcoder, the node API) is unreachable, until ``until`` (time.monotonic()); then
        the last error is raised. A blink of a store neither spends the job's attempts nor
        loses its result. The task's soft time limit, should it pass meanwhile, bounds the
        transcode, not this."""
        job_id = self.job_id
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


def _all_reused(encoders: dict[str, int]) -> bool:
    """Whether every rendition of a segment encoded with its stream's kept encoder."""
    return encoders["reused"] > 0 and encoders["opened"] == encoders["fresh"] == 0


def _outcome(future: Future[Any]) -> BaseException | None:
    """The error ``future`` ended with, waiting for it through the task's soft time limit
    (which bounds the transcode, not the recording of its result)."""
    while True:
        try:
            return future.exception()
        except SoftTimeLimitExceeded:
            log.warning("soft time limit passed while storing renditions; carrying on")


def _retry_queue(task: Task, context: WorkerContext, spec: dict[str, Any]) -> str | None:
    """Where a failed attempt's retry goes when not back to the queue it came from.

    First choice, the own queue of another live worker that serves the job's route (the
    least loaded): the retry then runs elsewhere even while every other worker is busy, when
    a hand-back (_hand_back) could find only this worker idle and the job would spend its
    attempts here. Else a stream segment taken from this worker's own queue
    (farm.router.route_stream) retries on its capability queue. None: the same queue."""
    queue = (task.request.delivery_info or {}).get("routing_key")
    if context.stores is not context.resources:
        return None  # a remote transcoder (its stores are the node API) cannot read the registry
    try:
        live = context.resources.registry.live()
        route = route_transcode(Need(**spec["need"]), live)
    except (FarmError, KeyError, TypeError):
        return None  # no other route now: this worker's own queue still serves it
    others = [
        w
        for w in live
        if w.worker != context.instance
        and w.worker in route.workers
        and stream_queue(w.worker) in w.queues
    ]
    if others:
        return stream_queue(min(others, key=lambda w: (w.load, random.random())).worker)
    if queue and stream_queue_owner(queue) is not None:
        return route.queue
    return None


def _hand_back(task: Task, context: WorkerContext, avoid: str, handbacks: int) -> bool:
    """True when this worker failed the job's last attempt and another live worker could
    take it (at most twice, so a job never circles when this is the only good worker)."""
    if handbacks >= 2 or context.instance != avoid:
        return False
    if context.stores is not context.resources:
        return False  # a remote transcoder (its stores are the node API) cannot read the registry
    queue = (task.request.delivery_info or {}).get("routing_key")
    try:
        live = context.resources.registry.live()
    except FarmError:
        return False
    return any(w.worker != avoid and queue in w.queues for w in live)

"""The node API's routes for remote transcoders.

``POST /transcoders/register`` (orchSecret, constant-time) hands out an id, queues, the
heartbeat interval and a broker credential. Everything after that is authenticated by that
credential (``Authorization: Bearer ID:PASSWORD``): heartbeats, the job-table operations a
task needs (claim, complete, fail), and signing the URLs a task moves its input and
renditions through (``/blobs/KEY?t=&e=&s=``). Transcoders never touch the job table or the
blob store themselves.
"""

# No "from __future__ import annotations": the routes' Annotated dependencies are bound to
# this instance and must be evaluated where they are defined.
import hmac
import logging
import threading
import time
from typing import Annotated, Any

from celery import Celery
from fastapi import APIRouter, Body, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from farm import metrics
from farm.bodies import read_capped
from farm.errors import (
    AccessDenied,
    CredentialRevoked,
    InvalidSecret,
    PayloadTooLarge,
    RegistrationInvalid,
    RequestInvalid,
)
from farm.jobs import JobView
from farm.media.profiles import profiles_from_json
from farm.publish import job_timeout_s
from farm.queues import CODECS, CONTROL_QUEUE, transcode_queue
from farm.registry import Registry
from farm.remote.credentials import BrokerAcl, broker_url_for, require_redis_broker
from farm.remote.roster import Roster, TranscoderRecord
from farm.remote.signing import BLOB_PREFIX, UrlSigner
from farm.resources import Resources
from farm.settings import NodeSettings
from farm.tasks import output_key

__all__ = ["Registration", "TranscoderApi", "queues_for"]

log = logging.getLogger(__name__)


#: Text the job table stores: within its column (farm.jobs.models) and without NUL, which
#: PostgreSQL refuses.
_TEXT = r"^[^\x00]*$"
JobId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_TEXT)]
JobPath = Annotated[str, Path(min_length=1, max_length=64, pattern=_TEXT)]
TaskId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_TEXT)]
WorkerName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=_TEXT)]
Short = Annotated[str, StringConstraints(max_length=255)]


class Registration(BaseModel):
    """What a transcoder reports when it registers."""

    model_config = ConfigDict(allow_inf_nan=False)

    secret: str
    #: Segments in parallel; beyond a thousand it is a mistake, not a machine.
    capacity: int = Field(le=1000)
    region: Annotated[str, StringConstraints(max_length=64)] = "local"
    hostname: Short = ""
    #: GpuInfo.to_dict() of each: flat and finite, since /status writes it back as JSON.
    gpus: list[dict[Short, str | int | float | bool | None]] = Field(
        default_factory=list, max_length=64
    )
    gpu_codecs: list[Short] = Field(default_factory=list, max_length=64)
    gpu_decoders: list[Short] = Field(default_factory=list, max_length=64)
    cpu_codecs: list[Short] = Field(default_factory=list, max_length=64)


class Claim(BaseModel):
    task_id: TaskId
    worker: WorkerName


class RenditionResult(BaseModel):
    """One rendition of a result, as the transcode task reports it (with its blob key)."""

    model_config = ConfigDict(allow_inf_nan=False)

    name: Short
    key: str
    format: Short
    encoder: Short
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    frames: int = Field(gt=0)
    pixels: int = Field(ge=0)
    bytes: int = Field(gt=0)
    start: float
    duration: float = Field(ge=0)


class TranscodeResultBody(BaseModel):
    """A transcode task's result, as it is recorded on the job."""

    model_config = ConfigDict(allow_inf_nan=False)

    job_id: str
    renditions: list[RenditionResult] = Field(min_length=1)
    decoder: Short
    decoded_frames: int = Field(ge=0)
    decoded_pixels: int = Field(ge=0)
    encoded_pixels: int = Field(ge=0)
    input_start: float
    input_duration: float = Field(ge=0)
    worker: Short
    timings: dict[str, float]


class Completion(Claim):
    model_config = ConfigDict(allow_inf_nan=False)

    result: TranscodeResultBody
    timings: dict[str, float] | None = None


class FailureBody(Claim):
    code: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_TEXT)]
    error: Annotated[str, StringConstraints(max_length=64 << 10, pattern=_TEXT)]
    final: bool


class SignRequest(BaseModel):
    job_id: JobId
    method: str
    key: str


def queues_for(gpu_codecs: list[str], cpu_codecs: list[str]) -> list[str]:
    """The transcode queues for reported codecs: NVENC ones, else the CPU ones."""
    known = set(CODECS.values())
    gpu = [transcode_queue(c, gpu=True) for c in dict.fromkeys(gpu_codecs) if c in known]
    cpu = [transcode_queue(c, gpu=False) for c in dict.fromkeys(cpu_codecs) if c in known]
    queues = gpu or cpu
    if not queues:
        raise RegistrationInvalid("no codec this farm has a queue for")
    return queues


class TranscoderApi:
    """The roster, signer and routes of one node; a sweeper expires idle credentials."""

    def __init__(
        self, settings: NodeSettings, res: Resources, celery_app: Celery | None = None
    ) -> None:
        self.settings = settings
        self.res = res
        self.celery_app = celery_app
        self.signer = UrlSigner(settings.secret.get_secret_value(), settings.signed_url_ttl_s)
        self._roster: Roster | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def roster(self) -> Roster:
        """The roster; RemoteUnsupported when the broker is not Redis."""
        with self._lock:
            if self._roster is None:
                require_redis_broker(self.settings.broker_url)
                acl = BrokerAcl(self.settings.broker_url)
                # A heartbeat crosses the network and the node: its registry entry gets more
                # slack than a local worker's (six beats, at least six seconds).
                registry = Registry(
                    self.settings.redis_registry_url(), max(2 * self.settings.heartbeat_s, 2.0)
                )
                self._roster = Roster(registry, acl, self.settings.transcoder_credential_ttl_s)
            return self._roster

    def records(self) -> list[TranscoderRecord]:
        """Every transcoder ever attached (none when remote transcoders cannot attach)."""
        if not self.settings.broker_url.startswith(("redis://", "rediss://")):
            return []
        return self.roster.all()

    def start(self) -> None:
        """Start expiring credentials (Redis brokers) and reconciling in the background."""
        self._thread = threading.Thread(target=self._sweep, name="farm-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _sweep(self) -> None:
        last_reconcile = 0.0
        redis = self.settings.broker_url.startswith(("redis://", "rediss://"))
        while not self._stop.wait(self.settings.heartbeat_s):
            try:
                if redis and (expired := self.roster.sweep()):
                    log.warning("%d transcoder credential(s) expired", expired)
                if time.monotonic() - last_reconcile >= self.settings.reconcile_s:
                    last_reconcile = time.monotonic()
                    self._reconcile_without_local_workers(redis)
            except Exception as e:  # the sweeper must outlive a Redis or database blink
                log.warning("transcoder sweep failed: %s", e)

    def _reconcile_without_local_workers(self, redis: bool = True) -> None:
        """Run the reconciler here when transcoders serve this cluster and no local worker
        consumes the control queue (an orchestrator whose only workers are remote or
        go-livepeer transcoders): beat's reconcile tasks would wait for a consumer, and the
        jobs of an evicted or dead transcoder, or of a node that restarted, with them."""
        if self.celery_app is None:
            return
        live = self.res.registry.live()
        if any(CONTROL_QUEUE in w.queues and w.kind != "remote" for w in live):
            return
        attached = any(w.kind == "golivepeer" for w in live) or (
            redis and any(r.state == "active" for r in self.roster.all())
        )
        if not attached:
            return
        from farm.reconcile import reconcile

        counts = reconcile(self.celery_app, self.res)
        if any(counts.values()):
            log.warning("reconciled without local workers: %s", counts)

    def authenticated(
        self, authorization: Annotated[str | None, Header()] = None
    ) -> TranscoderRecord:
        """The transcoder whose credential the request carries."""
        scheme, _, token = (authorization or "").partition(" ")
        tid, _, password = token.partition(":")
        if scheme.lower() != "bearer" or not tid or not password:
            raise CredentialRevoked("missing transcoder credential")
        return self.roster.authenticate(tid, password)

    def _held(self, record: TranscoderRecord, job_id: str, worker: str | None = None) -> JobView:
        """The job, once the attempt's worker name is shown to be this transcoder's."""
        if worker is not None and not worker.startswith(record.name + "@"):
            raise AccessDenied(f"worker {worker!r} is not {record.name}")
        return self.res.jobs.get(job_id, with_attempts=worker is not None)

    def _unfinished(self, record: TranscoderRecord, job_id: str, body: Claim) -> JobView | None:
        """The job while ``body`` names an attempt of it this transcoder claimed and has not
        finished; None when it finished (a retried call). AccessDenied when it never claimed
        one: a result or failure for someone else's attempt must not end the job."""
        job = self._held(record, job_id, body.worker)
        mine = [
            a.outcome
            for a in job.attempt_log
            if a.task_id == body.task_id and a.worker == body.worker
        ]
        if not mine:
            raise AccessDenied(f"{body.worker} holds no attempt {body.task_id} of job {job_id}")
        # "lost": the reconciler put the job back while this attempt ran; it may still finish.
        return job if any(o in ("running", "lost") for o in mine) else None

    def register(self, request: Request, body: Registration) -> dict[str, Any]:
        if request.url.scheme != "https":
            raise AccessDenied("transcoders attach over HTTPS only (farm node --tls)")
        secret = self.settings.secret.get_secret_value().encode()
        if not hmac.compare_digest(body.secret.encode(), secret):
            log.warning("transcoder registration from %s: invalid secret", _peer(request))
            raise InvalidSecret("invalid secret")
        if body.capacity <= 0:
            raise RegistrationInvalid("zero capacity")
        require_redis_broker(self.settings.broker_url)
        queues = queues_for(body.gpu_codecs, body.cpu_codecs)
        reported = body.model_dump(exclude={"secret", "capacity"})
        record, password = self.roster.register(
            body.capacity, queues, address=_peer(request), **reported
        )
        base = self.settings.transcoder_broker_url or self.settings.broker_url
        broker = broker_url_for(base, record.acl_user, password)
        same_backend = self.settings.result_backend == self.settings.broker_url
        log.info("transcoder %s attached from %s: %s", record.name, _peer(request), queues)
        return {
            "id": record.id,
            "name": record.name,
            "queues": queues,
            "heartbeat_s": self.settings.heartbeat_s,
            "credential_ttl_s": self.settings.transcoder_credential_ttl_s,
            "credential": {"user": record.acl_user, "password": password},
            "broker_url": broker,
            "result_backend": broker if same_backend else None,
            "max_attempts": self.settings.max_attempts,
            "verify_renditions": self.settings.verify_renditions,
        }

    def heartbeat(self, record: TranscoderRecord, load: int) -> dict[str, Any]:
        record = self.roster.heartbeat(record, load)
        return {"heartbeat_s": self.settings.heartbeat_s, "expires_at": record.expires_at}

    def claim(self, record: TranscoderRecord, job_id: str, body: Claim) -> dict[str, Any]:
        job = self._held(record, job_id, body.worker)
        outcome = self.res.jobs.start_attempt(
            job_id,
            body.task_id,
            body.worker,
            record.name,
            max_attempts=self.settings.max_attempts,
            run_timeout_s=job_timeout_s(job.spec.get("duration")),
        )
        return {"status": outcome.status, "attempts": outcome.attempts}

    def _check_result(self, job: JobView, result: TranscodeResultBody) -> None:
        """RequestInvalid unless ``result`` is the whole of what ``job`` asked for: one stored
        rendition per profile, in order, under its key, with pixels that add up."""
        names = _rendition_names(job)
        got = [r.name for r in result.renditions]
        if result.job_id != job.id or got != names:
            raise RequestInvalid(f"a result of {result.job_id} {got}, not {job.id} {names}")
        fmt = job.spec.get("format", "mpegts")
        # One attempt's renditions: the keys of the attempt the first rendition names.
        first = _attempt_of(job, result.renditions[0].key) if result.renditions else None
        for r in result.renditions:
            want = output_key(job.id, r.name, fmt, first) if first is not None else None
            if r.format != fmt or r.key != want:
                raise RequestInvalid(f"rendition {r.name} is not the {fmt} an attempt stored")
            if not self.res.blobs.exists(r.key):
                raise RequestInvalid(f"rendition {r.name} was never uploaded ({r.key})")
        if result.encoded_pixels != sum(r.pixels for r in result.renditions):
            raise RequestInvalid("encoded_pixels is not the sum of the renditions' pixels")

    def complete(self, record: TranscoderRecord, job_id: str, body: Completion) -> dict[str, Any]:
        job = self._unfinished(record, job_id, body)
        if job is None:
            return {"won": False}
        self._check_result(job, body.result)
        result = body.result.model_dump()
        won = self.res.jobs.complete(job_id, body.task_id, body.worker, result, body.timings)
        if won:
            self.res.announce(job.spec.get("notify"), job_id, "done", result)
            pixels = body.result.encoded_pixels
            self.roster.add_work(record.id, pixels)
            names = [r.name for r in body.result.renditions]
            engine = (body.timings or {}).get("engine", 0.0)
            metrics.segment_transcoded(names, engine, pixels)
        return {"won": won}

    def fail(self, record: TranscoderRecord, job_id: str, body: FailureBody) -> dict[str, Any]:
        job = self._unfinished(record, job_id, body)
        if job is None:
            return {"recorded": False}
        recorded = self.res.jobs.attempt_failed(
            job_id, body.task_id, body.worker, body.code, body.error, final=body.final
        )
        metrics.segment_transcode_failed(body.code)
        if body.final and recorded:
            self.res.announce(job.spec.get("notify"), job_id, "failed")
            metrics.job_failed(body.code)
        return {"recorded": recorded}

    def last_error(self, record: TranscoderRecord, job_id: str) -> dict[str, Any]:
        return {"error": self._held(record, job_id).error}

    def sign(self, record: TranscoderRecord, body: SignRequest) -> dict[str, Any]:
        job = self.res.jobs.get(body.job_id, with_attempts=True)
        # Or the reconciler put it back in the queue while this transcoder's attempt ran (a
        # heartbeat that came late): that attempt may still finish first.
        running = any(
            a.outcome == "running" and a.worker.startswith(record.name + "@")
            for a in job.attempt_log
        )
        if job.final or not (job.worker == record.name or (job.worker is None and running)):
            raise AccessDenied(f"job {body.job_id} is not running on {record.name}")
        method = body.method.upper()
        allowed = (method == "GET" and body.key == job.spec.get("input_key")) or (
            method == "PUT" and _attempt_of(job, body.key) is not None
        )
        if not allowed:
            raise AccessDenied(f"{method} {body.key} is not part of job {body.job_id}")
        signed = self.signer.sign(method, body.key, record.id)
        return {"url": signed.path, "expires": signed.expires}

    def check_url(self, method: str, key: str, t: str, e: int, s: str) -> None:
        self.signer.check(method, key, t, e, s)
        record = self.roster.get(t)
        if record is None or record.state != "active":
            raise CredentialRevoked(f"transcoder {t} is no longer attached")

    def router(self) -> APIRouter:
        """The routes, bound to this instance."""
        r = APIRouter()
        Auth = Annotated[TranscoderRecord, Depends(self.authenticated)]

        @r.post("/transcoders/register")
        def register(request: Request, body: Registration) -> dict[str, Any]:
            """Attach a transcoder with the orchSecret."""
            return self.register(request, body)

        @r.post("/transcoders/heartbeat")
        def heartbeat(record: Auth, load: Annotated[int, Body(embed=True)] = 0) -> dict[str, Any]:
            """A transcoder's heartbeat with its load."""
            return self.heartbeat(record, load)

        @r.post("/transcoders/jobs/{job_id}/claim")
        def claim(record: Auth, job_id: JobPath, body: Claim) -> dict[str, Any]:
            """Claim a job for an attempt."""
            return self.claim(record, job_id, body)

        @r.post("/transcoders/jobs/{job_id}/complete")
        def complete(record: Auth, job_id: JobPath, body: Completion) -> dict[str, Any]:
            """Record a job's result (the first to finish wins)."""
            return self.complete(record, job_id, body)

        @r.post("/transcoders/jobs/{job_id}/fail")
        def fail(record: Auth, job_id: JobPath, body: FailureBody) -> dict[str, Any]:
            """Record a failed attempt."""
            return self.fail(record, job_id, body)

        @r.get("/transcoders/jobs/{job_id}/last-error")
        def last_error(record: Auth, job_id: JobPath) -> dict[str, Any]:
            """The last error recorded on a job."""
            return self.last_error(record, job_id)

        @r.post("/transcoders/sign")
        def sign(record: Auth, body: SignRequest) -> dict[str, Any]:
            """A short-lived URL for a job's input (GET) or a rendition (PUT)."""
            return self.sign(record, body)

        Sig = Annotated[str, Query()]

        @r.get(BLOB_PREFIX + "{key:path}")
        def get_blob(key: str, t: Sig, e: Annotated[int, Query()], s: Sig) -> Response:
            """A blob, through a signed URL."""
            self.check_url("GET", key, t, e, s)
            data = self.res.blobs.get(key)
            return Response(data, media_type="application/octet-stream")

        @r.put(BLOB_PREFIX + "{key:path}")
        async def put_blob(
            request: Request, key: str, t: Sig, e: Annotated[int, Query()], s: Sig
        ) -> dict[str, Any]:
            """Store a rendition, through a signed URL."""
            await run_in_threadpool(self.check_url, "PUT", key, t, e, s)
            data = await read_capped(request, self.settings.max_blob_bytes, PayloadTooLarge)
            await run_in_threadpool(self.res.blobs.put, key, data)
            return {"bytes": len(data)}

        return r

    def install(self, api: FastAPI) -> None:
        api.include_router(self.router())


def _rendition_names(job: JobView) -> list[str]:
    """The renditions a transcode job asks for, in ladder order."""
    profiles = job.spec.get("profiles")
    if job.kind != "transcode" or not profiles:
        return []
    return [p.name for p in profiles_from_json(profiles)]


def _attempt_of(job: JobView, key: str) -> int | None:
    """The attempt whose rendition ``key`` is (one of the job's attempts so far), or None
    when it is no rendition key of this job."""
    fmt = str(job.spec.get("format", "mpegts"))
    names = _rendition_names(job)
    prefix = f"jobs/{job.id}/out/"
    attempt, _, _ = key.removeprefix(prefix).partition("/")
    digits = attempt.isascii() and attempt.isdigit()
    if not key.startswith(prefix) or not digits or attempt != str(int(attempt)):
        return None
    n = int(attempt)
    if not 1 <= n <= job.attempts:
        return None
    return n if any(key == output_key(job.id, name, fmt, n) for name in names) else None


def _peer(request: Request) -> str:
    return request.client.host if request.client else "?"

"""Running one segment on the pool: pick, submit, wait, and retry elsewhere on failure.

A stream stays with the orchestrator that served its last segment while that one is usable
(the orchestrator keeps its encoder state and, on the Livepeer network, its session and
balance); it moves on only when an attempt there fails, or the orchestrator is suspended,
unhealthy or over the price cap.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from celery.exceptions import CeleryError
from kombu.exceptions import KombuError
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from farm.client import JobFailedError, JobResult, JobTimeout, RenditionRef
from farm.errors import FarmError, PermanentError, error_class
from farm.media.profiles import VideoProfile
from farm.timeouts import MIN_TIMEOUT_S, segment_timeout
from gateway import metrics
from gateway.errors import NoOrchestrators, TranscodeFailed
from gateway.livepeer import LivepeerOrchestrator
from gateway.pool import Orchestrator, Pool
from gateway.pricing import charge
from gateway.sessions import SessionLog

__all__ = ["Dispatcher", "SegmentOutcome", "is_permanent", "public_message"]

log = logging.getLogger(__name__)

_INFRA_ERRORS = (OSError, RedisError, KombuError, CeleryError, SQLAlchemyError)
_JOB_ID = re.compile(r"[0-9a-f]{32}")
#: Streams whose orchestrator is remembered (the oldest are forgotten first).
_STICKY_STREAMS = 10_000


def is_permanent(e: BaseException) -> bool:
    """Whether an attempt failed on the caller's input, so that no other orchestrator can fix
    it (go-livepeer's non-retryable errors): never retried elsewhere, never a reason to
    suspend. The farm refused the input before a job ran, or a failed job's code names a
    :class:`~farm.errors.PermanentError`."""
    return isinstance(e, PermanentError) or (
        isinstance(e, FarmError) and issubclass(error_class(e.code), PermanentError)
    )


def public_message(e: BaseException) -> str:
    """What a caller (and the session log it can read) is told about a failed attempt: the
    job's own error without the farm's job id, and nothing of the gateway's infrastructure
    (addresses, hosts) for any other failure; the operator's log has the whole of it."""
    if isinstance(e, JobFailedError):
        message = e.job.error or e.code
    elif isinstance(e, JobTimeout):
        message = "the orchestrator did not finish in time"
    elif isinstance(e, FarmError) and not isinstance(e, _INFRA_ERRORS):
        message = str(e)
    else:
        message = f"the orchestrator could not be reached ({e.__class__.__name__})"
    # Farm job ids (and blob keys made of them) are uuid4 hex.
    return _JOB_ID.sub("<job>", message)


@dataclass(frozen=True, slots=True)
class SegmentOutcome:
    """A transcoded segment: where it ran, its renditions and what it cost."""

    orchestrator: str
    result: JobResult
    renditions: list[tuple[RenditionRef, bytes]]
    pixels: int
    cost: int
    attempts: int


class Dispatcher:
    """Tries a segment on the best orchestrators in turn, within a count and a deadline."""

    def __init__(
        self,
        pool: Pool,
        log_: SessionLog,
        max_attempts: int = 3,
        attempt_floor_s: float = MIN_TIMEOUT_S,
    ) -> None:
        self.pool = pool
        self.log = log_
        self.max_attempts = max_attempts
        self.attempt_floor_s = attempt_floor_s
        #: stream (session id) -> the orchestrator that served its last segment.
        self._sticky: OrderedDict[str, str] = OrderedDict()
        self._sticky_lock = threading.Lock()

    def orchestrator_of(self, session_id: str) -> str | None:
        """The orchestrator a stream stays with, if any."""
        with self._sticky_lock:
            return self._sticky.get(session_id)

    def _stick(self, session_id: str, name: str) -> str | None:
        """Remember ``name`` for the stream; the orchestrator it leaves, if another."""
        with self._sticky_lock:
            previous = self._sticky.pop(session_id, None)
            self._sticky[session_id] = name
            while len(self._sticky) > _STICKY_STREAMS:
                self._sticky.popitem(last=False)
        return previous if previous != name else None

    def _leave(self, session_id: str, name: str | None) -> None:
        """End the stream's network session at an orchestrator it no longer uses."""
        o = self.pool.by_name(name) if name else None
        if o is not None and o.livepeer is not None:
            o.livepeer.end(session_id)

    def attempt_timeout(self, duration_s: float, multiplier: float = 1.0) -> float:
        """One attempt's budget: go-livepeer's segment timeout (farm.timeouts) with the
        configured floor, times the stream's ``timeoutMultiplier`` when that is over 1."""
        return segment_timeout(duration_s, multiplier, self.attempt_floor_s)

    def max_price(self) -> tuple[int, int]:
        """The highest price among usable orchestrators (what a reservation must cover)."""
        usable = self.pool.candidates() or self.pool.orchestrators
        if not usable:
            raise NoOrchestrators("no orchestrators are configured").with_retry_after(
                self.pool.probe_interval_s
            )
        best = max(usable, key=lambda o: o.config.price_per_unit / o.config.pixels_per_unit)
        return best.config.price_per_unit, best.config.pixels_per_unit

    def run(
        self,
        session_id: str,
        seq: int,
        data: bytes,
        profiles: Sequence[VideoProfile],
        duration_s: float,
        fmt: str = "mpegts",
        timeout_multiplier: float = 1.0,
    ) -> SegmentOutcome:
        # Each attempt has its own timeout, and the segment a deadline of all of them: a
        # slow orchestrator is replaced, and the caller is never kept waiting without bound.
        per_attempt = self.attempt_timeout(duration_s, timeout_multiplier)
        deadline = time.monotonic() + self.max_attempts * per_attempt
        last_error = "no healthy orchestrator"
        attempt = 0
        prefer = self.orchestrator_of(session_id)
        for o in self.pool.walk(self.max_attempts, deadline, prefer=prefer):
            attempt += 1
            if attempt > 1:
                metrics.orchestrator_swap(last_error)
            started = time.monotonic()
            try:
                outcome = self.try_on(
                    o,
                    data,
                    profiles,
                    duration_s,
                    fmt,
                    min(deadline, started + per_attempt),
                    attempt,
                    stream=session_id,
                    seq=seq,
                )
            except (FarmError, *_INFRA_ERRORS) as e:
                code = str(getattr(e, "code", None) or e.__class__.__name__)
                if is_permanent(e):
                    # The caller's input: the orchestrator did its job and is not suspended.
                    message = public_message(e)
                    self._log_failure(session_id, seq, attempt, o, started, code, message, e)
                    self.pool.record(o, True, time.monotonic() - started, duration_s)
                    raise TranscodeFailed(message) from e
                last_error = f"{o.name}: {code}"
                self._log_failure(session_id, seq, attempt, o, started, code, public_message(e), e)
                self.pool.record(o, False, time.monotonic() - started, duration_s)
                self.pool.suspend(o, f"{last_error}: {e}")
                self._leave(session_id, o.name)
                continue
            self._leave(session_id, self._stick(session_id, o.name))
            latency = time.monotonic() - started
            self.pool.record(o, True, latency, duration_s)
            self.log.attempt(
                session_id,
                seq,
                attempt,
                o.name,
                latency,
                "done",
                price=(o.config.price_per_unit, o.config.pixels_per_unit),
                pixels=outcome.pixels,
                cost=outcome.cost,
            )
            return outcome
        raise NoOrchestrators(
            f"no orchestrator transcoded the segment after {attempt} attempt(s); last: {last_error}"
        ).with_retry_after(self.pool.retry_after())

    def try_on(
        self,
        o: Orchestrator,
        data: bytes,
        profiles: Sequence[VideoProfile],
        duration_s: float,
        fmt: str,
        deadline: float,
        attempt: int,
        *,
        stream: str | None = None,
        seq: int = 0,
    ) -> SegmentOutcome:
        """One attempt on ``o``; ``stream`` (the session id) keeps a network orchestrator's
        session across a stream's segments (none: a session of its own, ended at once)."""
        if o.livepeer is not None:
            if stream is not None:
                return _network(
                    o, o.livepeer, stream, seq, data, profiles, duration_s, fmt, deadline, attempt
                )
            once = f"once:{uuid.uuid4().hex}"
            try:
                return _network(
                    o, o.livepeer, once, seq, data, profiles, duration_s, fmt, deadline, attempt
                )
            finally:
                o.livepeer.end(once)
        client = o.client
        job = client.submit(data, profiles, fmt=fmt, duration=duration_s)
        result = client.wait(job, timeout=max(0.1, deadline - time.monotonic()))
        renditions = [(r, client.rendition_bytes(r)) for r in result.renditions]
        pixels = result.encoded_pixels
        cost = charge(pixels, o.config.price_per_unit, o.config.pixels_per_unit)
        return SegmentOutcome(o.name, result, renditions, pixels, cost, attempt)

    def _log_failure(
        self,
        session_id: str,
        seq: int,
        attempt: int,
        o: Orchestrator,
        started: float,
        code: str,
        error: str,
        cause: BaseException,
    ) -> None:
        log.info(
            "segment %s/%s attempt %s on %s failed: %s", session_id, seq, attempt, o.name, cause
        )
        self.log.attempt(
            session_id,
            seq,
            attempt,
            o.name,
            time.monotonic() - started,
            "failed",
            price=(o.config.price_per_unit, o.config.pixels_per_unit),
            error_code=code,
            error=error[:2000],
        )


def _network(
    o: Orchestrator,
    client: LivepeerOrchestrator,
    stream: str,
    seq: int,
    data: bytes,
    profiles: Sequence[VideoProfile],
    duration_s: float,
    fmt: str,
    deadline: float,
    attempt: int,
) -> SegmentOutcome:
    """A segment on a network orchestrator, in the shape the farm's jobs come back in. The
    caller is charged at the gateway's own price for it; the orchestrator is paid in tickets."""
    started = time.monotonic()
    done = client.transcode(stream, seq, data, profiles, duration_s, fmt, deadline)
    refs = tuple(
        RenditionRef(
            name=r.name,
            key=r.url,
            format=r.format,
            width=r.width,
            height=r.height,
            frames=r.frames,
            pixels=r.pixels,
            bytes=len(r.data),
            duration=duration_s,
            start=0.0,
            encoder="",
        )
        for r in done.renditions
    )
    result = JobResult(
        job_id=f"{done.session_id}/{seq}",
        renditions=refs,
        encoded_pixels=done.pixels,
        decoded_pixels=0,
        worker=o.name,
        timings={"total": time.monotonic() - started},
        raw={"tickets": done.tickets, "price": str(done.price)},
    )
    cost = charge(done.pixels, o.config.price_per_unit, o.config.pixels_per_unit)
    renditions = [(ref, r.data) for ref, r in zip(refs, done.renditions, strict=True)]
    return SegmentOutcome(o.name, result, renditions, done.pixels, cost, attempt)

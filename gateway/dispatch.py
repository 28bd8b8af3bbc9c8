"""Running one segment on the pool: pick, submit, wait, and retry elsewhere on failure.

A stream stays with the orchestrator that served its last segment while that one is usable
(the orchestrator keeps its encoder state and, on the Livepeer network, its session and
balance); it moves on only when an attempt there fails, or the orchestrator is suspended,
unhealthy or over the price cap. The tries themselves, and what a failure means, are the one
retry loop's (gateway.attempts); this module says how one try of a :class:`Segment` runs.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from farm.client import MIN_TIMEOUT_S, JobResult, RenditionRef, segment_timeout
from farm.media.profiles import VideoProfile
from gateway.attempts import Work, attempt, is_permanent, public_message
from gateway.errors import NoOrchestrators, TranscodeFailed
from gateway.livepeer import LivepeerOrchestrator
from gateway.pool import Pool, PoolEntry
from gateway.pricing import Price, attempt_price, charge, highest_price
from gateway.sessions import SessionLog

__all__ = ["Dispatcher", "Segment", "SegmentOutcome", "is_permanent", "public_message"]

log = logging.getLogger(__name__)

#: Streams whose orchestrator is remembered (the oldest are forgotten first).
_STICKY_STREAMS = 10_000


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment of a stream to transcode, as it travels from ingest to an orchestrator."""

    #: The stream (its session in the session log, and on a network orchestrator).
    session_id: str
    seq: int
    data: bytes
    profiles: Sequence[VideoProfile]
    duration_s: float
    fmt: str = "mpegts"
    #: The stream's ``timeoutMultiplier`` (stretches each attempt's timeout when over 1).
    timeout_multiplier: float = 1.0
    #: Only a farm cluster can take it (farm.media.segmenter's ``SourceSegment.engine_only``:
    #: a codec Livepeer orchestrators do not decode, a display matrix kept, a primer).
    engine_only: bool = False
    #: Seconds before which its pictures only prime the decoder (``SourceSegment.show_from``).
    show_from: float | None = None

    def takes(self, o: PoolEntry) -> bool:
        """Whether ``o`` can transcode this segment."""
        return not self.engine_only or o.config.kind == "cluster"


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
        sessions: SessionLog,
        max_attempts: int = 3,
        attempt_floor_s: float = MIN_TIMEOUT_S,
    ) -> None:
        self.pool = pool
        self.sessions = sessions
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

    def max_price(self) -> Price:
        """The highest price among usable orchestrators (what a reservation must cover)."""
        usable = self.pool.candidates() or self.pool.orchestrators
        if not usable:
            raise NoOrchestrators("no orchestrators are configured").with_retry_after(
                self.pool.probe_interval_s
            )
        return highest_price(usable)

    def run(self, segment: Segment) -> SegmentOutcome:
        """The segment transcoded where its stream is, or else on the best orchestrator."""
        # Each attempt has its own timeout, and the segment a deadline of all of them: a
        # slow orchestrator is replaced, and the caller is never kept waiting without bound.
        per_attempt = self.attempt_timeout(segment.duration_s, segment.timeout_multiplier)
        deadline = time.monotonic() + self.max_attempts * per_attempt
        stream = segment.session_id

        def once(o: PoolEntry, number: int) -> SegmentOutcome:
            return self.try_on(o, segment, min(deadline, time.monotonic() + per_attempt), number)

        work = Work(
            run=once,
            refused=TranscodeFailed,
            label=f"segment {stream}/{segment.seq}",
            session_id=stream,
            seq=segment.seq,
            price=attempt_price,
            billed=lambda outcome: (outcome.pixels, outcome.cost),
            duration_s=segment.duration_s,
            prefer=self.orchestrator_of(stream),
            suspended=lambda o: self._leave(stream, o.name),
            tier=(lambda o: 0 if segment.takes(o) else None) if segment.engine_only else None,
        )
        done = attempt(
            self.pool, self.sessions, work, max_tries=self.max_attempts, deadline=deadline
        )
        self._leave(stream, self._stick(stream, done.orchestrator.name))
        return done.value

    def try_on(
        self,
        o: PoolEntry,
        segment: Segment,
        deadline: float,
        attempt: int,
        *,
        keep_session: bool = True,
    ) -> SegmentOutcome:
        """One attempt on ``o``; ``keep_session`` keeps a network orchestrator's session
        across the stream's segments (False: a session of its own, ended at once)."""
        if not segment.takes(o):
            raise TranscodeFailed(f"segment {segment.seq} can only be transcoded by a farm cluster")
        if o.livepeer is not None:
            if keep_session:
                return _network(o, o.livepeer, segment.session_id, segment, deadline, attempt)
            once = f"once:{uuid.uuid4().hex}"
            try:
                return _network(o, o.livepeer, once, segment, deadline, attempt)
            finally:
                o.livepeer.end(once)
        client = o.client
        # A cluster keeps a stream's encoders open between its segments where it can.
        job = client.submit(
            segment.data,
            segment.profiles,
            fmt=segment.fmt,
            duration=segment.duration_s,
            stream=segment.session_id if keep_session else None,
            show_from=segment.show_from,
        )
        result = client.wait(job, timeout=max(0.1, deadline - time.monotonic()))
        renditions = [(r, client.rendition_bytes(r)) for r in result.renditions]
        pixels = result.encoded_pixels
        cost = charge(pixels, *attempt_price(o))
        return SegmentOutcome(o.name, result, renditions, pixels, cost, attempt)


def _network(
    o: PoolEntry,
    client: LivepeerOrchestrator,
    stream: str,
    segment: Segment,
    deadline: float,
    attempt: int,
) -> SegmentOutcome:
    """A segment on a network orchestrator, in the shape the farm's jobs come back in. The
    caller is charged at the gateway's own price for it; the orchestrator is paid in tickets."""
    started = time.monotonic()
    seq, duration_s = segment.seq, segment.duration_s
    done = client.transcode(
        stream, seq, segment.data, segment.profiles, duration_s, segment.fmt, deadline
    )
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
    cost = charge(done.pixels, *attempt_price(o))
    renditions = [(ref, r.data) for ref, r in zip(refs, done.renditions, strict=True)]
    return SegmentOutcome(o.name, result, renditions, done.pixels, cost, attempt)

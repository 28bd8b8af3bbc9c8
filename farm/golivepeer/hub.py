"""Attached go-livepeer transcoders and the tasks pushed to them.

The gRPC streams live on the node API's event loop; the bridge's Celery worker threads call
:meth:`Hub.run`, which picks the least loaded transcoder, queues a ``NotifySegment`` on its
stream and blocks until ``/transcodeResults`` delivers the outcome, the transcoder goes away,
or go-livepeer's per-task timeout passes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import redis

from farm.errors import ProfileInvalid, RetryableError, TranscodeTimeout
from farm.golivepeer import net_pb2
from farm.golivepeer.records import TranscoderRecords, host_of
from farm.golivepeer.wire import capability_words, job_capabilities, seg_data_profiles
from farm.media.profiles import VideoProfile

__all__ = [
    "Attached",
    "Hub",
    "NoTranscoder",
    "Outcome",
    "Part",
    "TranscoderFailed",
    "TranscoderLost",
]

log = logging.getLogger(__name__)
#: How long a task waits for a free transcoder before it goes back to the queue.
SLOT_WAIT_S = 2.0


class TranscoderLost(RetryableError):
    """Raised when a go-livepeer transcoder disconnects with a task in flight."""

    code = "transcoder_lost"


class TranscoderFailed(RetryableError):
    """Raised when a go-livepeer transcoder reports a transcoding error for a task."""

    code = "transcoder_error"


class NoTranscoder(RetryableError):
    """Raised when no attached go-livepeer transcoder can take a task now."""

    code = "no_transcoder"


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a ``/transcodeResults`` body."""

    content_type: str
    data: bytes
    pixels: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a transcoder posted for a task: renditions and decoded pixels, or an error."""

    parts: tuple[Part, ...] = ()
    decoded_pixels: int = 0
    error: str | None = None


@dataclass(eq=False)
class Attached:
    """One registered transcoder and its gRPC stream's outbox."""

    name: str
    address: str
    base_url: str
    capacity: int
    capabilities: frozenset[int]
    loop: asyncio.AbstractEventLoop
    outbox: asyncio.Queue[net_pb2.NotifySegment | None]
    connected_at: float = field(default_factory=time.time)
    load: int = 0
    done: int = 0
    #: Encoded pixels of its verified renditions (go-livepeer operators are paid by these).
    pixels: int = 0

    def push(self, message: net_pb2.NotifySegment | None) -> None:
        """Queue a message on the stream (None ends it); safe from any thread."""
        try:
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, message)
        except RuntimeError:  # the event loop is closed: the node is stopping
            log.debug("stream of %s already closed", self.name)

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name,
            "address": self.address,
            "host": host_of(self.address),
            "capacity": self.capacity,
            "load": self.load,
            "done": self.done,
            "pixels": self.pixels,
            "capabilities": sorted(self.capabilities),
            "connected_at": self.connected_at,
        }


@dataclass(eq=False)
class _Task:
    task_id: int
    transcoder: Attached
    segment: bytes
    token: str
    outcome: Future[Outcome] = field(default_factory=Future)


class Hub:
    """The registry of attached transcoders and their tasks in flight; thread-safe."""

    def __init__(
        self,
        on_change: Callable[[int], None] | None = None,
        records: TranscoderRecords | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._attached: dict[str, Attached] = {}
        self._tasks: dict[int, _Task] = {}
        self._by_token: dict[str, _Task] = {}
        self._task_ids = itertools.count(1)
        #: Called with the new total capacity after a transcoder attaches or leaves.
        self.on_change = on_change
        #: Where verified pixels are totalled per host, beyond this process.
        self.records = records

    def attach(
        self,
        address: str,
        base_url: str,
        capacity: int,
        capabilities: frozenset[int],
        loop: asyncio.AbstractEventLoop,
    ) -> Attached:
        """Record a transcoder that registered; its stream's outbox starts empty."""
        with self._lock:
            t = Attached(
                name=self._new_name(),
                address=address,
                base_url=base_url,
                capacity=capacity,
                capabilities=capabilities,
                loop=loop,
                outbox=asyncio.Queue(),
            )
            self._attached[t.name] = t
            self._freed.notify_all()
        log.info(
            "go-livepeer transcoder %s attached from %s (capacity %d)", t.name, address, capacity
        )
        self._changed()
        return t

    def _new_name(self) -> str:
        # Random, so that names stay apart across nodes and restarts of a node.
        while (name := f"golivepeer-{secrets.token_hex(3)}") in self._attached:
            pass
        return name

    def drop_hosts(self, hosts: Collection[str], reason: str) -> list[str]:
        """Detach every transcoder connected from one of ``hosts``; the names dropped."""
        with self._lock:
            gone = [t for t in self._attached.values() if host_of(t.address) in hosts]
        for t in gone:
            self.detach(t, reason)
        return [t.name for t in gone]

    def detach(self, t: Attached, reason: str = "disconnected") -> None:
        """Forget a transcoder; its tasks in flight fail with TranscoderLost and go back."""
        with self._lock:
            if self._attached.pop(t.name, None) is None:
                return
            lost = [task for task in self._tasks.values() if task.transcoder is t]
        for task in lost:
            if not task.outcome.done():
                task.outcome.set_exception(
                    TranscoderLost(f"go-livepeer transcoder {t.name} {reason} mid-task")
                )
        t.push(None)
        log.info("go-livepeer transcoder %s %s (%d task(s) lost)", t.name, reason, len(lost))
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.capacity())

    def capacity(self) -> int:
        with self._lock:
            return sum(t.capacity for t in self._attached.values())

    def load(self) -> int:
        with self._lock:
            return sum(t.load for t in self._attached.values())

    def transcoders(self) -> list[dict[str, object]]:
        with self._lock:
            return [t.summary() for t in self._attached.values()]

    def _pick(self, needs: set[int]) -> Attached | None:
        fits = [
            t for t in self._attached.values() if t.load < t.capacity and needs <= t.capabilities
        ]
        return min(fits, key=lambda t: (t.load / t.capacity, t.load), default=None)

    def run(
        self,
        segment: bytes,
        profiles: Sequence[VideoProfile],
        fmt: str,
        duration: float,
        timeout: float,
        session: str,
        input_codec: str | None = None,
    ) -> tuple[Attached, Outcome]:
        """Push one segment to a transcoder and wait for its results (blocking).

        Only a transcoder whose capabilities cover the job's (its encoders, format and
        ``input_codec``'s decoder) gets it. Raises NoTranscoder when none is free within a
        moment or none attached has those capabilities, TranscoderLost when it goes away,
        TranscodeTimeout (after dropping it, as go-livepeer does) when it takes longer than
        ``timeout``, and TranscoderFailed when it reports an error.
        """
        try:
            needs = job_capabilities(profiles, fmt, input_codec)
        except ProfileInvalid as e:
            raise NoTranscoder(f"no go-livepeer transcoder can take this job: {e}") from e
        deadline = time.monotonic() + SLOT_WAIT_S
        with self._lock:
            t = self._pick(needs)
            while t is None:
                left = deadline - time.monotonic()
                attached = self._attached.values()
                if attached and not any(needs <= a.capabilities for a in attached):
                    raise NoTranscoder(
                        "no attached go-livepeer transcoder has the capabilities "
                        f"{sorted(needs)} of {', '.join(p.name for p in profiles)}"
                    )
                if left <= 0 or not attached:
                    raise NoTranscoder(
                        f"no free go-livepeer transcoder for {', '.join(p.name for p in profiles)}"
                    )
                self._freed.wait(left)
                t = self._pick(needs)
            t.load += 1
            task = _Task(next(self._task_ids), t, segment, secrets.token_urlsafe(24))
            self._tasks[task.task_id] = task
            self._by_token[task.token] = task
        try:
            t.push(self._notify(task, profiles, fmt, duration, session, needs))
            try:
                outcome = task.outcome.result(timeout)
            except FutureTimeout:
                self.detach(t, "timed out")
                raise TranscodeTimeout(
                    f"Remote transcoder took too long: {t.name} sent nothing in {timeout:g} s"
                ) from None
        finally:
            with self._lock:
                self._tasks.pop(task.task_id, None)
                self._by_token.pop(task.token, None)
                t.load -= 1
                t.done += 1
                self._freed.notify_all()
            t.push(_end_session(session))
        if outcome.error is not None:
            raise TranscoderFailed(f"go-livepeer transcoder {t.name}: {outcome.error}")
        return t, outcome

    def _notify(
        self,
        task: _Task,
        profiles: Sequence[VideoProfile],
        fmt: str,
        duration: float,
        session: str,
        needs: set[int],
    ) -> net_pb2.NotifySegment:
        seg = net_pb2.SegData(
            manifestId=session.encode(),
            duration=round(duration * 1000),
            capabilities=net_pb2.Capabilities(bitstring=capability_words(needs)),
            auth_token=net_pb2.AuthToken(
                token=secrets.token_bytes(16), session_id=session, expiration=int(time.time()) + 600
            ),
            profiles=b"invalid",
        )
        seg_data_profiles(seg, profiles, fmt)
        return net_pb2.NotifySegment(
            url=f"{task.transcoder.base_url}/golivepeer/segments/{task.token}",
            segData=seg,
            taskId=task.task_id,
            profiles=b"invalid",
        )

    def credit(self, t: Attached, pixels: int) -> None:
        """Count the encoded pixels of a task whose renditions passed verification."""
        with self._lock:
            t.pixels += pixels
        if self.records is not None:
            try:
                self.records.credit(host_of(t.address), pixels)
            except redis.RedisError as e:  # the job is done either way; the total is late
                log.warning("could not total %d pixels for %s: %s", pixels, t.name, e)

    def segment(self, token: str) -> bytes | None:
        """The input of a task in flight, by the unguessable token in its URL."""
        with self._lock:
            task = self._by_token.get(token)
            return task.segment if task is not None else None

    def deliver(self, task_id: int, outcome: Outcome) -> bool:
        """Hand a task its results; False when no such task is waiting."""
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None:
            return False
        try:
            task.outcome.set_result(outcome)
        except InvalidStateError:  # delivered twice at once, or lost or timed out meanwhile
            return False
        return True

    def close(self) -> None:
        """Drop every transcoder (the node is stopping)."""
        with self._lock:
            attached = list(self._attached.values())
        for t in attached:
            self.detach(t, "released at shutdown")


def _end_session(session: str) -> net_pb2.NotifySegment:
    """go-livepeer's teardown signal: no URL, the session id in the auth token."""
    return net_pb2.NotifySegment(
        segData=net_pb2.SegData(auth_token=net_pb2.AuthToken(session_id=session))
    )

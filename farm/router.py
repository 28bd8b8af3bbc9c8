"""Routing a job to the queue that can serve it, from the live capability registry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from farm.errors import NoCapacity
from farm.queues import stream_queue, transcode_queue
from farm.registry import Capabilities

__all__ = ["Need", "Route", "route_stream", "route_transcode"]


@dataclass(frozen=True, slots=True)
class Need:
    """What a transcode job needs: a codec and how many renditions it encodes at once."""

    codec: str
    renditions: int
    #: "any" (GPU when possible), "gpu" (NVENC only) or "cpu".
    device: str = "any"

    def __str__(self) -> str:
        where = {"any": "", "gpu": " on NVENC", "cpu": " on CPU"}[self.device]
        return f"{self.codec} transcode of {self.renditions} rendition(s){where}"


@dataclass(frozen=True, slots=True)
class Route:
    """The queue chosen and the live workers that consume it."""

    queue: str
    gpu: bool
    workers: tuple[str, ...]


def _gpu_fits(w: Capabilities, need: Need) -> bool:
    if need.codec not in w.gpu_codecs:
        return False
    # Consumer NVENC session limits count encode sessions, one per rendition.
    return w.free_encoder_sessions is None or w.free_encoder_sessions >= need.renditions


def route_transcode(need: Need, live: Sequence[Capabilities]) -> Route:
    """The GPU queue when a live NVENC worker can take the job, else the CPU queue."""
    if need.device in ("any", "gpu"):
        queue = transcode_queue(need.codec, gpu=True)
        gpu_workers = tuple(w.worker for w in live if queue in w.queues and _gpu_fits(w, need))
        if gpu_workers:
            return Route(queue, True, gpu_workers)
        if need.device == "gpu":
            raise NoCapacity(f"no capacity for {need}: no live GPU worker with a free NVENC")
    queue = transcode_queue(need.codec, gpu=False)
    cpu_workers = tuple(w.worker for w in live if queue in w.queues)
    if cpu_workers:
        return Route(queue, False, cpu_workers)
    alive = f"{len(live)} live worker(s)" if live else "no live workers"
    raise NoCapacity(f"no capacity for {need}: {alive} serve it")


def route_stream(need: Need, live: Sequence[Capabilities], pinned: str | None) -> Route:
    """A stream's next segment: the own queue of ``pinned``, the worker that keeps the
    stream's encoders, while it is live, consumes its own queue and serves the queue the
    segment would be routed to; else the capability queue, as any job. Its load is not
    weighed: the heartbeat that says it is busy is often the one from the stream's previous
    segment, and a live stream sends its segments one after another.

    A segment whose message waits in the own queue of a worker that died is republished to
    the capability queue by the reconciler (farm.reconcile)."""
    route = route_transcode(need, live)
    if pinned is None or pinned not in route.workers:
        return route
    worker = next(w for w in live if w.worker == pinned)
    own = stream_queue(pinned)
    if own not in worker.queues:
        return route
    return Route(own, route.gpu, (pinned,))

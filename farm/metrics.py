"""The farm's Prometheus metrics, with go-livepeer's names where the concept is shared.

Domain code calls the named functions here and never imports prometheus_client. With
``PROMETHEUS_MULTIPROC_DIR`` set (prefork workers), values are shared through that directory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "CONTENT_TYPE_LATEST",
    "job_failed",
    "job_republished",
    "render",
    "segment_transcode_failed",
    "segment_transcoded",
    "segment_verified",
    "set_cluster_state",
    "verification_failed",
]

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)

SEGMENT_TRANSCODED = Counter(
    "livepeer_segment_transcoded_total", "Segments transcoded", ["profiles"]
)
SEGMENT_FAILED = Counter(
    "livepeer_segment_transcode_failed_total",
    "Segment transcode attempts that failed",
    ["error_code"],
)
TRANSCODE_TIME = Histogram(
    "livepeer_transcode_time_seconds", "Engine time per segment", buckets=_LATENCY_BUCKETS
)
PIXELS = Counter("livepeer_mil_pixels_processed", "Encoded pixels, in millions")
JOBS_FAILED = Counter("farm_jobs_failed_total", "Jobs failed for good", ["error_code"])
JOBS_REPUBLISHED = Counter("farm_jobs_republished_total", "Overdue jobs the reconciler republished")
WORKERS = Gauge("farm_workers_live", "Live workers in the capability registry", ["kind"])
CAPACITY = Gauge("farm_capacity_total", "Concurrent jobs the live workers can take")
LOAD = Gauge("farm_load_total", "Jobs the live workers are running")
QUEUE_DEPTH = Gauge("farm_queue_depth", "Messages waiting per queue", ["queue"])
JOB_STATES = Gauge("farm_jobs", "Jobs in the job table by state", ["state"])
VERIFY_FAILED = Counter(
    "farm_verification_failed_total", "Renditions that failed verification", ["reason"]
)
VERIFY_TIME = Histogram(
    "farm_verification_seconds",
    "Time to verify a segment's renditions",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)


def segment_transcoded(profiles: Sequence[str], seconds: float, pixels: int) -> None:
    SEGMENT_TRANSCODED.labels(profiles=",".join(profiles)).inc()
    TRANSCODE_TIME.observe(seconds)
    PIXELS.inc(pixels / 1e6)


def segment_transcode_failed(code: str) -> None:
    SEGMENT_FAILED.labels(error_code=code).inc()


def verification_failed(reason: str) -> None:
    VERIFY_FAILED.labels(reason=reason).inc()


def segment_verified(seconds: float) -> None:
    VERIFY_TIME.observe(seconds)


def job_failed(code: str) -> None:
    JOBS_FAILED.labels(error_code=code).inc()


def job_republished() -> None:
    JOBS_REPUBLISHED.inc()


def set_cluster_state(
    workers: dict[str, int], capacity: int, load: int, queues: dict[str, int], jobs: dict[str, int]
) -> None:
    for kind, n in workers.items():
        WORKERS.labels(kind=kind).set(n)
    CAPACITY.set(capacity)
    LOAD.set(load)
    for queue, depth in queues.items():
        QUEUE_DEPTH.labels(queue=queue).set(depth)
    for state, n in jobs.items():
        JOB_STATES.labels(state=state).set(n)


def render() -> bytes:
    """The exposition text, merged across processes in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()

"""The gateway's Prometheus metrics, with go-livepeer's names (node.md section 5)."""

from __future__ import annotations

import threading
from collections import deque

from prometheus_client import Counter, Gauge, Histogram

from farm import metrics as farm_metrics

__all__ = ["orchestrator_swap", "segment_done", "segment_emerged", "session_started"]

SOURCE_APPEARED = Counter(
    "livepeer_segment_source_appeared_total", "Segments received by the gateway", ["seg_type"]
)
EMERGED = Counter("livepeer_segment_source_emerged_total", "Segments accepted for transcoding")
TRANSCODED = Counter(
    "livepeer_segment_transcoded_all_appeared_total",
    "Segments whose renditions all came back",
    ["orchestrator_uri"],
)
# One process may hold both the farm's and the gateway's metrics: share the counter.
FAILED = farm_metrics.SEGMENT_FAILED
SWAPS = Counter(
    "livepeer_orchestrator_swaps", "Retries of a segment on another orchestrator", ["reason"]
)
SUCCESS_RATE = Gauge("livepeer_success_rate", "Transcoded over emerged, last 30 segments")
LATENCY = Histogram(
    "livepeer_transcode_overall_latency_seconds",
    "Segment received to renditions returned",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
)
SESSIONS = Gauge("livepeer_current_sessions_total", "Streams seen in the last minute")

_window: deque[bool] = deque(maxlen=30)
_lock = threading.Lock()


def segment_emerged(seg_type: str) -> None:
    SOURCE_APPEARED.labels(seg_type=seg_type).inc()
    EMERGED.inc()


def segment_done(ok: bool, seconds: float, orchestrator: str = "", error_code: str = "") -> None:
    if ok:
        TRANSCODED.labels(orchestrator_uri=orchestrator).inc()
        LATENCY.observe(seconds)
    else:
        FAILED.labels(error_code=error_code).inc()
    with _lock:
        _window.append(ok)
        SUCCESS_RATE.set(sum(_window) / len(_window))


def orchestrator_swap(reason: str) -> None:
    SWAPS.labels(reason=reason.split(":", 2)[1].strip() if reason.count(":") >= 1 else reason).inc()


def session_started(active: int) -> None:
    SESSIONS.set(active)

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
SUCCESS_RATE = Gauge(
    "livepeer_success_rate",
    "Transcoded over emerged, last 30 segments",
    multiprocess_mode="livemostrecent",
)
LATENCY = Histogram(
    "livepeer_transcode_overall_latency_seconds",
    "Segment received to renditions returned",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
)
SESSIONS = Gauge(
    "livepeer_current_sessions_total",
    "Streams seen in the last minute",
    multiprocess_mode="livemostrecent",
)

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


DISAGREED = Counter(
    "farm_gateway_verification_disagreements_total",
    "Cross-checked segments where an orchestrator disagreed with the majority",
    ["orchestrator"],
)


def verification_disagreement(orchestrator: str) -> None:
    DISAGREED.labels(orchestrator=orchestrator).inc()


def session_started(active: int) -> None:
    SESSIONS.set(active)


# --- Gateway payments (go-livepeer's names, node.md section 5) ---
# Nothing records these yet: the ticket payment path of the chain issue feeds them through
# the functions below, so the dashboard and the alert rules can name them today. Gauges that
# only go up: go-livepeer's names have no ``_total`` suffix, which a Counter would add.
TICKET_VALUE_SENT = Gauge(
    "livepeer_ticket_value_sent",
    "Expected value of tickets sent (gwei)",
    ["recipient"],
    multiprocess_mode="sum",
)
TICKETS_SENT = Gauge(
    "livepeer_tickets_sent", "Tickets sent", ["recipient"], multiprocess_mode="sum"
)
PAYMENT_CREATE_ERRORS = Gauge(
    "livepeer_payment_create_errors",
    "Payments the gateway could not create",
    ["error_code"],
    multiprocess_mode="sum",
)
DEPOSIT = Gauge(
    "livepeer_gateway_deposit", "Sender deposit on the TicketBroker (gwei)", multiprocess_mode="max"
)
RESERVE = Gauge(
    "livepeer_gateway_reserve", "Sender reserve on the TicketBroker (gwei)", multiprocess_mode="max"
)


def tickets_sent(recipient: str, count: int, value_gwei: float) -> None:
    """Tickets were attached to a segment for ``recipient`` (chain package)."""
    TICKETS_SENT.labels(recipient=recipient).inc(count)
    TICKET_VALUE_SENT.labels(recipient=recipient).inc(value_gwei)


def payment_create_failed(code: str) -> None:
    """A payment could not be created (chain package)."""
    PAYMENT_CREATE_ERRORS.labels(error_code=code).inc()


def set_sender_funds(deposit_gwei: float, reserve_gwei: float) -> None:
    """The sender's deposit and reserve as last read from the chain (chain package)."""
    DEPOSIT.set(deposit_gwei)
    RESERVE.set(reserve_gwei)


__all__ += ["payment_create_failed", "set_sender_funds", "tickets_sent"]


# --- AI requests (go-livepeer's ai_* names) ---
AI_MODELS_REQUESTED = Gauge(
    "livepeer_ai_models_requested",
    "AI requests received, by pipeline and model",
    ["pipeline", "model_name"],
    multiprocess_mode="sum",
)
# One process may hold both the farm's and the gateway's metrics: share the counter.
AI_REQUEST_ERRORS = farm_metrics.AI_ERRORS
AI_REQUEST_PRICE = Gauge(
    "livepeer_ai_request_price",
    "Price per unit of the last AI request, by pipeline",
    ["pipeline", "model_name"],
    multiprocess_mode="livemostrecent",
)
AI_LATENCY = Histogram(
    "livepeer_ai_request_latency_seconds",
    "AI request received to response",
    ["pipeline"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)


def ai_requested(pipeline: str, model: str, price_per_unit: float) -> None:
    """An AI request was accepted and priced."""
    AI_MODELS_REQUESTED.labels(pipeline=pipeline, model_name=model).inc()
    AI_REQUEST_PRICE.labels(pipeline=pipeline, model_name=model).set(price_per_unit)


def ai_done(pipeline: str, model: str, seconds: float, error_code: str = "") -> None:
    """An AI request finished (``error_code`` empty when it succeeded)."""
    if error_code:
        AI_REQUEST_ERRORS.labels(error_code=error_code, pipeline=pipeline, model_name=model).inc()
    else:
        AI_LATENCY.labels(pipeline=pipeline).observe(seconds)


__all__ += ["ai_done", "ai_requested"]

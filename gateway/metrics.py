"""The gateway's Prometheus metrics, with go-livepeer's names (node.md section 5).

They live in this module's own :data:`REGISTRY`, which the gateway's ``/metrics`` serves
alone: a gateway started beside a node (``farm up``) never repeats the node's metrics, so an
alert on a shared name fires once. The gateway is one process; its values are its own.
"""

from __future__ import annotations

import threading
from collections import deque

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from farm.runtime import ReceivedPayments
from gateway.errors import status_of

__all__ = [
    "CONTENT_TYPE_LATEST",
    "REGISTRY",
    "orchestrator_swap",
    "render",
    "segment_done",
    "segment_emerged",
    "set_current_sessions",
]

# No ``*_created`` series: go-livepeer has none, and they would be names of our own.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)

SOURCE_APPEARED = Counter(
    "livepeer_segment_source_appeared_total",
    "Segments received by the gateway",
    ["seg_type"],
    registry=REGISTRY,
)
EMERGED = Counter(
    "livepeer_segment_source_emerged_total", "Segments accepted for transcoding", registry=REGISTRY
)
TRANSCODED = Counter(
    "livepeer_segment_transcoded_all_appeared_total",
    "Segments whose renditions all came back",
    ["orchestrator_uri"],
    registry=REGISTRY,
)
FAILED = Counter(
    "livepeer_segment_transcode_failed_total",
    "Segments that failed (input_invalid: the client's input, outside the success rate)",
    ["error_code"],
    registry=REGISTRY,
)
# go-livepeer's name has no ``_total``, which a Counter would add: a gauge that only goes up.
SWAPS = Gauge(
    "livepeer_orchestrator_swaps",
    "Retries of a segment on another orchestrator",
    ["reason"],
    multiprocess_mode="sum",
    registry=REGISTRY,
)
SUCCESS_RATE = Gauge(
    "livepeer_success_rate",
    "Transcoded over emerged, last 30 segments (the client's own errors left out)",
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
LATENCY = Histogram(
    "livepeer_transcode_overall_latency_seconds",
    "Segment received to renditions returned",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
    registry=REGISTRY,
)
SESSIONS = Gauge(
    "livepeer_current_sessions_total",
    "Streams with a segment in the last minute",
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)

#: Codes of bad media, counted as go-livepeer's ``input_invalid``.
_INPUT_CODES = frozenset(
    {"transcode_failed", "input_invalid", "input_corrupt", "unsupported_codec"}
)

_window: deque[bool] = deque(maxlen=30)
_lock = threading.Lock()


def segment_emerged(seg_type: str) -> None:
    SOURCE_APPEARED.labels(seg_type=seg_type).inc()
    EMERGED.inc()


def segment_done(ok: bool, seconds: float, orchestrator: str = "", error_code: str = "") -> None:
    """A segment finished. A failure that is the client's (answered with a 4xx status: bad
    input, a refusal before any work; bad media counts as ``input_invalid``) is counted but
    leaves the success rate alone."""
    if ok:
        TRANSCODED.labels(orchestrator_uri=orchestrator).inc()
        LATENCY.observe(seconds)
    else:
        code = "input_invalid" if error_code in _INPUT_CODES else error_code
        FAILED.labels(error_code=code).inc()
        if status_of(error_code) < 500:
            return
    with _lock:
        _window.append(ok)
        SUCCESS_RATE.set(sum(_window) / len(_window))


def orchestrator_swap(reason: str) -> None:
    SWAPS.labels(reason=reason.split(":", 2)[1].strip() if reason.count(":") >= 1 else reason).inc()


DISAGREED = Counter(
    "farm_gateway_verification_disagreements_total",
    "Cross-checked segments where an orchestrator disagreed with the majority",
    ["orchestrator"],
    registry=REGISTRY,
)


def verification_disagreement(orchestrator: str) -> None:
    DISAGREED.labels(orchestrator=orchestrator).inc()


def set_current_sessions(active: int) -> None:
    """Streams the gateway has taken a segment of lately (set at scrape time)."""
    SESSIONS.set(active)


def render() -> bytes:
    """The exposition text of the gateway's metrics."""
    return generate_latest(REGISTRY)


# --- Gateway payments (go-livepeer's names, node.md section 5) ---
# Nothing records the sending side yet: the ticket payment path feeds it through the functions
# below, so the dashboard and the alert rules can name them today. Gauges that only go up:
# go-livepeer's names have no ``_total`` suffix, which a Counter would add.
TICKET_VALUE_SENT = Gauge(
    "livepeer_ticket_value_sent",
    "Expected value of tickets sent (gwei)",
    ["recipient"],
    multiprocess_mode="sum",
    registry=REGISTRY,
)
TICKETS_SENT = Gauge(
    "livepeer_tickets_sent",
    "Tickets sent",
    ["recipient"],
    multiprocess_mode="sum",
    registry=REGISTRY,
)
PAYMENT_CREATE_ERRORS = Gauge(
    "livepeer_payment_create_errors",
    "Payments the gateway could not create",
    ["error_code"],
    multiprocess_mode="sum",
    registry=REGISTRY,
)
DEPOSIT = Gauge(
    "livepeer_gateway_deposit",
    "Sender deposit on the TicketBroker (gwei)",
    multiprocess_mode="max",
    registry=REGISTRY,
)
RESERVE = Gauge(
    "livepeer_gateway_reserve",
    "Sender reserve on the TicketBroker (gwei)",
    multiprocess_mode="max",
    registry=REGISTRY,
)
# The tickets callers pay the gateway with (``Livepeer-Payment``), go-livepeer's O-side names.
_RECEIVED = ReceivedPayments(REGISTRY)
ticket_received = _RECEIVED.ticket_received
payment_refused = _RECEIVED.payment_refused
winning_ticket_received = _RECEIVED.winning_ticket_received


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


__all__ += [
    "payment_create_failed",
    "payment_refused",
    "set_sender_funds",
    "ticket_received",
    "tickets_sent",
    "winning_ticket_received",
]


# --- AI requests (go-livepeer's ai_* names) ---
AI_MODELS_REQUESTED = Gauge(
    "livepeer_ai_models_requested",
    "AI requests received, by pipeline and model",
    ["pipeline", "model_name"],
    multiprocess_mode="sum",
    registry=REGISTRY,
)
AI_REQUEST_ERRORS = Gauge(
    "livepeer_ai_request_errors",
    "AI requests that failed",
    ["pipeline", "model_name", "error_code"],
    multiprocess_mode="sum",
    registry=REGISTRY,
)
AI_REQUEST_PRICE = Gauge(
    "livepeer_ai_request_price",
    "Price per unit of the last AI request, by pipeline",
    ["pipeline", "model_name"],
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
# The farm's own measure (go-livepeer has a latency score, not this histogram): farm_ prefix.
AI_LATENCY = Histogram(
    "farm_ai_request_latency_seconds",
    "AI request received to response",
    ["pipeline"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)


def ai_requested(pipeline: str, model: str, price_per_unit: float) -> None:
    """An AI request was accepted and priced."""
    AI_MODELS_REQUESTED.labels(pipeline=pipeline, model_name=model).inc()
    AI_REQUEST_PRICE.labels(pipeline=pipeline, model_name=model).set(price_per_unit)


def ai_done(pipeline: str, model: str, seconds: float, error_code: str = "") -> None:
    """An AI request finished (``error_code`` empty when it succeeded)."""
    if error_code:
        AI_REQUEST_ERRORS.labels(pipeline=pipeline, model_name=model, error_code=error_code).inc()
    else:
        AI_LATENCY.labels(pipeline=pipeline).observe(seconds)


__all__ += ["ai_done", "ai_requested", "verification_disagreement"]

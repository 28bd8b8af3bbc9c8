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
    "ai_job_done",
    "ai_job_failed",
    "ai_job_moved",
    "ai_runner_restarted",
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
WORKERS = Gauge(
    "farm_workers_live",
    "Live workers in the capability registry",
    ["kind"],
    multiprocess_mode="livemostrecent",
)
CAPACITY = Gauge(
    "farm_capacity_total",
    "Concurrent jobs the live workers can take",
    multiprocess_mode="livemostrecent",
)
LOAD = Gauge(
    "farm_load_total", "Jobs the live workers are running", multiprocess_mode="livemostrecent"
)
QUEUE_DEPTH = Gauge(
    "farm_queue_depth", "Messages waiting per queue", ["queue"], multiprocess_mode="livemostrecent"
)
JOB_STATES = Gauge(
    "farm_jobs", "Jobs in the job table by state", ["state"], multiprocess_mode="livemostrecent"
)
VERIFY_FAILED = Counter(
    "farm_verification_failed_total", "Renditions that failed verification", ["reason"]
)
VERIFY_TIME = Histogram(
    "farm_verification_seconds",
    "Verification work per segment: the busiest rendition's, in seconds (CPU seconds where it "
    "follows the rendition while it is written)",
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


# --- Operations: the transcoder pool, GPUs and payments (ops issue) ---
#
# The node API sets these at scrape time from the capability registry (farm.node.status_page).
# Only the node API and the exporter set gauges; prefork workers touch counters and histograms
# alone. Gauges still declare a multiprocess mode, so that under ``farm up`` (which shares
# ``PROMETHEUS_MULTIPROC_DIR`` between every process) each is one series, not one per pid.

TRANSCODERS_NUMBER = Gauge(
    "livepeer_transcoders_number",
    "Live transcoders (worker processes) in the registry",
    multiprocess_mode="livemostrecent",
)
TRANSCODERS_CAPACITY = Gauge(
    "livepeer_transcoders_capacity",
    "Concurrent segments the live transcoders can take",
    multiprocess_mode="livemostrecent",
)
TRANSCODERS_LOAD = Gauge(
    "livepeer_transcoders_load",
    "Segments the live transcoders are running",
    multiprocess_mode="livemostrecent",
)
_GPU_LABELS = ["worker", "gpu", "name"]
GPU_UTILIZATION = Gauge(
    "farm_gpu_utilization_percent",
    "GPU core utilisation from NVML",
    _GPU_LABELS,
    multiprocess_mode="livemostrecent",
)
GPU_ENCODER_UTILIZATION = Gauge(
    "farm_gpu_encoder_utilization_percent",
    "NVENC utilisation from NVML",
    _GPU_LABELS,
    multiprocess_mode="livemostrecent",
)
GPU_DECODER_UTILIZATION = Gauge(
    "farm_gpu_decoder_utilization_percent",
    "NVDEC utilisation from NVML",
    _GPU_LABELS,
    multiprocess_mode="livemostrecent",
)
GPU_ENCODER_SESSIONS = Gauge(
    "farm_gpu_encoder_sessions",
    "Open NVENC sessions from NVML",
    _GPU_LABELS,
    multiprocess_mode="livemostrecent",
)
GPU_ENCODER_SESSION_LIMIT = Gauge(
    "farm_gpu_encoder_session_limit",
    "NVENC sessions the card allows (consumer cards only)",
    _GPU_LABELS,
    multiprocess_mode="livemostrecent",
)
GPU_MEMORY_FREE = Gauge(
    "farm_gpu_memory_free_bytes", "Free GPU memory", _GPU_LABELS, multiprocess_mode="livemostrecent"
)
GPU_MEMORY_TOTAL = Gauge(
    "farm_gpu_memory_total_bytes", "GPU memory", _GPU_LABELS, multiprocess_mode="livemostrecent"
)
_GPU_GAUGES = {
    "utilization_gpu": GPU_UTILIZATION,
    "utilization_encoder": GPU_ENCODER_UTILIZATION,
    "utilization_decoder": GPU_DECODER_UTILIZATION,
    "encoder_sessions": GPU_ENCODER_SESSIONS,
    "encoder_session_limit": GPU_ENCODER_SESSION_LIMIT,
    "memory_free": GPU_MEMORY_FREE,
    "memory_total": GPU_MEMORY_TOTAL,
}

# Orchestrator-side payments and reward (go-livepeer's names, node.md section 5). Nothing in
# the farm records them yet: the chain package feeds them through the functions below once it
# exists, so the dashboard and the alert rules can name them today. go-livepeer exports these
# sums without a ``_total`` suffix, which prometheus_client's Counter always adds, so they are
# gauges that only go up, summed across processes in multiprocess mode.
TICKET_VALUE_RECV = Gauge(
    "livepeer_ticket_value_recv",
    "Face value times win probability of tickets received (gwei)",
    multiprocess_mode="sum",
)
TICKETS_RECV = Gauge("livepeer_tickets_recv", "Tickets received", multiprocess_mode="sum")
PAYMENT_RECV_ERRORS = Gauge(
    "livepeer_payment_recv_errors",
    "Payments refused on receipt",
    ["error_code"],
    multiprocess_mode="sum",
)
WINNING_TICKETS_RECV = Gauge(
    "livepeer_winning_tickets_recv", "Winning tickets received", multiprocess_mode="sum"
)
VALUE_REDEEMED = Gauge(
    "livepeer_value_redeemed", "Value of winning tickets redeemed (gwei)", multiprocess_mode="sum"
)
TICKET_REDEMPTION_ERRORS = Gauge(
    "livepeer_ticket_redemption_errors",
    "Winning-ticket redemptions that failed",
    multiprocess_mode="sum",
)
REWARD_CALL_ERRORS = Gauge(
    "livepeer_reward_call_errors", "Reward calls that failed", multiprocess_mode="sum"
)
REWARD_CALLS = Counter("farm_reward_calls_total", "Reward calls that succeeded")
REWARD_LAST_ROUND = Gauge(
    "farm_reward_last_round",
    "The last round this orchestrator called reward in",
    multiprocess_mode="max",
)
CURRENT_ROUND = Gauge(
    "farm_chain_current_round", "The chain's current round", multiprocess_mode="max"
)


def _drop_series(gauge: Gauge) -> None:
    # prometheus_client cannot clear labels in multiprocess mode (it warns instead).
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        gauge.clear()


def set_transcoders(number: int, capacity: int, load: int) -> None:
    """The transcoder pool as go-livepeer reports it: live workers, their capacity and load."""
    TRANSCODERS_NUMBER.set(number)
    TRANSCODERS_CAPACITY.set(capacity)
    TRANSCODERS_LOAD.set(load)


def set_gpus(gpus_by_worker: dict[str, list[dict[str, object]]]) -> None:
    """Per-GPU NVML readings from the workers' heartbeats (``GpuInfo.to_dict()`` shapes).

    Series of workers no longer live are dropped (in one process; under a shared
    multiprocess directory a dead worker's last values stay until the node API restarts).
    """
    for gauge in _GPU_GAUGES.values():
        _drop_series(gauge)
    for worker, gpus in gpus_by_worker.items():
        for gpu in gpus:
            labels = {
                "worker": worker,
                "gpu": str(gpu.get("index", "")),
                "name": str(gpu.get("name", "")),
            }
            for field_name, gauge in _GPU_GAUGES.items():
                value = gpu.get(field_name)
                if isinstance(value, int | float):
                    gauge.labels(**labels).set(value)


def ticket_received(value_gwei: float) -> None:
    """A ticket arrived with a payment (chain package)."""
    TICKETS_RECV.inc()
    TICKET_VALUE_RECV.inc(value_gwei)


def payment_refused(code: str) -> None:
    """A payment failed validation on receipt (chain package)."""
    PAYMENT_RECV_ERRORS.labels(error_code=code).inc()


def winning_ticket_received() -> None:
    """A received ticket won (chain package)."""
    WINNING_TICKETS_RECV.inc()


def value_redeemed(value_gwei: float) -> None:
    """A winning ticket was redeemed on chain (chain package)."""
    VALUE_REDEEMED.inc(value_gwei)


def ticket_redemption_failed() -> None:
    """A redemption transaction failed or reverted (chain package)."""
    TICKET_REDEMPTION_ERRORS.inc()


def reward_called(round_number: int) -> None:
    """Reward was claimed for ``round_number`` (chain package)."""
    REWARD_CALLS.inc()
    REWARD_LAST_ROUND.set(round_number)


def reward_call_failed() -> None:
    """A reward call failed (chain package)."""
    REWARD_CALL_ERRORS.inc()


def set_current_round(round_number: int) -> None:
    """The chain's current round, as the reward service last read it (chain package)."""
    CURRENT_ROUND.set(round_number)


# --- farm exporter (the livepeer_exporter role): what it read, and the gateway's pool ---
EXPORTER_UP = Gauge(
    "farm_exporter_target_up",
    "Whether the exporter's last read of a target succeeded",
    ["target"],
    multiprocess_mode="livemostrecent",
)
_ORCH = ["orchestrator", "region"]
ORCH_HEALTHY = Gauge(
    "farm_orchestrator_healthy",
    "Gateway probe says healthy",
    _ORCH,
    multiprocess_mode="livemostrecent",
)
ORCH_SUSPENDED = Gauge(
    "farm_orchestrator_suspended",
    "Suspended after a failure",
    _ORCH,
    multiprocess_mode="livemostrecent",
)
ORCH_CAPACITY = Gauge(
    "farm_orchestrator_capacity",
    "Capacity the probe saw",
    _ORCH,
    multiprocess_mode="livemostrecent",
)
ORCH_LOAD = Gauge(
    "farm_orchestrator_load", "Load the probe saw", _ORCH, multiprocess_mode="livemostrecent"
)
ORCH_SCORE = Gauge(
    "farm_orchestrator_score",
    "Selection score from the gateway",
    _ORCH,
    multiprocess_mode="livemostrecent",
)
ORCH_SUCCESS = Gauge(
    "farm_orchestrator_success_ratio", "Success EWMA", _ORCH, multiprocess_mode="livemostrecent"
)
ORCH_LATENCY = Gauge(
    "farm_orchestrator_latency_seconds", "Latency EWMA", _ORCH, multiprocess_mode="livemostrecent"
)
_ORCH_GAUGES = {
    "healthy": ORCH_HEALTHY,
    "suspended": ORCH_SUSPENDED,
    "capacity": ORCH_CAPACITY,
    "load": ORCH_LOAD,
    "score": ORCH_SCORE,
    "success": ORCH_SUCCESS,
    "latency": ORCH_LATENCY,
}


def exporter_target(target: str, up: bool) -> None:
    """Whether the exporter could read ``target`` (``node``, ``gateway``, later ``chain``)."""
    EXPORTER_UP.labels(target=target).set(1 if up else 0)


def set_orchestrators(orchestrators: Sequence[dict[str, object]]) -> None:
    """The gateway's pool as ``/admin/orchestrators`` reports it."""
    for gauge in _ORCH_GAUGES.values():
        _drop_series(gauge)
    for o in orchestrators:
        labels = {"orchestrator": str(o.get("name", "")), "region": str(o.get("region", ""))}
        for key, gauge in _ORCH_GAUGES.items():
            value = o.get(key)
            if isinstance(value, bool | int | float):
                gauge.labels(**labels).set(float(value))


__all__ += [
    "exporter_target",
    "payment_refused",
    "reward_call_failed",
    "reward_called",
    "set_current_round",
    "set_gpus",
    "set_orchestrators",
    "set_transcoders",
    "ticket_received",
    "ticket_redemption_failed",
    "value_redeemed",
    "winning_ticket_received",
]


# --- Chain state, as farm exporter reads it (the livepeer_exporter role) ---
CHAIN_STAKE = Gauge(
    "farm_chain_stake_wei",
    "LPT bonded to the orchestrator (its own stake)",
    ["orchestrator"],
    multiprocess_mode="livemostrecent",
)
CHAIN_TOTAL_STAKE = Gauge(
    "farm_chain_transcoder_total_stake_wei",
    "Total stake delegated to the orchestrator",
    ["orchestrator"],
    multiprocess_mode="livemostrecent",
)
CHAIN_FEES = Gauge(
    "farm_chain_pending_fees_wei",
    "Fees the orchestrator has not withdrawn",
    ["orchestrator"],
    multiprocess_mode="livemostrecent",
)
CHAIN_ACTIVE = Gauge(
    "farm_chain_orchestrator_active",
    "1 when the orchestrator is active",
    ["orchestrator"],
    multiprocess_mode="livemostrecent",
)
CHAIN_DEPOSIT = Gauge(
    "farm_chain_sender_deposit_wei",
    "A sender's TicketBroker deposit",
    ["sender"],
    multiprocess_mode="livemostrecent",
)
CHAIN_RESERVE = Gauge(
    "farm_chain_sender_reserve_wei",
    "A sender's TicketBroker reserve",
    ["sender"],
    multiprocess_mode="livemostrecent",
)
CHAIN_TICKETS = Gauge(
    "farm_chain_winning_tickets",
    "Winning tickets by redemption state",
    ["state"],
    multiprocess_mode="livemostrecent",
)


def set_chain_state(
    orchestrator: str,
    *,
    round_number: int,
    last_reward_round: int,
    stake: int,
    total_stake: int,
    fees: int,
    active: bool,
) -> None:
    """What the exporter read from the chain about one orchestrator."""
    CURRENT_ROUND.set(round_number)
    REWARD_LAST_ROUND.set(last_reward_round)
    CHAIN_STAKE.labels(orchestrator=orchestrator).set(stake)
    CHAIN_TOTAL_STAKE.labels(orchestrator=orchestrator).set(total_stake)
    CHAIN_FEES.labels(orchestrator=orchestrator).set(fees)
    CHAIN_ACTIVE.labels(orchestrator=orchestrator).set(1 if active else 0)


def set_sender_state(sender: str, deposit: int, reserve: int) -> None:
    CHAIN_DEPOSIT.labels(sender=sender).set(deposit)
    CHAIN_RESERVE.labels(sender=sender).set(reserve)


def set_ticket_states(counts: dict[str, int]) -> None:
    for state in ("pending", "redeemed", "failed"):
        CHAIN_TICKETS.labels(state=state).set(counts.get(state, 0))


# AI jobs: go-livepeer's ai_request_errors name, labelled as its AI metrics are.
_AI = ["pipeline", "model_name"]
AI_JOBS = Counter("farm_ai_jobs_total", "AI jobs done", _AI)
AI_JOB_TIME = Histogram(
    "farm_ai_job_seconds", "Runner time per AI job", _AI, buckets=_LATENCY_BUCKETS
)
AI_ERRORS = Counter("livepeer_ai_request_errors", "AI jobs failed for good", [*_AI, "error_code"])
AI_MOVED = Counter(
    "farm_ai_jobs_moved_total", "AI jobs handed to another worker", [*_AI, "error_code"]
)
AI_RESTARTS = Counter(
    "farm_ai_runner_restarts_total", "AI runner processes restarted after failed probes", _AI
)


def ai_job_done(pipeline: str, model: str, seconds: float) -> None:
    AI_JOBS.labels(pipeline, model).inc()
    AI_JOB_TIME.labels(pipeline, model).observe(seconds)


def ai_job_failed(pipeline: str, model: str, code: str) -> None:
    AI_ERRORS.labels(pipeline, model, code).inc()


def ai_job_moved(pipeline: str, model: str, code: str) -> None:
    AI_MOVED.labels(pipeline, model, code).inc()


def ai_runner_restarted(pipeline: str, model: str) -> None:
    AI_RESTARTS.labels(pipeline, model).inc()


# --- Remote transcoders (issue 6) ---

TRANSCODER_PIXELS = Gauge(
    "farm_transcoder_pixels",
    "Encoded pixels each attached transcoder produced (persisted; for paying its operator)",
    ["transcoder"],
    multiprocess_mode="max",
)


def set_transcoder_pixels(pixels_by_transcoder: dict[str, int]) -> None:
    """Pixels per attached transcoder, as the roster keeps them."""
    for name, pixels in pixels_by_transcoder.items():
        TRANSCODER_PIXELS.labels(transcoder=name).set(pixels)


__all__ += ["set_transcoder_pixels"]

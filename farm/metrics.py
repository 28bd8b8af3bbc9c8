"""The farm's Prometheus metrics, with go-livepeer's names where the concept is shared.

Domain code calls the named functions here and never imports prometheus_client. The metrics
live in this module's own :data:`REGISTRY`, not prometheus_client's global one, so a process
that also holds the gateway's metrics (:mod:`gateway.metrics`) serves each set at its own
``/metrics``. With ``PROMETHEUS_MULTIPROC_DIR`` set (prefork workers), counters and histograms
are shared through that directory and :func:`render` merges them.

Cluster state that the serving process reads at scrape time (workers, queues, job states,
GPUs, the gateway's pool, chain state) is not recorded per process: each set replaces the
whole family (:class:`StateGauge`), so a state, queue or worker that is gone has no series.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE_LATEST",
    "REGISTRY",
    "StateGauge",
    "ai_job_done",
    "ai_job_failed",
    "ai_job_moved",
    "ai_runner_restarted",
    "attempts_lost",
    "job_failed",
    "job_republished",
    "render",
    "segment_transcode_failed",
    "segment_transcoded",
    "segment_verified",
    "set_cluster_state",
    "stream_encoders",
    "verification_failed",
]

# No ``*_created`` series: go-livepeer has none, and they would be names of our own.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)

#: The farm's metrics (node API, workers, beat, exporter); never prometheus_client's global one.
REGISTRY = CollectorRegistry(auto_describe=True)


class StateGauge(Collector):
    """A gauge family that the process serving a scrape sets whole from what it read.

    :meth:`replace` drops every series it is not given, which a multiprocess gauge cannot do;
    it is kept in this process only, so a shared metrics directory never holds a stale copy.
    """

    _all: ClassVar[list[StateGauge]] = []

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        REGISTRY.register(self)
        StateGauge._all.append(self)

    @classmethod
    def all(cls) -> list[StateGauge]:
        """Every state family the farm declares."""
        return list(cls._all)

    def _key(self, labels: Mapping[str, object]) -> tuple[str, ...]:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, not {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.labels)

    def set(self, value: float, **labels: object) -> None:
        """One series, leaving the others as they are."""
        with self._lock:
            self._values[self._key(labels)] = float(value)

    def replace(self, series: Iterable[tuple[Mapping[str, object], float]]) -> None:
        """Exactly these series: any other this family held is dropped."""
        values = {self._key(labels): float(v) for labels, v in series}
        with self._lock:
            self._values = values

    def value(self, **labels: object) -> float | None:
        with self._lock:
            return self._values.get(self._key(labels))

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        with self._lock:
            for key, v in sorted(self._values.items()):
                family.add_metric(list(key), v)
        return [family]


SEGMENT_TRANSCODED = Counter(
    "livepeer_segment_transcoded_total", "Segments transcoded", ["profiles"], registry=REGISTRY
)
SEGMENT_FAILED = Counter(
    "livepeer_segment_transcode_failed_total",
    "Segment transcode attempts that failed (worker_lost: the worker died during it)",
    ["error_code"],
    registry=REGISTRY,
)
TRANSCODE_TIME = Histogram(
    "livepeer_transcode_time_seconds",
    "Engine time per segment",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
# go-livepeer's name has no ``_total``, which a Counter would add: a gauge that only goes up.
PIXELS = Gauge(
    "livepeer_mil_pixels_processed",
    "Encoded pixels, in millions",
    multiprocess_mode="sum",
    registry=REGISTRY,
)
JOBS_FAILED = Counter(
    "farm_jobs_failed_total", "Jobs failed for good", ["error_code"], registry=REGISTRY
)
JOBS_REPUBLISHED = Counter(
    "farm_jobs_republished_total", "Overdue jobs the reconciler republished", registry=REGISTRY
)
WORKERS = StateGauge("farm_workers_live", "Live workers in the capability registry", ["kind"])
CAPACITY = StateGauge("farm_capacity_total", "Concurrent jobs the live workers can take")
LOAD = StateGauge("farm_load_total", "Jobs the live workers are running")
QUEUE_DEPTH = StateGauge("farm_queue_depth", "Messages waiting per queue", ["queue"])
JOB_STATES = StateGauge("farm_jobs", "Jobs in the job table by state", ["state"])
#: Every state a job can be in: each is reported, 0 when no job is in it.
JOB_STATE_NAMES = ("queued", "running", "done", "failed")
VERIFY_FAILED = Counter(
    "farm_verification_failed_total",
    "Renditions that failed verification",
    ["reason"],
    registry=REGISTRY,
)
VERIFY_TIME = Histogram(
    "farm_verification_seconds",
    "Verification work per segment: the busiest rendition's, in seconds (CPU seconds where it "
    "follows the rendition while it is written)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
    registry=REGISTRY,
)
STREAM_ENCODERS = Counter(
    "farm_stream_encoders_total",
    "Renditions of stream segments by how they got their encoder: reused (kept open from the "
    "stream's previous segment), opened (to be kept), fresh (one that cannot keep state)",
    ["outcome"],
    registry=REGISTRY,
)


def segment_transcoded(profiles: Sequence[str], seconds: float, pixels: int) -> None:
    SEGMENT_TRANSCODED.labels(profiles=",".join(profiles)).inc()
    TRANSCODE_TIME.observe(seconds)
    PIXELS.inc(pixels / 1e6)


def stream_encoders(counts: dict[str, int]) -> None:
    """A stream segment's renditions, by how each got its encoder (farm.media.encoders)."""
    for outcome, n in counts.items():
        if n:
            STREAM_ENCODERS.labels(outcome=outcome).inc(n)


def segment_transcode_failed(code: str) -> None:
    SEGMENT_FAILED.labels(error_code=code).inc()


def attempts_lost(count: int) -> None:
    """``count`` attempts whose worker died before they finished (found at the next claim)."""
    if count > 0:
        SEGMENT_FAILED.labels(error_code="worker_lost").inc(count)


def verification_failed(reason: str) -> None:
    VERIFY_FAILED.labels(reason=reason).inc()


def segment_verified(seconds: float) -> None:
    VERIFY_TIME.observe(seconds)


def job_failed(code: str) -> None:
    """A job failed for good (once per job, whatever its kind)."""
    JOBS_FAILED.labels(error_code=code).inc()


def job_republished() -> None:
    JOBS_REPUBLISHED.inc()


def set_cluster_state(
    workers: dict[str, int], capacity: int, load: int, queues: dict[str, int], jobs: dict[str, int]
) -> None:
    """The cluster as the capability registry, the broker and the job table say it is now."""
    WORKERS.replace(({"kind": kind}, n) for kind, n in workers.items())
    CAPACITY.set(capacity)
    LOAD.set(load)
    QUEUE_DEPTH.replace(({"queue": queue}, depth) for queue, depth in queues.items())
    states = dict.fromkeys(JOB_STATE_NAMES, 0) | jobs
    JOB_STATES.replace(({"state": state}, n) for state, n in states.items())


def render() -> bytes:
    """The exposition text of the farm's metrics, merged across processes in multiprocess
    mode (with this process's scrape-time state)."""
    # prometheus_client chose its value store from this variable when it was imported; the
    # exposition must follow the same choice, so it reads the same variable, not a setting.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        for state in StateGauge.all():
            registry.register(state)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


# --- Operations: the transcoder pool, GPUs and payments (ops issue) ---
#
# The node API sets these at scrape time from the capability registry (farm.node.status_page).

TRANSCODERS_NUMBER = StateGauge(
    "livepeer_transcoders_number", "Live transcoders (worker processes) in the registry"
)
TRANSCODERS_CAPACITY = StateGauge(
    "livepeer_transcoders_capacity", "Concurrent segments the live transcoders can take"
)
TRANSCODERS_LOAD = StateGauge(
    "livepeer_transcoders_load", "Segments the live transcoders are running"
)
_GPU_LABELS = ["worker", "gpu", "name"]
GPU_UTILIZATION = StateGauge(
    "farm_gpu_utilization_percent", "GPU core utilisation from NVML", _GPU_LABELS
)
GPU_ENCODER_UTILIZATION = StateGauge(
    "farm_gpu_encoder_utilization_percent", "NVENC utilisation from NVML", _GPU_LABELS
)
GPU_DECODER_UTILIZATION = StateGauge(
    "farm_gpu_decoder_utilization_percent", "NVDEC utilisation from NVML", _GPU_LABELS
)
GPU_ENCODER_SESSIONS = StateGauge(
    "farm_gpu_encoder_sessions", "Open NVENC sessions from NVML", _GPU_LABELS
)
GPU_ENCODER_SESSION_LIMIT = StateGauge(
    "farm_gpu_encoder_session_limit",
    "NVENC sessions the card allows (consumer cards only)",
    _GPU_LABELS,
)
GPU_MEMORY_FREE = StateGauge("farm_gpu_memory_free_bytes", "Free GPU memory", _GPU_LABELS)
GPU_MEMORY_TOTAL = StateGauge("farm_gpu_memory_total_bytes", "GPU memory", _GPU_LABELS)
_GPU_GAUGES = {
    "utilization_gpu": GPU_UTILIZATION,
    "utilization_encoder": GPU_ENCODER_UTILIZATION,
    "utilization_decoder": GPU_DECODER_UTILIZATION,
    "encoder_sessions": GPU_ENCODER_SESSIONS,
    "encoder_session_limit": GPU_ENCODER_SESSION_LIMIT,
    "memory_free": GPU_MEMORY_FREE,
    "memory_total": GPU_MEMORY_TOTAL,
}

# Orchestrator-side redemption and reward (go-livepeer's names, node.md section 5), recorded by
# the worker consuming the chain queue. go-livepeer exports these sums without a ``_total``
# suffix, which prometheus_client's Counter always adds, so they are gauges that only go up,
# summed across processes in multiprocess mode. (The tickets a gateway receives are
# gateway.metrics'.)
VALUE_REDEEMED = Gauge(
    "livepeer_value_redeemed",
    "Value of winning tickets redeemed (gwei)",
    multiprocess_mode="sum",
    registry=REGISTRY,
)
TICKET_REDEMPTION_ERRORS = Gauge(
    "livepeer_ticket_redemption_errors",
    "Winning-ticket redemptions that failed",
    multiprocess_mode="sum",
    registry=REGISTRY,
)
REWARD_CALL_ERRORS = Gauge(
    "livepeer_reward_call_errors",
    "Reward calls that failed",
    multiprocess_mode="sum",
    registry=REGISTRY,
)
REWARD_CALLS = Counter("farm_reward_calls_total", "Reward calls that succeeded", registry=REGISTRY)
# Set by the chain worker and by the exporter: the highest value any process read.
REWARD_LAST_ROUND = Gauge(
    "farm_reward_last_round",
    "The last round this orchestrator called reward in",
    multiprocess_mode="max",
    registry=REGISTRY,
)
CURRENT_ROUND = Gauge(
    "farm_chain_current_round",
    "The chain's current round",
    multiprocess_mode="max",
    registry=REGISTRY,
)


def set_transcoders(number: int, capacity: int, load: int) -> None:
    """The transcoder pool as go-livepeer reports it: live workers, their capacity and load."""
    TRANSCODERS_NUMBER.set(number)
    TRANSCODERS_CAPACITY.set(capacity)
    TRANSCODERS_LOAD.set(load)


def set_gpus(gpus_by_worker: dict[str, list[dict[str, object]]]) -> None:
    """Per-GPU NVML readings from the live workers' heartbeats (``GpuInfo.to_dict()`` shapes):
    a worker that is gone has no series."""
    series: dict[str, list[tuple[dict[str, object], float]]] = {f: [] for f in _GPU_GAUGES}
    for worker, gpus in gpus_by_worker.items():
        for gpu in gpus:
            labels: dict[str, object] = {
                "worker": worker,
                "gpu": str(gpu.get("index", "")),
                "name": str(gpu.get("name", "")),
            }
            for field_name in _GPU_GAUGES:
                value = gpu.get(field_name)
                if isinstance(value, int | float):
                    series[field_name].append((labels, float(value)))
    for field_name, gauge in _GPU_GAUGES.items():
        gauge.replace(series[field_name])


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
EXPORTER_UP = StateGauge(
    "farm_exporter_target_up", "Whether the exporter's last read of a target succeeded", ["target"]
)
_ORCH = ["orchestrator", "region"]
ORCH_HEALTHY = StateGauge("farm_orchestrator_healthy", "Gateway probe says healthy", _ORCH)
ORCH_SUSPENDED = StateGauge("farm_orchestrator_suspended", "Suspended after a failure", _ORCH)
ORCH_CAPACITY = StateGauge("farm_orchestrator_capacity", "Capacity the probe saw", _ORCH)
ORCH_LOAD = StateGauge("farm_orchestrator_load", "Load the probe saw", _ORCH)
ORCH_SCORE = StateGauge("farm_orchestrator_score", "Selection score from the gateway", _ORCH)
ORCH_SUCCESS = StateGauge("farm_orchestrator_success_ratio", "Success EWMA", _ORCH)
ORCH_LATENCY = StateGauge("farm_orchestrator_latency_seconds", "Latency EWMA", _ORCH)
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
    EXPORTER_UP.set(1 if up else 0, target=target)


def set_orchestrators(orchestrators: Sequence[dict[str, object]]) -> None:
    """The gateway's pool as ``/admin/orchestrators`` reports it."""
    series: dict[str, list[tuple[dict[str, object], float]]] = {k: [] for k in _ORCH_GAUGES}
    for o in orchestrators:
        labels: dict[str, object] = {
            "orchestrator": str(o.get("name", "")),
            "region": str(o.get("region", "")),
        }
        for key in _ORCH_GAUGES:
            value = o.get(key)
            if isinstance(value, bool | int | float):
                series[key].append((labels, float(value)))
    for key, gauge in _ORCH_GAUGES.items():
        gauge.replace(series[key])


__all__ += [
    "exporter_target",
    "reward_call_failed",
    "reward_called",
    "set_current_round",
    "set_gpus",
    "set_orchestrators",
    "set_transcoders",
    "ticket_redemption_failed",
    "value_redeemed",
]


# --- Chain state, as farm exporter reads it (the livepeer_exporter role) ---
CHAIN_STAKE = StateGauge(
    "farm_chain_stake_wei", "LPT bonded to the orchestrator (its own stake)", ["orchestrator"]
)
CHAIN_TOTAL_STAKE = StateGauge(
    "farm_chain_transcoder_total_stake_wei",
    "Total stake delegated to the orchestrator",
    ["orchestrator"],
)
CHAIN_FEES = StateGauge(
    "farm_chain_pending_fees_wei", "Fees the orchestrator has not withdrawn", ["orchestrator"]
)
CHAIN_ACTIVE = StateGauge(
    "farm_chain_orchestrator_active", "1 when the orchestrator is active", ["orchestrator"]
)
CHAIN_DEPOSIT = StateGauge(
    "farm_chain_sender_deposit_wei", "A sender's TicketBroker deposit", ["sender"]
)
CHAIN_RESERVE = StateGauge(
    "farm_chain_sender_reserve_wei", "A sender's TicketBroker reserve", ["sender"]
)
CHAIN_TICKETS = StateGauge(
    "farm_chain_winning_tickets", "Winning tickets by redemption state", ["state"]
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
    CHAIN_STAKE.set(stake, orchestrator=orchestrator)
    CHAIN_TOTAL_STAKE.set(total_stake, orchestrator=orchestrator)
    CHAIN_FEES.set(fees, orchestrator=orchestrator)
    CHAIN_ACTIVE.set(1 if active else 0, orchestrator=orchestrator)


def set_sender_state(sender: str, deposit: int, reserve: int) -> None:
    CHAIN_DEPOSIT.set(deposit, sender=sender)
    CHAIN_RESERVE.set(reserve, sender=sender)


def set_ticket_states(counts: dict[str, int]) -> None:
    CHAIN_TICKETS.replace(
        ({"state": state}, counts.get(state, 0)) for state in ("pending", "redeemed", "failed")
    )


# AI jobs: go-livepeer's ai_request_errors name (no ``_total``: a gauge that only goes up),
# labelled as its AI metrics are.
_AI = ["pipeline", "model_name"]
AI_JOBS = Counter("farm_ai_jobs_total", "AI jobs done", _AI, registry=REGISTRY)
AI_JOB_TIME = Histogram(
    "farm_ai_job_seconds",
    "Runner time per AI job",
    _AI,
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
AI_ERRORS = Gauge(
    "livepeer_ai_request_errors",
    "AI jobs failed for good",
    [*_AI, "error_code"],
    multiprocess_mode="sum",
    registry=REGISTRY,
)
AI_MOVED = Counter(
    "farm_ai_jobs_moved_total",
    "AI jobs handed to another worker",
    [*_AI, "error_code"],
    registry=REGISTRY,
)
AI_RESTARTS = Counter(
    "farm_ai_runner_restarts_total",
    "AI runner processes restarted after failed probes",
    _AI,
    registry=REGISTRY,
)


def ai_job_done(pipeline: str, model: str, seconds: float) -> None:
    AI_JOBS.labels(pipeline, model).inc()
    AI_JOB_TIME.labels(pipeline, model).observe(seconds)


def ai_job_failed(pipeline: str, model: str, code: str) -> None:
    """An AI job failed for good: an AI request error and a failed job."""
    AI_ERRORS.labels(pipeline, model, code).inc()
    job_failed(code)


def ai_job_moved(pipeline: str, model: str, code: str) -> None:
    AI_MOVED.labels(pipeline, model, code).inc()


def ai_runner_restarted(pipeline: str, model: str) -> None:
    AI_RESTARTS.labels(pipeline, model).inc()


# --- Remote transcoders ---

TRANSCODER_PIXELS = StateGauge(
    "farm_transcoder_pixels",
    "Encoded pixels each attached transcoder produced (persisted; for paying its operator)",
    ["transcoder"],
)


def set_transcoder_pixels(pixels_by_transcoder: dict[str, int]) -> None:
    """Pixels per attached transcoder, as the roster keeps them."""
    TRANSCODER_PIXELS.replace(({"transcoder": n}, p) for n, p in pixels_by_transcoder.items())


__all__ += ["set_transcoder_pixels"]


class ReceivedPayments:
    """go-livepeer's recipient-side payment metrics on one registry: the node's (tickets on
    ``/segment``) and the gateway's (tickets its callers pay with) each have their own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._value = Gauge(
            "livepeer_ticket_value_recv",
            "Face value times win probability of tickets received (gwei)",
            multiprocess_mode="sum",
            registry=registry,
        )
        self._tickets = Gauge(
            "livepeer_tickets_recv", "Tickets received", multiprocess_mode="sum", registry=registry
        )
        self._errors = Gauge(
            "livepeer_payment_recv_errors",
            "Payments refused on receipt",
            ["error_code"],
            multiprocess_mode="sum",
            registry=registry,
        )
        self._winners = Gauge(
            "livepeer_winning_tickets_recv",
            "Winning tickets received",
            multiprocess_mode="sum",
            registry=registry,
        )

    def ticket_received(self, value_gwei: float) -> None:
        """A ticket arrived with a payment."""
        self._tickets.inc()
        self._value.inc(value_gwei)

    def payment_refused(self, code: str) -> None:
        """A payment failed validation on receipt."""
        self._errors.labels(error_code=code).inc()

    def winning_ticket_received(self) -> None:
        """A received ticket won."""
        self._winners.inc()


_RECEIVED = ReceivedPayments(REGISTRY)
ticket_received = _RECEIVED.ticket_received
payment_refused = _RECEIVED.payment_refused
winning_ticket_received = _RECEIVED.winning_ticket_received

__all__ += ["ReceivedPayments", "payment_refused", "ticket_received", "winning_ticket_received"]

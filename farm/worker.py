"""``farm worker``: a Celery worker that consumes only the queues its hardware can serve."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from farm.ai.config import AIModelConfig, load_ai_models
from farm.gpu import GpuInfo, NvmlSource, StaticGpuSource, detect_gpus, parse_gpu_selection
from farm.media.codecs import CPU_ENCODERS, GPU_DECODERS, GPU_ENCODERS, decoder_opens, encoder_opens
from farm.media.memory import keep_freed_memory
from farm.queues import (
    CHAIN_QUEUE,
    CODECS,
    CONTROL_QUEUE,
    ai_queue,
    ai_worker_queue,
    stream_queue,
    transcode_queue,
)
from farm.registry import Capabilities, Heartbeat, Registry
from farm.settings import MachineSettings, WorkerSettings

if TYPE_CHECKING:
    from farm.ai.pool import RunnerPool

__all__ = [
    "WorkerPlan",
    "machine_codecs",
    "plan_ai_worker",
    "plan_worker",
    "run_worker",
    "run_worker_group",
    "worker_argv",
]

log = logging.getLogger(__name__)
#: The longest queue name the job table records (farm.jobs.models.Job.queue).
_MAX_QUEUE_NAME = 128


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """What one worker process will consume and advertise."""

    name: str
    queues: tuple[str, ...]
    concurrency: int
    gpu: GpuInfo | None
    gpu_codecs: tuple[str, ...]
    gpu_decoders: tuple[str, ...]
    cpu_codecs: tuple[str, ...]


def _cpu_codecs(wanted: Sequence[str]) -> tuple[str, ...]:
    by_codec = {v: k for k, v in CODECS.items()}
    return tuple(c for c in wanted if c in by_codec and encoder_opens(CPU_ENCODERS[by_codec[c]]))


def _gpu_codecs(wanted: Sequence[str]) -> tuple[str, ...]:
    by_codec = {v: k for k, v in CODECS.items()}
    return tuple(
        c
        for c in wanted
        if c in by_codec
        and by_codec[c] in GPU_ENCODERS
        and encoder_opens(GPU_ENCODERS[by_codec[c]])
    )


def machine_codecs(
    codecs: Sequence[str], gpu: GpuInfo | None
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Of ``codecs``, those this machine encodes with NVENC on ``gpu`` (None: no GPU), those
    it decodes with NVDEC there, and those it encodes on the CPU."""
    nvenc = _gpu_codecs(codecs) if gpu is not None else ()
    nvdec = tuple(c for c, d in GPU_DECODERS.items() if gpu is not None and decoder_opens(d))
    return nvenc, nvdec, _cpu_codecs(codecs)


def plan_worker(settings: WorkerSettings, gpu: GpuInfo | None) -> WorkerPlan:
    """Queues for a worker on ``gpu`` (None: CPU worker).

    A GPU whose NVENC does not open (H100/H200 have none) still decodes with NVDEC but takes
    CPU-encode queues, since the queue names what the job needs: an NVENC encode or not.
    """
    nvenc, nvdec, cpu = machine_codecs(tuple(settings.codecs), gpu)
    queues: list[str] = [transcode_queue(c, gpu=True) for c in nvenc]
    if not nvenc or settings.gpu_takes_cpu_jobs:
        queues += [transcode_queue(c, gpu=False) for c in cpu]
    queues.append(CONTROL_QUEUE)
    if settings.chain_queue:
        queues.append(CHAIN_QUEUE)
    host = settings.hostname or socket.gethostname()
    name = f"gpu{gpu.index}@{host}" if gpu is not None else f"cpu@{host}"
    cores = os.cpu_count() or 1
    concurrency = settings.concurrency or (2 if gpu is not None else max(1, cores // 2))
    return WorkerPlan(
        name=name,
        queues=tuple(queues),
        concurrency=concurrency,
        gpu=gpu,
        gpu_codecs=nvenc,
        gpu_decoders=nvdec,
        cpu_codecs=cpu,
    )


def plan_ai_worker(
    settings: WorkerSettings, gpu: GpuInfo | None, models: Sequence[AIModelConfig]
) -> WorkerPlan:
    """An AI worker: the ``ai.<pipeline>`` queues of its models (and control, chain), with a
    slot per unit of model capacity. Its own per-pipeline queues are added once it is named."""
    pipelines = sorted({m.pipeline for m in models})
    queues = [ai_queue(p) for p in pipelines] + [CONTROL_QUEUE]
    if settings.chain_queue:
        queues.append(CHAIN_QUEUE)
    host = settings.hostname or socket.gethostname()
    name = f"ai{gpu.index}@{host}" if gpu is not None else f"ai@{host}"
    concurrency = settings.concurrency or sum(m.capacity for m in models)
    return WorkerPlan(name, tuple(queues), concurrency, gpu, (), (), ())


def _snapshot(
    plan: WorkerPlan,
    settings: WorkerSettings,
    source: NvmlSource | None,
    instance: str,
    pool: RunnerPool | None = None,
) -> Capabilities:
    from celery.worker import state

    gpu = plan.gpu
    if gpu is not None:
        fresh = [g for g in detect_gpus(source).gpus if g.index == gpu.index]
        gpu = fresh[0] if fresh else gpu
    return Capabilities(
        worker=instance,
        queues=list(plan.queues),
        capacity=plan.concurrency,
        region=settings.region,
        load=len(state.active_requests),
        gpu_codecs=list(plan.gpu_codecs),
        gpu_decoders=list(plan.gpu_decoders),
        cpu_codecs=list(plan.cpu_codecs),
        gpus=[gpu.to_dict()] if gpu is not None else [],
        free_encoder_sessions=gpu.free_encoder_sessions if gpu is not None else None,
        ai_models=pool.advertise() if pool is not None else [],
        pid=os.getpid(),
    )


def run_worker(
    settings: WorkerSettings,
    gpu_index: int | None,
    source: NvmlSource | None = None,
    loglevel: str = "INFO",
) -> None:
    """Run one Celery worker in this process until it is stopped."""
    from celery.signals import worker_process_shutdown, worker_ready, worker_shutdown

    from farm.context import worker_context
    from farm.worker_app import create_worker_app

    gpu = None
    if gpu_index is not None:
        found = [g for g in detect_gpus(source).gpus if g.index == gpu_index]
        gpu = found[0] if found else None
    models = load_ai_models(settings.ai_models)
    plan = plan_ai_worker(settings, gpu, models) if models else plan_worker(settings, gpu)
    instance = f"{plan.name}:{os.getpid()}"
    app = create_worker_app(settings)
    # The local worker's context: its registry name (recorded on the jobs it runs) and GPU;
    # pool processes inherit it.
    context = worker_context(app)
    context.instance, context.gpu = instance, gpu_index
    pool_kind: str = settings.pool
    ai_pool: RunnerPool | None = None
    own: tuple[str, ...] = ()
    if models:
        from farm.ai.pool import RunnerPool

        ai_pool = RunnerPool(models, settings)
        context.ai_pool = ai_pool  # the AI task finds its runners here (farm.ai.tasks)
        own = tuple(ai_worker_queue(p, instance) for p in ai_pool.pipelines)
        plan = replace(plan, queues=(*plan.queues, *own))
        # Runners, their probes and slots live in this process, so jobs run in threads here.
        pool_kind = "threads" if pool_kind == "prefork" else pool_kind
    elif settings.stream_encoders and len(stream_queue(instance)) <= _MAX_QUEUE_NAME:
        from farm.media.encoders import EncoderCache

        # Each pool process keeps its own encoders (a prefork child fills its copy); the
        # worker's own queue brings a stream's next segment back here (farm.router).
        context.encoders = EncoderCache(
            settings.stream_encoder_streams, settings.stream_encoder_idle_s
        )
        own = (stream_queue(instance),)
        plan = replace(plan, queues=(*plan.queues, *own))
    registry = Registry(settings.redis_registry_url(), settings.heartbeat_s)
    heartbeat = Heartbeat(registry, lambda: _snapshot(plan, settings, source, instance, ai_pool))
    if ai_pool is not None:
        ai_pool.on_change = heartbeat.beat_now

    @worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        if ai_pool is not None:
            ai_pool.start()
        heartbeat.start()
        log.info("worker %s consuming %s", instance, ", ".join(plan.queues))

    @worker_process_shutdown.connect(weak=False)
    def _child_shutdown(**_: Any) -> None:
        if context.encoders is not None:
            context.encoders.close()

    @worker_shutdown.connect(weak=False)
    def _shutdown(**_: Any) -> None:
        heartbeat.stop()
        if context.encoders is not None:
            context.encoders.close()
        if ai_pool is not None:
            ai_pool.close()
        _drop_queues(app, own)

    # What is loaded by now (Celery, the tasks, the engine's libraries) lives as long as the
    # worker: the collector need not walk it again at every full collection, which would
    # otherwise land inside segments (and, in pool children, unshare copied pages).
    gc.freeze()
    if ai_pool is None:
        # Each segment's encoders reuse the memory the last one's freed (farm.media.memory).
        keep_freed_memory()
    # One name everywhere: the registry's, Celery's (Flower's) and the attempt log's.
    app.worker_main(worker_argv(instance, plan.queues, plan.concurrency, pool_kind, loglevel))


def _drop_queues(app: Any, names: Sequence[str]) -> None:
    """Delete this worker's own queues when they are empty: its name dies with it, and on
    RabbitMQ they would otherwise stay forever. A job still in one is left for the reconciler."""
    if not names:
        return
    try:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for name in names:
                channel.queue_delete(name, if_empty=True)
    except Exception as e:  # shutting down: nothing depends on this
        log.warning("could not delete this worker's queues: %s", e)


def worker_argv(
    hostname: str, queues: Sequence[str], concurrency: int, pool: str, loglevel: str
) -> list[str]:
    """``celery worker`` arguments for a farm worker (local or remote transcoder)."""
    return [
        "worker",
        f"--hostname={hostname}",
        f"--queues={','.join(queues)}",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]


def gpu_source(settings: MachineSettings) -> NvmlSource | None:
    """The static inventory the settings declare, or None to ask NVML."""
    if not settings.static_gpus:
        return None
    from farm.errors import ConfigError

    try:
        gpus = [GpuInfo(**g) for g in json.loads(settings.static_gpus)]
    except (ValueError, TypeError) as e:
        raise ConfigError(f"FARM_STATIC_GPUS must be a JSON list of GPU objects: {e}") from e
    return StaticGpuSource(gpus)


def run_worker_group(
    settings: WorkerSettings, spec: str, source: NvmlSource | None = None, loglevel: str = "INFO"
) -> int:
    """``--gpus all`` or a list: one worker process pinned to each GPU; else a CPU worker."""
    source = source or gpu_source(settings)
    inventory = detect_gpus(source)
    indices = parse_gpu_selection(spec, len(inventory.gpus)) if inventory.gpus else []
    if spec not in ("all", "none", "") and not inventory.gpus:
        from farm.errors import ConfigError

        raise ConfigError(f"--gpus {spec}: no GPU found ({inventory.error or 'none listed'})")
    if len(indices) <= 1:
        run_worker(settings, indices[0] if indices else None, source, loglevel)
        return 0
    children = []
    for i in indices:
        # Each child is `farm worker` reading the same variables and config.json; what the
        # settings hold beyond them (the command line's) goes by argument or variable.
        env = dict(os.environ)
        if settings.ai_models:
            env["FARM_AI_MODELS"] = settings.ai_models
        cmd = [sys.executable, "-m", "farm.cli", "worker", "--gpus", str(i), "--loglevel", loglevel]
        if settings.concurrency:
            cmd += ["--concurrency", str(settings.concurrency)]
        if settings.chain_queue and i == indices[0]:
            cmd.append("--chain")
        children.append(subprocess.Popen(cmd, env=env))
    return _supervise(children)


def _supervise(children: list[subprocess.Popen[bytes]]) -> int:
    def stop(*_: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while all(c.poll() is None for c in children):
            time.sleep(0.5)
    finally:
        stop()
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
    return max((c.returncode or 0) for c in children)

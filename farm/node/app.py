"""Node API: health, cluster status and metrics for one orchestrator."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse

from farm import __version__, metrics
from farm.celery_app import create_app
from farm.node import status_page
from farm.queues import CONTROL_QUEUE
from farm.registry import RegistryUnavailable
from farm.resources import Resources
from farm.settings import NodeSettings

__all__ = ["create_node_app", "queue_depths"]

log = logging.getLogger(__name__)


def queue_depths(app: Celery, queues: set[str]) -> dict[str, int]:
    """Messages waiting per queue, read through the broker (Redis or AMQP)."""
    depths: dict[str, int] = {}
    with app.connection_for_write(connect_timeout=2) as conn:
        channel = conn.default_channel
        for name in sorted(queues):
            try:
                depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except Exception as e:
                log.debug("queue %s: %s", name, e)
                depths[name] = 0
                channel = conn.channel()
    return depths


def create_node_app(settings: NodeSettings | None = None) -> FastAPI:
    """The node API for the cluster ``settings`` describe."""
    settings = settings or NodeSettings()
    res = Resources(settings)
    celery_app = create_app(settings)
    api = FastAPI(title="farm node", version=__version__)

    @api.get("/healthz")
    def healthz() -> JSONResponse:
        """Liveness and dependencies: registry, job table and broker."""
        checks = {"registry": res.registry.ping(), "database": res.jobs.ping()}
        try:
            with celery_app.connection_for_write(connect_timeout=1) as conn:
                conn.connect()
                conn.default_channel  # noqa: B018 - opening the channel is the check
            checks["broker"] = True
        except Exception:
            checks["broker"] = False
        ok = all(checks.values())
        return JSONResponse({"ok": ok, "checks": checks}, status_code=200 if ok else 503)

    @api.get("/status")
    def status() -> dict[str, Any]:
        """Workers, GPUs, capabilities, queue depths, load and capacity."""
        try:
            live = res.registry.live()
        except RegistryUnavailable as e:
            live = []
            log.warning("%s", e)
        queues = {q for w in live for q in w.queues} | {CONTROL_QUEUE}
        try:
            depths = queue_depths(celery_app, queues)
        except Exception as e:
            log.warning("queue depths unavailable: %s", e)
            depths = {}
        jobs = res.jobs.counts()
        capacity = sum(w.capacity for w in live)
        load = sum(w.load for w in live)
        kinds: dict[str, int] = {"gpu": 0, "cpu": 0}
        for w in live:
            kinds["gpu" if w.gpus else "cpu"] += 1
        metrics.set_cluster_state(kinds, capacity, load, depths, jobs)
        return {
            "version": __version__,
            "region": settings.region,
            "workers": [
                {
                    "name": w.worker,
                    "kind": w.kind,
                    "region": w.region,
                    "queues": w.queues,
                    "capacity": w.capacity,
                    "load": w.load,
                    "gpus": w.gpus,
                    "gpu_codecs": w.gpu_codecs,
                    "gpu_decoders": w.gpu_decoders,
                    "cpu_codecs": w.cpu_codecs,
                    "free_encoder_sessions": w.free_encoder_sessions,
                    "ai_models": w.ai_models,
                    "seen_at": w.seen_at,
                }
                for w in live
            ],
            "capacity": capacity,
            "load": load,
            "queues": depths,
            "jobs": jobs,
            "settings": settings.public(),
        }

    status_page.install(api, status, lambda: res.jobs)

    @api.get("/metrics")
    def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE_LATEST)

    return api

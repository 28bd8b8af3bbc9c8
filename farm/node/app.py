"""Node API: health, cluster status and metrics for one orchestrator."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
from celery import Celery
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from farm import __version__, metrics
from farm.blobstore import BlobMissing
from farm.client import FarmClient
from farm.errors import (
    AccessDenied,
    CredentialRevoked,
    FarmError,
    InvalidSecret,
    PayloadTooLarge,
    RegistrationInvalid,
    RemoteUnsupported,
    RequestInvalid,
    RetryableError,
    ServiceUnavailable,
)
from farm.jobs import JobNotFound
from farm.node import chain_api, status_page
from farm.orchestrator import Orchestrator
from farm.orchestrator import ai as orchestrator_ai
from farm.orchestrator import routes as orchestrator_routes
from farm.queues import CONTROL_QUEUE
from farm.registry import RegistryUnavailable
from farm.remote.api import TranscoderApi
from farm.resources import Resources, is_unreachable
from farm.settings import NodeSettings
from farm.worker_app import create_worker_app

__all__ = ["create_node_app", "http_status", "queue_depths", "validation_message"]

log = logging.getLogger(__name__)

_STATUS: tuple[tuple[type[FarmError], int], ...] = (
    (InvalidSecret, 401),
    (CredentialRevoked, 401),
    (AccessDenied, 403),
    (RegistrationInvalid, 400),
    (RequestInvalid, 422),
    (PayloadTooLarge, 413),
    (JobNotFound, 404),
    (BlobMissing, 404),
    (RemoteUnsupported, 501),
    (RetryableError, 503),
)


#: Error codes for Starlette's own refusals.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def http_status(error: FarmError) -> int:
    """The node API's status code for a farm error (the one place they are mapped)."""
    return next((code for cls, code in _STATUS if isinstance(error, cls)), 500)


def _service(e: Exception) -> str:
    return "the database" if isinstance(e, DBAPIError) else "Redis"


def validation_message(e: RequestValidationError) -> str:
    """What is wrong with a request, field by field, without echoing the values (a NaN or an
    infinity read from the body cannot be written back as JSON)."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'][1:]) or err['loc'][0]}: {err['msg']}"
        for err in e.errors()
    )
    return problems or "invalid request"


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


def _orchestrator(settings: NodeSettings, res: Resources) -> Orchestrator | None:
    """The node's Livepeer orchestrator role, or None where it does not serve one."""
    if not settings.orchestrator:
        return None
    from farm.chainconf import chain_client

    chain = chain_client(settings.chain(), signing=False)
    if chain is not None and settings.eth_private_key is None:
        # On chain, work is paid with tickets to this node's address; without its key it can
        # neither issue params nor sign results, and must not transcode for free.
        log.warning("FARM_ETH_PRIVATE_KEY is not set: not serving as a Livepeer orchestrator")
        return None
    return Orchestrator(settings, res, FarmClient(settings), chain)


def create_node_app(settings: NodeSettings | None = None) -> FastAPI:
    """The node API for the cluster ``settings`` describe."""
    settings = settings or NodeSettings()
    res = Resources(settings)
    celery_app = create_worker_app(settings)
    transcoders = TranscoderApi(settings, res, celery_app)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        transcoders.start()
        yield
        transcoders.stop()
        if app.state.orchestrator is not None:
            app.state.orchestrator.close()

    api = FastAPI(title="farm node", version=__version__, lifespan=lifespan)

    @api.exception_handler(FarmError)
    async def farm_error(_: Request, e: FarmError) -> JSONResponse:
        return JSONResponse({"error": e.code, "message": str(e)}, status_code=http_status(e))

    @api.exception_handler(DBAPIError)
    @api.exception_handler(redis.RedisError)
    async def unreachable(request: Request, e: Exception) -> JSONResponse:
        # Where the cluster keeps its state is gone for now: 503, which transcoders retry.
        # Any other database or Redis error is a bug, answered as one.
        if not is_unreachable(e):
            raise e
        log.warning("%s unreachable: %s", _service(e), e)  # addresses stay in the log
        return await farm_error(request, ServiceUnavailable(f"{_service(e)} unreachable"))

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        # Starlette's own refusals (no such route, wrong method, a body it cannot parse) in
        # the body every other error of the node API has.
        if chain_api.is_chain_route(request):
            return chain_api.error_response(e.status_code, str(e.detail))
        code = _HTTP_CODES.get(e.status_code, "http_error")
        return JSONResponse(
            {"error": code, "message": str(e.detail)}, status_code=e.status_code, headers=e.headers
        )

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        error = RequestInvalid(validation_message(e))
        if chain_api.is_chain_route(request):
            return chain_api.error_response(http_status(error), str(error))
        return await farm_error(request, error)

    transcoders.install(api)
    api.state.celery_app = celery_app  # one Celery app per process (farm.golivepeer uses it)
    orch = _orchestrator(settings, res)
    api.state.orchestrator = orch  # its gRPC service shares the port (farm.node.serve)
    if orch is not None:
        orchestrator_routes.install(api, orch, settings.max_blob_bytes, settings.fetch_policy())
        orchestrator_ai.install(api, orch, settings.max_blob_bytes)

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
        try:
            attached = [r.public() for r in transcoders.records()]
        except Exception as e:
            attached = []
            log.warning("transcoder roster unavailable: %s", e)
        # go-livepeer transcoders attached to this process (farm.node.golivepeer.with_golivepeer).
        hub = getattr(api.state, "golivepeer_hub", None)
        golivepeer = hub.transcoders() if hub is not None else []
        pixels = {t["name"]: t["pixels"] for t in attached}
        if hub is not None and hub.records is not None:
            try:  # go-livepeer transcoders by host, totalled beyond this process's life
                totals = hub.records.totals()
                pixels.update({f"golivepeer@{h}": int(t["pixels"]) for h, t in totals.items()})
            except Exception as e:
                log.warning("go-livepeer totals unavailable: %s", e)
        metrics.set_transcoder_pixels(pixels)
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
            "transcoders": attached,
            # go-livepeer's names for the same (common/types.go).
            "golivepeer_transcoders": golivepeer,
            "RegisteredTranscodersNumber": sum(t["state"] == "active" for t in attached)
            + len(golivepeer),
            "RegisteredTranscoders": [
                {"Address": t["address"], "Capacity": t["capacity"]}
                for t in attached
                if t["state"] == "active"
            ]
            + [{"Address": t["address"], "Capacity": t["capacity"]} for t in golivepeer],
            "settings": settings.public(),
        }

    status_page.install(api, status, lambda: res.jobs)
    chain_api.install(api, settings)

    @api.get("/metrics")
    def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE_LATEST)

    return api

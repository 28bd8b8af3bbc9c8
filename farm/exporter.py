"""``farm exporter``: the livepeer_exporter role, cluster (and later chain) state for Prometheus.

On every scrape it reads a node API's ``/status`` (workers, capacity, load, queue depths, job
states, GPUs) and, when given, a gateway's ``/admin/orchestrators``, sets the farm's gauges
from them and answers with the exposition text. With ``PROMETHEUS_MULTIPROC_DIR`` set it also
serves every metric the processes sharing that directory recorded, so it doubles as the
metrics sidecar of a worker pod (ops/k8s). Chain state (stake, rewards, fees, deposit and
reserve, pending tickets) joins once the chain package exists; until then ``chain_url`` is
refused with a clear message rather than ignored.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI, Response

from farm import __version__, metrics
from farm.errors import ConfigError
from farm.node.status_page import refresh_metrics
from farm.status import Snapshot, fetch

__all__ = ["ExporterConfig", "collect", "create_exporter_app"]


@dataclass(frozen=True)
class ExporterConfig:
    """What the exporter reads."""

    node_url: str | None = None
    gateway_url: str | None = None
    admin_token: str | None = None
    chain_url: str | None = None
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.chain_url:
            raise ConfigError(
                "chain state is not exported yet: the farm has no chain client (offchain only)"
            )


def collect(config: ExporterConfig, client: httpx.Client) -> Snapshot | None:
    """Read the targets once and set the gauges; the snapshot, or None without a node URL."""
    snap: Snapshot | None = None
    if config.node_url:
        snap = fetch(config.node_url, config.gateway_url, config.admin_token, client=client)
    elif config.gateway_url:
        snap = fetch("", config.gateway_url, config.admin_token, client=client)
        snap.node_error = "no node URL"
    if snap is None:
        return None
    if config.node_url:
        metrics.exporter_target("node", snap.node is not None)
    if snap.node is not None:
        node = snap.node
        workers = node.get("workers", [])
        kinds = {"gpu": 0, "cpu": 0}
        for w in workers:
            kinds["gpu" if w.get("gpus") else "cpu"] += 1
        metrics.set_cluster_state(
            kinds,
            int(node.get("capacity", 0)),
            int(node.get("load", 0)),
            dict(node.get("queues", {})),
            dict(node.get("jobs", {})),
        )
        refresh_metrics(node)
    if config.gateway_url:
        metrics.exporter_target("gateway", snap.orchestrators is not None)
        if snap.orchestrators is not None:
            metrics.set_orchestrators(snap.orchestrators)
    return snap


def create_exporter_app(config: ExporterConfig) -> FastAPI:
    """The exporter's HTTP app: ``/metrics`` (reads the targets first) and ``/healthz``."""
    client = httpx.Client(timeout=config.timeout_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        client.close()

    api = FastAPI(title="farm exporter", version=__version__, lifespan=lifespan)
    # Scrapes may overlap; the gauges are process-wide, so read the targets one at a time.
    lock = threading.Lock()

    @api.get("/metrics")
    def scrape() -> Response:
        """Cluster state in Prometheus's text format."""
        with lock:
            collect(config, client)
            return Response(metrics.render(), media_type=metrics.CONTENT_TYPE_LATEST)

    @api.get("/healthz")
    def healthz() -> dict[str, object]:
        """The exporter answers; what it reads is in farm_exporter_target_up."""
        return {"ok": True, "node_url": config.node_url, "gateway_url": config.gateway_url}

    return api

"""``farm exporter``: the livepeer_exporter role, cluster (and later chain) state for Prometheus.

On every scrape it reads a node API's ``/status`` (workers, capacity, load, queue depths, job
states, GPUs) and, when given, a gateway's ``/admin/orchestrators``, sets the farm's gauges
from them and answers with the exposition text. With ``PROMETHEUS_MULTIPROC_DIR`` set it also
serves every metric the processes sharing that directory recorded, so it doubles as the
metrics sidecar of a worker pod (ops/k8s). With a chain configured (``eth_rpc_url`` and the
Controller's address) it also reads chain state: the round, the orchestrator's stake, last
reward round, pending fees and activity, senders' deposits and reserves, and the winning
tickets waiting in the redemption queue.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Response

from farm import __version__, metrics
from farm.chainconf import chain_client
from farm.node.status_page import refresh_metrics
from farm.remote.tls import NodeHttp
from farm.settings import ExporterSettings
from farm.status import Snapshot, fetch

__all__ = ["collect", "collect_chain", "create_exporter_app"]


def collect_chain(settings: ExporterSettings) -> bool:
    """Read chain state once and set the chain gauges; False when the node is unreachable."""
    from chain.errors import ChainError

    orchestrator = settings.exporter_orchestrator
    assert settings.eth_rpc_url and settings.eth_controller and orchestrator
    client = chain_client(settings.chain(), signing=False)
    assert client is not None  # eth_rpc_url is set
    try:
        orch = bytes.fromhex(orchestrator.removeprefix("0x"))
        bonding = client.bonding
        info = client.transcoder_info(orch)
        delegator = client.call(
            bonding.functions.getDelegator(client.w3.to_checksum_address(orchestrator))
        )
        total = client.call(
            bonding.functions.transcoderTotalStake(client.w3.to_checksum_address(orchestrator))
        )
        metrics.set_chain_state(
            orchestrator.lower(),
            round_number=client.current_round(),
            last_reward_round=info.last_reward_round,
            stake=int(delegator[0]),
            total_stake=int(total),
            fees=client.fees(orch),
            active=client.is_active_transcoder(orch),
        )
        for sender in settings.exporter_senders:
            s = client.sender_info(bytes.fromhex(sender.removeprefix("0x")))
            metrics.set_sender_state(sender.lower(), s.deposit, s.reserve)
    except ChainError:
        metrics.exporter_target("chain", False)
        return False
    if settings.ticket_queue_url:
        from sqlalchemy import create_engine

        from chain.queue import TicketQueue

        engine = create_engine(settings.ticket_queue_url)
        try:
            queue = TicketQueue(engine)
            queue.create_schema()
            metrics.set_ticket_states(queue.counts())
        finally:
            engine.dispose()
    metrics.exporter_target("chain", True)
    return True


def collect(
    settings: ExporterSettings, client: httpx.Client, node_http: NodeHttp | None = None
) -> Snapshot | None:
    """Read the targets once and set the gauges; the snapshot, or None without a node URL."""
    snap: Snapshot | None = None
    token = settings.gateway_token()
    if settings.node_url:
        snap = fetch(settings.node_url, settings.gateway_url, token, client=client, node=node_http)
    elif settings.gateway_url:
        snap = fetch("", settings.gateway_url, token, client=client)
        snap.node_error = "no node URL"
    if snap is None:
        return None
    if settings.node_url:
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
    if settings.gateway_url:
        metrics.exporter_target("gateway", snap.orchestrators is not None)
        if snap.orchestrators is not None:
            metrics.set_orchestrators(snap.orchestrators)
    return snap


def create_exporter_app(settings: ExporterSettings) -> FastAPI:
    """The exporter's HTTP app: ``/metrics`` (reads the targets first) and ``/healthz``."""
    timeout_s = settings.exporter_timeout_s
    client = httpx.Client(timeout=timeout_s)
    node = (
        NodeHttp(settings.node_url, settings.node_ca, settings.node_cert_fingerprint, timeout_s)
        if settings.node_url
        else None
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        client.close()
        if node is not None:
            node.close()

    api = FastAPI(title="farm exporter", version=__version__, lifespan=lifespan)
    # Scrapes may overlap; the gauges are process-wide, so read the targets one at a time.
    lock = threading.Lock()

    @api.get("/metrics")
    def scrape() -> Response:
        """Cluster state in Prometheus's text format."""
        with lock:
            collect(settings, client, node)
            if settings.eth_rpc_url:
                collect_chain(settings)
            return Response(metrics.render(), media_type=metrics.CONTENT_TYPE_LATEST)

    @api.get("/healthz")
    def healthz() -> dict[str, object]:
        """The exporter answers; what it reads is in farm_exporter_target_up."""
        return {"ok": True, "node_url": settings.node_url, "gateway_url": settings.gateway_url}

    return api

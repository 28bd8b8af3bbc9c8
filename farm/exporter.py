"""``farm exporter``: the livepeer_exporter role, cluster (and later chain) state for Prometheus.

On every scrape it reads a node API's ``/status`` (workers, capacity, load, queue depths, job
states, GPUs) and, when given, a gateway's ``/admin/orchestrators``, sets the farm's gauges
from them and answers with the exposition text. With ``PROMETHEUS_MULTIPROC_DIR`` set it also
serves every metric the processes sharing that directory recorded, so it doubles as the
metrics sidecar of a worker pod (ops/k8s). With a chain configured (``chain_url`` and the
Controller's address) it also reads chain state: the round, the orchestrator's stake, last
reward round, pending fees and activity, senders' deposits and reserves, and the winning
tickets waiting in the redemption queue.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI, Response

from farm import __version__, metrics
from farm.chainconf import ChainSettings, chain_client
from farm.errors import ConfigError
from farm.node.status_page import refresh_metrics
from farm.remote.tls import NodeHttp
from farm.status import Snapshot, fetch

__all__ = ["ExporterConfig", "collect", "collect_chain", "create_exporter_app"]


@dataclass(frozen=True)
class ExporterConfig:
    """What the exporter reads."""

    node_url: str | None = None
    gateway_url: str | None = None
    admin_token: str | None = None
    chain_url: str | None = None
    timeout_s: float = 5.0
    controller: str | None = None
    orchestrator: str | None = None
    senders: tuple[str, ...] = ()
    ticket_queue_url: str | None = None
    #: An https node API's certificate: its SHA-256 fingerprint, or a CA file.
    node_cert_fingerprint: str | None = None
    node_ca: str | None = None

    def chain(self) -> ChainSettings:
        """The chain read for the chain gauges (read only)."""
        return ChainSettings(
            rpc_url=self.chain_url, controller=self.controller, rpc_timeout_s=self.timeout_s
        )

    def __post_init__(self) -> None:
        if self.chain_url and not (self.controller and self.orchestrator):
            raise ConfigError(
                "chain state needs the Controller address (FARM_ETH_CONTROLLER) and the "
                "orchestrator's address (--orchestrator)"
            )


def collect_chain(config: ExporterConfig) -> bool:
    """Read chain state once and set the chain gauges; False when the node is unreachable."""
    from chain.errors import ChainError

    assert config.chain_url and config.controller and config.orchestrator
    client = chain_client(config.chain(), signing=False)
    assert client is not None  # chain_url is set
    try:
        orch = bytes.fromhex(config.orchestrator.removeprefix("0x"))
        bonding = client.bonding
        info = client.transcoder_info(orch)
        delegator = client.call(
            bonding.functions.getDelegator(client.w3.to_checksum_address(config.orchestrator))
        )
        total = client.call(
            bonding.functions.transcoderTotalStake(
                client.w3.to_checksum_address(config.orchestrator)
            )
        )
        metrics.set_chain_state(
            config.orchestrator.lower(),
            round_number=client.current_round(),
            last_reward_round=info.last_reward_round,
            stake=int(delegator[0]),
            total_stake=int(total),
            fees=client.fees(orch),
            active=client.is_active_transcoder(orch),
        )
        for sender in config.senders:
            s = client.sender_info(bytes.fromhex(sender.removeprefix("0x")))
            metrics.set_sender_state(sender.lower(), s.deposit, s.reserve)
    except ChainError:
        metrics.exporter_target("chain", False)
        return False
    if config.ticket_queue_url:
        from sqlalchemy import create_engine

        from chain.queue import TicketQueue

        engine = create_engine(config.ticket_queue_url)
        try:
            queue = TicketQueue(engine)
            queue.create_schema()
            metrics.set_ticket_states(queue.counts())
        finally:
            engine.dispose()
    metrics.exporter_target("chain", True)
    return True


def collect(
    config: ExporterConfig, client: httpx.Client, node_http: NodeHttp | None = None
) -> Snapshot | None:
    """Read the targets once and set the gauges; the snapshot, or None without a node URL."""
    snap: Snapshot | None = None
    if config.node_url:
        snap = fetch(
            config.node_url, config.gateway_url, config.admin_token, client=client, node=node_http
        )
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
    node = (
        NodeHttp(config.node_url, config.node_ca, config.node_cert_fingerprint, config.timeout_s)
        if config.node_url
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
            collect(config, client, node)
            if config.chain_url:
                collect_chain(config)
            return Response(metrics.render(), media_type=metrics.CONTENT_TYPE_LATEST)

    @api.get("/healthz")
    def healthz() -> dict[str, object]:
        """The exporter answers; what it reads is in farm_exporter_target_up."""
        return {"ok": True, "node_url": config.node_url, "gateway_url": config.gateway_url}

    return api

"""Everything one gateway process holds, built once from its settings."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial

import redis
from sqlalchemy import create_engine

from chain.schema import create_tables
from farm.blobstore import BlobStore, blob_store_from_url
from farm.client import ClusterSettings, announced_ticket_queue
from farm.errors import ConfigError
from farm.media.profiles import VideoProfile, parse_profiles
from farm.runtime import chain_client, make_engine, redact_url
from gateway.crosscheck import CrossChecker
from gateway.dispatch import Dispatcher
from gateway.ethpay import EthPayments, parse_price
from gateway.ledger import Ledger
from gateway.limits import Limiter
from gateway.livepeer import Broadcaster
from gateway.models import GatewayBase
from gateway.pool import Pool
from gateway.sessions import SessionLog
from gateway.settings import GatewaySettings, OrchestratorConfig
from gateway.webhook import AuthWebhook

log = logging.getLogger(__name__)

__all__ = ["GatewayState", "ticket_queue_url"]


@dataclass
class GatewayState:
    """The gateway's services; created by :func:`gateway.app.create_app`."""

    settings: GatewaySettings
    ledger: Ledger
    limiter: Limiter
    pool: Pool
    sessions: SessionLog
    dispatcher: Dispatcher
    blobs: BlobStore
    default_profiles: list[VideoProfile]
    webhook: AuthWebhook | None = None
    crosscheck: CrossChecker | None = None
    eth: EthPayments | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: GatewaySettings) -> GatewayState:
        engine = make_engine(settings.gateway_database_url)
        create_tables(GatewayBase.metadata, engine)
        ledger = Ledger(engine)
        sender = broadcaster(settings)
        block_number, funds = _chain_reads(settings, sender)
        pool = Pool(
            settings.orchestrators,
            settings.region,
            settings.probe_interval_s,
            settings.probe_timeout_s,
            settings.suspend_s,
            broadcaster=sender,
            max_price=(
                Fraction(settings.max_price_per_unit, settings.max_price_pixels_per_unit)
                if settings.max_price_per_unit
                else None
            ),
            block_number=block_number,
            max_ticket_ev=settings.max_ticket_ev_wei,
            funds=funds,
            session_idle_s=settings.livepeer_session_idle_s,
            discover=_discovery(settings),
            # The webhook is asked every minute (go-livepeer caches its answer that long).
            discovery_interval_s=(
                min(60.0, settings.discovery_interval_s)
                if settings.orch_webhook_url
                else settings.discovery_interval_s
            ),
            discovered=lambda name, uri: _discovered_entry(settings, name, uri),
            fetch_policy=settings.fetch_policy(),
        )
        sessions = SessionLog(engine)
        webhook = (
            AuthWebhook(
                settings.auth_webhook_url,
                settings.auth_webhook_timeout_s,
                settings.auth_webhook_cache_s,
            )
            if settings.auth_webhook_url
            else None
        )
        dispatcher = Dispatcher(
            pool, sessions, settings.max_attempts, settings.attempt_timeout_floor_s
        )
        return cls(
            settings=settings,
            ledger=ledger,
            limiter=Limiter(
                settings.gateway_redis_url,
                settings.rate_limit_per_minute,
                settings.rate_burst,
                settings.max_concurrent_jobs,
            ),
            pool=pool,
            sessions=sessions,
            dispatcher=dispatcher,
            crosscheck=CrossChecker(
                dispatcher,
                pool,
                sessions,
                settings.verification_freq,
                settings.verification_min_psnr,
            ),
            blobs=blob_store_from_url(settings.gateway_blob_url),
            default_profiles=parse_profiles(settings.default_profiles),
            webhook=webhook,
            eth=_eth_payments(settings, ledger),
        )

    def close(self) -> None:
        if self.crosscheck is not None:
            self.crosscheck.close()
        self.pool.stop()
        self.limiter.close()
        if self.eth is not None:
            self.eth.close()
        if self.webhook is not None:
            self.webhook.close()
        self.ledger.engine.dispose()


def ticket_queue_url(settings: GatewaySettings) -> str:
    """Where this gateway stores the winning tickets it receives: the queue the orchestrator's
    chain worker redeems from. Refuses (ValueError) a configuration that would strand them: no
    queue named and no single cluster to default to, or a cluster that says it redeems from
    another queue."""
    url = settings.ticket_queue_url
    clusters = [o for o in settings.orchestrators if o.kind == "cluster"]
    if url is None:
        if len(clusters) != 1:
            raise ValueError(
                "ticket payments need FARM_TICKET_QUEUE_URL: the database the orchestrator's "
                "chain worker redeems winning tickets from"
            )
        url = clusters[0].database_url
    for entry in clusters:
        try:
            announced = announced_ticket_queue(ClusterSettings(**entry.cluster_fields()))
        except (ConfigError, redis.RedisError) as e:
            log.warning("orchestrator %s: ticket queue unknown (%s)", entry.name, e)
            continue
        if announced is not None and announced != redact_url(url):
            raise ValueError(
                f"winning tickets would be stranded: this gateway keeps them in "
                f"{redact_url(url)}, but orchestrator {entry.name} redeems from "
                f"{announced}; set FARM_TICKET_QUEUE_URL to its queue"
            )
    return url


def broadcaster(settings: GatewaySettings) -> Broadcaster:
    """The gateway as a sender on the Livepeer network: its key when a chain is configured,
    else off chain (empty payments, nothing signed), as go-livepeer's gateway."""
    key = settings.eth_sender_key
    if settings.eth_rpc_url and key is not None:
        return Broadcaster(key.get_secret_value())
    return Broadcaster()


def _chain_reads(
    settings: GatewaySettings, sender: Broadcaster
) -> tuple[Callable[[], int] | None, Callable[[], tuple[int, int, bool]] | None]:
    """What paying network orchestrators reads from the chain, each at most every 2 s: the
    latest block (expired ticket params), and the sender's (deposit, reserve, unlocking)."""
    client = chain_client(settings.chain(), signing=False) if sender.on_chain else None
    if client is None:
        return None, None
    lock = threading.Lock()
    block: list[tuple[float, int]] = []
    funds: list[tuple[float, tuple[int, int, bool]]] = []

    def latest() -> int:
        with lock:
            if not block or time.monotonic() - block[0][0] > 2.0:
                block[:] = [(time.monotonic(), client.last_seen_l1_block())]
            return block[0][1]

    def deposit() -> tuple[int, int, bool]:
        with lock:
            if not funds or time.monotonic() - funds[0][0] > 2.0:
                info = client.sender_info(sender.address)
                funds[:] = [
                    (time.monotonic(), (info.deposit, info.reserve, info.withdraw_round != 0))
                ]
            return funds[0][1]

    return latest, deposit


def _discovery(settings: GatewaySettings) -> Callable[[], dict[str, str]] | None:
    """Discovery of livepeer-kind orchestrators (on chain, by webhook), when configured."""
    from gateway.livepeer.discovery import Discovery, WebhookDiscovery, discover

    chain: Callable[[], dict[str, str]] | None = None
    client = chain_client(settings.chain(), signing=False) if settings.livepeer_discovery else None
    if client is not None:
        chain = partial(discover, client, policy=settings.fetch_policy())
    webhook = WebhookDiscovery(settings.orch_webhook_url) if settings.orch_webhook_url else None
    if chain is None and webhook is None:
        return None
    return Discovery(chain, webhook, settings.discovery_interval_s)


def _discovered_entry(settings: GatewaySettings, name: str, uri: str) -> OrchestratorConfig:
    return OrchestratorConfig(
        name=name,
        kind="livepeer",
        address=uri,
        region=settings.discovery_region,
        discovered=True,
        price_per_unit=settings.discovery_price_per_unit,
        pixels_per_unit=settings.discovery_pixels_per_unit,
    )


def _eth_payments(settings: GatewaySettings, ledger: Ledger) -> EthPayments | None:
    """Ticket payments, when a chain is configured (offline otherwise, as go-livepeer's)."""
    if not settings.eth_rpc_url:
        return None
    if settings.eth_sender_key is not None and not settings.eth_recipient:
        return None  # a gateway that only pays network orchestrators, and takes no tickets
    from chain.params import RecipientConfig

    if not settings.eth_recipient:
        raise ConfigError("FARM_ETH_RPC_URL needs FARM_ETH_RECIPIENT (the ticket recipient)")
    client = chain_client(settings.chain(), signing=False)
    assert client is not None  # eth_rpc_url is set
    return EthPayments(
        client,
        ledger,
        create_engine(ticket_queue_url(settings)),
        settings.gateway_redis_url,
        recipient=bytes.fromhex(settings.eth_recipient.removeprefix("0x")),
        secret=bytes.fromhex(settings.ticket_secret.get_secret_value()),
        price_per_pixel=parse_price(settings.eth_price_per_pixel),
        config=RecipientConfig(
            ev=settings.ticket_ev_wei,
            redeem_gas=settings.redeem_gas,
            tx_cost_multiplier=settings.tx_cost_multiplier,
            max_face_value=settings.ticket_max_face_value_wei,
        ),
    )

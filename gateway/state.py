"""Everything one gateway process holds, built once from its settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis
from sqlalchemy import create_engine

from farm.blobstore import BlobStore, blob_store_from_url
from farm.errors import ConfigError
from farm.jobs import make_engine
from farm.media.profiles import VideoProfile, parse_profiles
from farm.registry import redis_py_url
from farm.settings import ClusterSettings, redact_url
from gateway.crosscheck import CrossChecker
from gateway.dispatch import Dispatcher
from gateway.ethpay import EthPayments, parse_price
from gateway.ledger import Ledger
from gateway.limits import Limiter
from gateway.models import Base
from gateway.pool import Pool
from gateway.sessions import SessionLog
from gateway.settings import GatewaySettings
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
    log: SessionLog
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
        Base.metadata.create_all(engine)
        ledger = Ledger(engine)
        pool = Pool(
            settings.orchestrators,
            settings.region,
            settings.probe_interval_s,
            settings.probe_timeout_s,
            settings.suspend_s,
        )
        log = SessionLog(engine)
        webhook = (
            AuthWebhook(
                settings.auth_webhook_url,
                settings.auth_webhook_timeout_s,
                settings.auth_webhook_cache_s,
            )
            if settings.auth_webhook_url
            else None
        )
        dispatcher = Dispatcher(pool, log, settings.max_attempts, settings.attempt_timeout_floor_s)
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
            log=log,
            dispatcher=dispatcher,
            crosscheck=CrossChecker(
                dispatcher, pool, log, settings.verification_freq, settings.verification_min_psnr
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
    from farm.chain_tasks import TICKET_QUEUE_KEY

    url = settings.ticket_queue_url
    if url is None:
        if len(settings.orchestrators) != 1:
            raise ValueError(
                "ticket payments need FARM_TICKET_QUEUE_URL: the database the orchestrator's "
                "chain worker redeems winning tickets from"
            )
        url = settings.orchestrators[0].database_url
    for entry in settings.orchestrators:
        try:
            registry = ClusterSettings(**entry.cluster_fields()).redis_registry_url()
            client = redis.Redis.from_url(redis_py_url(registry), socket_timeout=3)
            try:
                announced = client.get(TICKET_QUEUE_KEY)
            finally:
                client.close()
        except (ConfigError, redis.RedisError) as e:
            log.warning("orchestrator %s: ticket queue unknown (%s)", entry.name, e)
            continue
        if isinstance(announced, bytes):
            announced = announced.decode()
        if announced is not None and announced != redact_url(url):
            raise ValueError(
                f"winning tickets would be stranded: this gateway keeps them in "
                f"{redact_url(url)}, but orchestrator {entry.name} redeems from "
                f"{announced}; set FARM_TICKET_QUEUE_URL to its queue"
            )
    return url


def _eth_payments(settings: GatewaySettings, ledger: Ledger) -> EthPayments | None:
    """Ticket payments, when a chain is configured (offline otherwise, as go-livepeer's)."""
    if not settings.eth_rpc_url:
        return None
    from chain.client import ChainClient
    from chain.params import RecipientConfig

    if not settings.eth_controller or not settings.eth_recipient:
        raise ValueError("FARM_ETH_RPC_URL needs FARM_ETH_CONTROLLER and FARM_ETH_RECIPIENT")
    client = ChainClient(settings.eth_rpc_url, settings.eth_controller)
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

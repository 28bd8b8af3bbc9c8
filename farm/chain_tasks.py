"""Chain work on celery beat (queue ``chain``, one consumer): redemption and reward.

``chain.redeem`` sends the winning tickets whose params expired in batches; ``chain.reward``
claims the orchestrator's reward once per round. Both run every few minutes, not only on a
round event, so a restart or a failed call is made good within the round (go-livepeer misses
rounds after restarts). With no RPC configured the farm stays off-chain and neither runs.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from farm import metrics
from farm.errors import ConfigError
from farm.queues import CHAIN_QUEUE
from farm.settings import ClusterSettings

__all__ = [
    "TICKET_QUEUE_KEY",
    "announce_ticket_queue",
    "announced_ticket_queue",
    "chain_schedule",
    "register_chain_tasks",
]

#: The ticket queue this cluster redeems from (its URL, credentials redacted), in the cluster's
#: registry, where a gateway in front of the cluster checks that it writes winners there too.
TICKET_QUEUE_KEY = "farm:chain:ticket-queue"


def announce_ticket_queue(settings: ClusterSettings) -> None:
    """Say in the cluster's registry which ticket queue its redeemer reads."""
    import redis

    from farm.registry import redis_py_url
    from farm.settings import redact_url

    try:
        client = redis.Redis.from_url(redis_py_url(settings.redis_registry_url()))
        try:
            client.set(TICKET_QUEUE_KEY, redact_url(settings.ticket_queue_database()))
        finally:
            client.close()
    except (ConfigError, redis.RedisError) as e:
        log.warning("could not announce the ticket queue: %s", e)


def announced_ticket_queue(settings: ClusterSettings) -> str | None:
    """The ticket queue the cluster says its redeemer reads (redacted), None when it says
    nothing; raises ConfigError or redis.RedisError when its registry cannot be read."""
    import redis

    from farm.registry import redis_py_url

    client = redis.Redis.from_url(redis_py_url(settings.redis_registry_url()), socket_timeout=3)
    try:
        announced = client.get(TICKET_QUEUE_KEY)
    finally:
        client.close()
    if isinstance(announced, bytes):
        return announced.decode()
    return None if announced is None else str(announced)


log = logging.getLogger(__name__)


def chain_schedule(settings: ClusterSettings) -> dict[str, dict[str, Any]]:
    """Beat entries for the chain tasks (none when the farm is off-chain)."""
    if not settings.eth_rpc_url:
        return {}
    options = {"queue": CHAIN_QUEUE}
    return {
        "chain.redeem": {
            "task": "chain.redeem",
            "schedule": settings.redeem_interval_s,
            "options": {**options, "expires": settings.redeem_interval_s},
        },
        "chain.reward": {
            "task": "chain.reward",
            "schedule": settings.reward_interval_s,
            "options": {**options, "expires": settings.reward_interval_s},
        },
    }


def _service(app: Celery, settings: ClusterSettings, name: str) -> Any:
    """The worker's redeemer or reward service, built once from settings (kept in its
    context)."""
    from farm.context import worker_context

    _services = worker_context(app).chain
    if name in _services:
        return _services[name]
    from sqlalchemy import create_engine

    from chain.queue import TicketQueue
    from chain.redeem import Redeemer
    from chain.reward import RewardService
    from farm.chainconf import chain_client

    client = chain_client(settings.chain())
    if client is None:
        raise ConfigError("chain tasks need FARM_ETH_RPC_URL")
    queue = TicketQueue(create_engine(settings.ticket_queue_database()))
    queue.create_schema()
    announce_ticket_queue(settings)
    _services["redeem"] = Redeemer(client, queue)
    _services["reward"] = RewardService(client, initialize_rounds=settings.initialize_rounds)
    return _services[name]


def register_chain_tasks(app: Celery, settings: ClusterSettings) -> None:
    """Define ``chain.redeem`` and ``chain.reward`` on ``app``."""
    from chain.client import ChainUnavailable

    @app.task(
        name="chain.redeem",
        ignore_result=True,
        autoretry_for=(ChainUnavailable,),
        retry_backoff=True,
        max_retries=5,
        shared=False,
    )
    def redeem() -> dict[str, Any]:
        report = _service(app, settings, "redeem").run_once()
        if report.redeemed:
            metrics.value_redeemed(report.face_value_redeemed / 1e9)
        for _ in report.retried:
            metrics.ticket_redemption_failed()
        log.info(
            "chain.redeem: %d redeemed, %d kept, %d given up%s",
            len(report.redeemed),
            len(report.retried),
            len(report.given_up),
            f" (skipped: {report.skipped})" if report.skipped else "",
        )
        return {
            "redeemed": len(report.redeemed),
            "retried": len(report.retried),
            "given_up": len(report.given_up),
            "skipped": report.skipped,
        }

    @app.task(
        name="chain.reward",
        ignore_result=True,
        autoretry_for=(ChainUnavailable,),
        retry_backoff=True,
        max_retries=5,
        shared=False,
    )
    def reward() -> str:
        service = _service(app, settings, "reward")
        outcome: str = service.run_once()
        if outcome.startswith("failed"):
            metrics.reward_call_failed()
        elif outcome.startswith("rewarded"):
            metrics.reward_called(service.client.current_round())
        log.info("chain.reward: %s", outcome)
        return outcome

"""Winning tickets received at the gateway land in the queue the orchestrator redeems from."""

from __future__ import annotations

import json

import pytest
import redis

from farm.chain_tasks import TICKET_QUEUE_KEY, announce_ticket_queue
from farm.client import announced_ticket_queue
from farm.registry import redis_py_url
from farm.settings import ClusterSettings
from gateway.settings import GatewaySettings
from gateway.state import ticket_queue_url


def _entry(name: str, redis_url: str, database: str) -> dict[str, str]:
    return {
        "name": name,
        "node_url": "http://127.0.0.1:1",
        "broker_url": redis_url,
        "database_url": database,
        "blob_url": "file:///tmp/unused",
    }


def _settings(entries: list[dict[str, str]], **extra: str) -> GatewaySettings:
    return GatewaySettings(
        orchestrators=json.dumps(entries),  # type: ignore[arg-type]
        eth_rpc_url="http://127.0.0.1:1",
        **extra,  # type: ignore[arg-type]
    )


def test_the_one_cluster_database_is_the_default(redis_url: str) -> None:
    settings = _settings([_entry("a", redis_url, "sqlite:///a.db")])
    assert ticket_queue_url(settings) == "sqlite:///a.db"


def test_no_default_with_several_orchestrators(redis_url: str) -> None:
    entries = [_entry("a", redis_url, "sqlite:///a.db"), _entry("b", redis_url, "sqlite:///b.db")]
    with pytest.raises(ValueError, match="FARM_TICKET_QUEUE_URL"):
        ticket_queue_url(_settings(entries))
    named = _settings(entries, ticket_queue_url="sqlite:///q.db")
    assert ticket_queue_url(named) == "sqlite:///q.db"


def test_a_cluster_redeeming_elsewhere_is_refused_at_start(redis_url: str) -> None:
    cluster = ClusterSettings(
        broker_url=redis_url, database_url="sqlite:///a.db", ticket_queue_url="sqlite:///q.db"
    )
    announce_ticket_queue(cluster)
    client = redis.Redis.from_url(redis_py_url(redis_url))
    assert client.get(TICKET_QUEUE_KEY) == b"sqlite:///q.db"
    client.close()
    assert announced_ticket_queue(cluster) == "sqlite:///q.db"
    with pytest.raises(ValueError, match="stranded"):
        ticket_queue_url(_settings([_entry("a", redis_url, "sqlite:///a.db")]))
    same = _settings([_entry("a", redis_url, "sqlite:///a.db")], ticket_queue_url="sqlite:///q.db")
    assert ticket_queue_url(same) == "sqlite:///q.db"

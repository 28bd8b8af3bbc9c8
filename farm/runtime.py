"""What a service built beside the farm (the gateway) shares with the farm's own processes.

Part of the farm's public face (see :mod:`farm`). The farm keeps owning these; this module
names the ones another service may rely on, so that it builds on the same conventions
without reaching into the farm's internals:

- settings: :class:`FarmBaseSettings` (``FARM_*`` variables, config.json, refusal of weak
  secrets outside development), the :class:`EnvironmentSettings` and :class:`FetchSettings`
  fields, :data:`DEV_SECRET` and :func:`redact_url`;
- SQL: :func:`make_engine` (SQLite with WAL, bounded connects, idle pings) and :func:`utcnow`
  for timestamp columns; each service declares its own tables on its own ``Base``;
- Redis: :func:`redis_py_url` (a Celery/kombu Redis URL as redis-py takes it), and
  :func:`is_unreachable` (a database or Redis error that means "down now", not a bug);
- chain: :class:`ChainSettings` and :func:`chain_client` (the one builder of the chain
  client, with its checks);
- metrics: :class:`ReceivedPayments`, go-livepeer's recipient-side payment metrics on a
  registry of the service's own.
"""

from farm.chainconf import ChainSettings, chain_client
from farm.jobs.models import utcnow
from farm.jobs.store import make_engine
from farm.metrics import ReceivedPayments
from farm.registry import redis_py_url
from farm.resources import is_unreachable
from farm.settings import (
    DEV_SECRET,
    EnvironmentSettings,
    FarmBaseSettings,
    FetchSettings,
    redact_url,
)

__all__ = [
    "DEV_SECRET",
    "ChainSettings",
    "EnvironmentSettings",
    "FarmBaseSettings",
    "FetchSettings",
    "ReceivedPayments",
    "chain_client",
    "is_unreachable",
    "make_engine",
    "redact_url",
    "redis_py_url",
    "utcnow",
]

"""Real services for the tests: Redis, PostgreSQL, RabbitMQ.

Locally a service that is not running skips the tests that need it; with ``CI=true`` it
fails them, since CI starts every service first (.ci/run).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from chain.compile import CompileError
from chain.devchain import Anvil, DevChainError, start_anvil

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip (locally) or fail (CI) when a service is not reachable."""
    if _reachable(host, port):
        return
    message = f"{name} is not running on {host}:{port}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI must start it; see .ci/run)")
    pytest.skip(message)


def need_tool(*names: str, hint: str) -> str:
    """The path of the first of ``names`` on PATH; skip (locally) or fail (CI) without one.

    .ci/run installs these tools, so under CI their absence is a failure, not a skip.
    """
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    message = f"{names[0]} is not installed ({hint})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; .ci/run installs it")
    pytest.skip(message)


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    """A fresh anvil from npm (chain/contracts) for the module, stopped afterwards."""
    try:
        node = start_anvil()
    except (CompileError, DevChainError, OSError, subprocess.SubprocessError) as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"anvil is needed in CI (npm ci --prefix chain/contracts): {e}")
        pytest.skip(f"anvil unavailable: {e}")
    yield node
    node.stop()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database of its own for one test, flushed before and after."""
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    import redis

    # Databases 8-15 are the tests'; pick one per test process to keep xdist-style runs apart.
    # FARM_TEST_REDIS_DB pins it, for parallel runs from several checkouts.
    db = int(os.environ.get("FARM_TEST_REDIS_DB") or 8 + (os.getpid() % 8))
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    client.flushdb()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    client.flushdb()
    client.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, dropped afterwards."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    # psycopg passes libpq options; search_path puts the job tables in the test's schema.
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    engine.dispose()


@pytest.fixture
def amqp_url() -> str:
    need_service("RabbitMQ", "127.0.0.1", 5672)
    return AMQP_URL


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/farm.db"

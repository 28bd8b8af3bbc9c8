"""Two orchestrator clusters on separate brokers, and gateways in front of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa

from farm.embedded import EmbeddedRedis
from tests.conftest import PG_URL, REDIS_HOST, REDIS_PORT, need_service
from tests.farm.harness import Cluster, cluster_env, free_port, wait_for

ADMIN = "test-admin-token"


@dataclass
class Orch:
    name: str
    region: str
    cluster: Cluster
    node_url: str
    worker: subprocess.Popen[bytes]

    def config(self, price: int = 1) -> dict[str, object]:
        env = self.cluster.env
        return {
            "name": self.name,
            "region": self.region,
            "node_url": self.node_url,
            "price_per_unit": price,
            "pixels_per_unit": 1,
            "broker_url": env["FARM_BROKER_URL"],
            "database_url": env["FARM_DATABASE_URL"],
            "blob_url": env["FARM_BLOB_URL"],
        }


@dataclass
class Env:
    home: Path
    redis_dbs: list[int]
    schemas: list[str]
    orchs: list[Orch] = field(default_factory=list)
    gateways: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def pg(self, schema: str) -> str:
        return f"{PG_URL}?options=-csearch_path%3D{schema}"

    def gateway(self, expect_unhealthy: bool = False, **env: str) -> Gateway:
        """Start a gateway process in front of both orchestrators."""
        port = free_port()
        schema = self.schemas[-1]
        variables = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
        variables.update(
            {
                "FARM_GATEWAY_PORT": str(port),
                "FARM_GATEWAY_DATABASE_URL": self.pg(schema),
                "FARM_GATEWAY_REDIS_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.redis_dbs[-1]}",
                "FARM_GATEWAY_BLOB_URL": f"file://{self.home / 'gateway-blobs'}",
                "FARM_ADMIN_TOKEN": ADMIN,
                "FARM_REGION": "eu",
                "FARM_PROBE_INTERVAL_S": "0.5",
                "FARM_ORCHESTRATORS": json.dumps([o.config() for o in self.orchs]),
                "FARM_HEARTBEAT_S": "0.5",
                "PYTHONUNBUFFERED": "1",
                **env,
            }
        )
        log = self.home / f"gateway-{port}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "farm.cli", "gateway", "--port", str(port)],
                env=variables,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.gateways.append(proc)
        gw = Gateway(f"http://127.0.0.1:{port}", proc, log)

        def ready() -> bool:
            try:
                health = httpx.get(f"{gw.url}/healthz", timeout=2)
            except httpx.HTTPError:
                return False
            return health.status_code == 200 or (
                health.status_code == 503
                and not health.json()["checks"]["orchestrators"]
                and expect_unhealthy
            )

        wait_for(ready, timeout=60, what=f"the gateway (log {log})")
        return gw


@dataclass
class Gateway:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def admin(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.url}{path}",
            timeout=30,
            headers={"Authorization": f"Bearer {ADMIN}"},
            **kwargs,
        )  # type: ignore[arg-type]

    def key(self, credits: int) -> tuple[str, str]:
        r = self.admin("POST", "/admin/keys", json={"name": "test", "credits": credits})
        assert r.status_code == 200, r.text
        return r.json()["id"], r.json()["key"]

    def balance(self, key_id: str) -> int:
        keys = {k["id"]: k for k in self.admin("GET", "/admin/keys").json()}
        return int(keys[key_id]["balance"])


@contextmanager
def orchestrators(
    home: Path,
    specs: Sequence[tuple[str, str, dict[str, str]]],
    private_redis: bool = False,
    damage: Mapping[str, str] | None = None,
) -> Iterator[Env]:
    """Clusters named and placed by ``specs`` (name, region, extra worker env), each on its
    own Redis database and PostgreSQL schema, plus a database and a schema for gateways.
    ``damage`` names the clusters whose worker damages its results, and how
    (farm.media.damage.attempt_damage).

    With ``private_redis`` each cluster gets a Redis server of its own (farm.embedded), and
    only the gateways' database is taken from the shared server's test databases. A pinned
    FARM_TEST_REDIS_DB (parallel runs from several checkouts, see tests/conftest.py) implies
    it: the run then touches that one database of the shared server and no other."""
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    need_service("PostgreSQL", "127.0.0.1", 5432)
    pinned = os.environ.get("FARM_TEST_REDIS_DB")
    private_redis = private_redis or bool(pinned)
    # Of the tests' databases 8-15.
    base = int(pinned or 8 + (os.getpid() % 2) * 4)
    dbs = [base + i for i in range(1 if private_redis else len(specs) + 1)]
    for db in dbs:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db).flushdb()
    engine = sa.create_engine(PG_URL)
    schemas = [f"g_{uuid.uuid4().hex[:10]}" for _ in range(len(specs) + 1)]
    servers: list[EmbeddedRedis] = []
    with engine.begin() as conn:
        for s in schemas:
            conn.exec_driver_sql(f"CREATE SCHEMA {s}")
    e = Env(home, dbs, schemas)
    try:
        for i, (name, region, extra) in enumerate(specs):
            cluster_home = home / name
            cluster_home.mkdir()
            if private_redis:
                servers.append(EmbeddedRedis(cluster_home / "redis", persist=False))
                servers[-1].start()
                broker = servers[-1].url
            else:
                broker = f"redis://{REDIS_HOST}:{REDIS_PORT}/{dbs[i]}"
            variables = cluster_env(cluster_home, broker, e.pg(schemas[i]))
            variables.update(extra)
            cluster = Cluster(cluster_home, variables)
            worker = cluster.start_worker(damage=(damage or {}).get(name))
            port = free_port()
            cluster.spawn("node", "--port", str(port), log="node.log")
            node_url = f"http://127.0.0.1:{port}"
            wait_for(lambda u=node_url: _ok(u), timeout=30, what=f"{name}'s node API")
            e.orchs.append(Orch(name, region, cluster, node_url, worker))
        yield e
    finally:
        for g in e.gateways:
            if g.poll() is None:
                g.terminate()
        for g in e.gateways:
            try:
                g.wait(timeout=15)
            except subprocess.TimeoutExpired:
                g.kill()
        for o in e.orchs:
            o.cluster.stop()
        for server in servers:
            server.stop()
        with engine.begin() as conn:
            for s in schemas:
                conn.exec_driver_sql(f"DROP SCHEMA {s} CASCADE")
        engine.dispose()
        for db in dbs:
            redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db).flushdb()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with orchestrators(
        tmp_path_factory.mktemp("gateway"), [("orch-a", "eu", {}), ("orch-b", "us", {})]
    ) as e:
        yield e


def _ok(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def gateway(env: Env) -> Gateway:
    return env.gateway(
        FARM_ESTIMATE_MARGIN="0",
        FARM_MAX_CONCURRENT_JOBS="100",
        FARM_RATE_BURST="1000",
        FARM_RATE_LIMIT_PER_MINUTE="60000",
        FARM_MAX_UPLOAD_BYTES="2000000",
        # The tests' input server is on loopback: the operator's own storage, allowed.
        FARM_FETCH_ALLOW="127.0.0.1/32",
    )


Factory = Callable[..., Gateway]


@contextmanager
def webhook_server(decide: Callable[[str], tuple[int, bytes]]) -> Iterator[tuple[str, list[str]]]:
    """An auth webhook on loopback: (its URL, the ingest URLs it was asked about).

    ``decide`` maps a request URL to the webhook's status and body."""
    calls: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            url = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["url"]
            calls.append(url)
            status, body = decide(url)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/auth", calls
    finally:
        server.shutdown()
        server.server_close()

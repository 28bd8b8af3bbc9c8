"""Per-segment gateway overhead, ``livepeer`` kind against ``cluster`` kind, in one run.

One cluster (Redis broker, results and registry; jobs in PostgreSQL; one CPU worker) with two
doors: its plain node API (a ``cluster`` entry: the gateway publishes to its broker) and
``farm node --tls`` as a Livepeer orchestrator (a ``livepeer`` entry: GetOrchestrator,
``POST /segment``, rendition downloads, pixel verification). Two gateway processes, one per
kind, take the same 2-second 360p segments into two renditions, one at a time, alternating.

Overhead = the ingest round trip minus the engine's own time for that segment's job (read from
the cluster's job table: one segment in flight at a time, so the latest finished job is it).
Off chain: no tickets (``make bench-orchestrator`` measures what validating them adds).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis
import sqlalchemy as sa

from farm.media.synth import make_segment
from tests.bench.bench_farm import pct
from tests.farm.harness import Cluster, cluster_env, free_port, wait_for
from tests.farm.test_orchestrator import OrchestratorNode

CONFIG = json.dumps({"presets": ["P240p30fps16x9", "P144p30fps16x9"]})
_LATEST = sa.text(
    "SELECT result FROM farm_jobs WHERE result IS NOT NULL ORDER BY finished_at DESC LIMIT 1"
)


def _gateway(
    home: Path, pg: str, entry: dict[str, object], redis_db: int
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env.update(
        {
            "FARM_GATEWAY_PORT": str(port),
            "FARM_GATEWAY_DATABASE_URL": pg,
            "FARM_GATEWAY_REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}",
            "FARM_GATEWAY_BLOB_URL": f"file://{home / f'blobs-{port}'}",
            "FARM_ORCHESTRATORS": json.dumps([entry]),
            "FARM_RATE_LIMIT_PER_MINUTE": "100000000",
            "FARM_RATE_BURST": "100000",
            "FARM_ADMIN_TOKEN": "bench",
            "FARM_PROBE_INTERVAL_S": "5",
        }
    )
    with open(home / f"gateway-{port}.log", "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "farm.cli", "gateway", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=60, what=f"the {entry['kind']} gateway")
    return proc, url


def _key(url: str) -> str:
    r = httpx.post(
        f"{url}/admin/keys",
        json={"name": "bench", "credits": 10**15},
        headers={"Authorization": "Bearer bench"},
    )
    r.raise_for_status()
    return str(r.json()["key"])


def _segment(url: str, key: str, stream: str, seq: int, data: bytes) -> float:
    t = time.perf_counter()
    r = httpx.post(
        f"{url}/live/{stream}/{seq}.ts",
        content=data,
        headers={
            "Content-Duration": "2000",
            "Livepeer-Transcode-Configuration": CONFIG,
            "Authorization": f"Bearer {key}",
            "Accept": "multipart/mixed",
        },
        timeout=120,
    )
    total = time.perf_counter() - t
    if r.status_code != 200:
        raise RuntimeError(f"{url}: {r.status_code} {r.text}")
    return total


def paths(segments: int, database: str) -> dict[str, list[float]]:
    """Overhead samples (seconds) per kind."""
    broker_db, gateway_db = 5, 4
    for db in (broker_db, gateway_db):
        redis.Redis(db=db).flushdb()
    schemas = [f"bench_{uuid.uuid4().hex[:8]}" for _ in range(3)]
    admin = sa.create_engine(database)
    with admin.begin() as conn:
        for s in schemas:
            conn.exec_driver_sql(f"CREATE SCHEMA {s}")
    pg = [f"{database}?options=-csearch_path%3D{s}" for s in schemas]
    samples: dict[str, list[float]] = {"cluster": [], "livepeer": []}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-gw-paths-") as tmp:
            home = Path(tmp)
            env = cluster_env(home, f"redis://127.0.0.1:6379/{broker_db}", pg[0])
            env["FARM_MAX_SESSIONS"] = "100"
            cluster = Cluster(home, env)
            cluster.client().jobs.create_schema()
            try:
                cluster.start_worker(concurrency=1)
                api_port = free_port()
                cluster.spawn("node", "--port", str(api_port), log="node-api.log")
                node = OrchestratorNode(cluster)
                cluster_entry = {
                    "kind": "cluster",
                    "name": "own",
                    "node_url": f"http://127.0.0.1:{api_port}",
                    "broker_url": env["FARM_BROKER_URL"],
                    "database_url": env["FARM_DATABASE_URL"],
                    "blob_url": env["FARM_BLOB_URL"],
                }
                livepeer_entry = {"kind": "livepeer", "name": "net", "address": node.url}
                gateways = {}
                for kind, entry, db in (
                    ("cluster", cluster_entry, 1),
                    ("livepeer", livepeer_entry, 2),
                ):
                    proc, url = _gateway(home, pg[db], entry, gateway_db)
                    procs.append(proc)
                    gateways[kind] = (url, _key(url))
                jobs = sa.create_engine(pg[0])
                for seq in range(segments + 3):
                    data = make_segment(640, 360, 30, 2.0, start=2.0 * seq)
                    for kind, (url, key) in gateways.items():
                        total = _segment(url, key, f"bench-{kind}", seq, data)
                        with jobs.connect() as conn:
                            result = conn.execute(_LATEST).scalar_one()
                        if isinstance(result, str):
                            result = json.loads(result)
                        if seq >= 3:  # warm-up: worker imports, first connections
                            samples[kind].append(total - float(result["timings"]["engine"]))
                jobs.dispose()
                node.close()
            finally:
                for p in procs:
                    p.terminate()
                    p.wait(timeout=20)
                cluster.stop()
    finally:
        with admin.begin() as conn:
            for s in schemas:
                conn.exec_driver_sql(f"DROP SCHEMA {s} CASCADE")
        admin.dispose()
        for db in (broker_db, gateway_db):
            redis.Redis(db=db).flushdb()
    return samples


def report(samples: dict[str, list[float]]) -> None:
    c, n = samples["cluster"], samples["livepeer"]
    c50, c99 = statistics.median(c), pct(c, 0.99)
    n50, n99 = statistics.median(n), pct(n, 0.99)
    print(
        f"per-segment gateway overhead, cluster kind ({len(c)} segments): "
        f"p50 {c50 * 1000:.1f} ms, p99 {c99 * 1000:.1f} ms"
    )
    print(
        f"per-segment gateway overhead, livepeer kind ({len(n)} segments): "
        f"p50 {n50 * 1000:.1f} ms, p99 {n99 * 1000:.1f} ms"
    )
    print(
        f"livepeer over cluster: p50 {(n50 - c50) * 1000:+.1f} ms (target <= +15 ms), "
        f"p99 {(n99 - c99) * 1000:+.1f} ms"
    )

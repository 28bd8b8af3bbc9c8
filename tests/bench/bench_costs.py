"""make bench-costs: the control plane's CPU per segment, by component, and what it means for
1,000 concurrent 2 s streams (docs/scaling.md).

Segments go one at a time through a real cluster (Redis broker, results and registry; jobs in
PostgreSQL; blobs on local disk), as in ``make bench-farm``. Each component's CPU time is read
before and after from the kernel (/proc), from Redis (``INFO cpu``) and from this process:

- submitter: this process, submitting and waiting (what the node or gateway spends per
  segment in ``FarmClient``);
- worker: the worker's processes (Celery parent and pool child), less the CPU the worker
  process spent while its engine ran (the task's ``engine_cpu`` timing);
- redis: the Redis server (broker, results, registry);
- postgresql: every PostgreSQL server process (backends, WAL writer, checkpointer).

Redis and PostgreSQL figures include whatever else uses those servers meanwhile: run it on a
quiet machine. The segments are small (the data plane is not what is measured here).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import redis

from farm.client import FarmClient
from farm.media.profiles import parse_profiles
from farm.media.synth import make_segment
from tests.farm.harness import Cluster, cluster_env

TICK = os.sysconf("SC_CLK_TCK")
STREAMS = 1000
SEGMENT_S = 2.0


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def _processes() -> dict[int, tuple[int, float, str]]:
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        out[int(entry.name)] = (*stat, cmd)
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every live descendant."""
    procs = _processes()
    members, changed = {root}, True
    while changed:
        changed = False
        for pid, (ppid, _, _) in procs.items():
            if ppid in members and pid not in members:
                members.add(pid)
                changed = True
    return sum(procs[p][1] for p in members if p in procs)


def postgres_cpu() -> float:
    return sum(cpu for _, cpu, cmd in _processes().values() if cmd.startswith("postgres"))


def redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--database", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    segment = make_segment(256, 144, 30, 0.5)
    ladder = parse_profiles("P144p30fps16x9")
    db = 7
    r = redis.Redis(db=db)
    r.flushdb()
    with tempfile.TemporaryDirectory(prefix="bench-costs-") as tmp:
        home = Path(tmp)
        env = cluster_env(home, f"redis://127.0.0.1:6379/{db}", args.database)
        env["FARM_QUEUED_TIMEOUT_S"] = "600"
        env["FARM_HEARTBEAT_S"] = "2"  # the default (the test harness beats faster)
        cluster = Cluster(home, env)
        client: FarmClient = cluster.client()
        client.jobs.create_schema()
        try:
            worker = cluster.start_worker(concurrency=1)
            for _ in range(10):  # warm-up: imports, first connections
                client.wait(client.submit(segment, ladder, duration=0.5), timeout=60)
            start = (own_cpu(), tree_cpu(worker.pid), redis_cpu(r), postgres_cpu())
            t = time.perf_counter()
            latencies, engine_cpu = [], 0.0
            for _ in range(args.jobs):
                s = time.perf_counter()
                result = client.wait(client.submit(segment, ladder, duration=0.5), timeout=60)
                latencies.append(time.perf_counter() - s)
                engine_cpu += result.timings["engine_cpu"]
            wall = time.perf_counter() - t
            end = (own_cpu(), tree_cpu(worker.pid), redis_cpu(r), postgres_cpu())
            gateway = through_gateway(cluster, worker.pid, r, args.database, args.jobs // 2)
        finally:
            cluster.stop()
            r.flushdb()
            r.close()
    n = args.jobs
    submitter, worker_total, redis_s, pg_s = ((b - a) / n for a, b in zip(start, end, strict=True))
    engine = engine_cpu / n
    costs = {
        "submitter (FarmClient)": submitter,
        "worker, less the engine": worker_total - engine,
        "redis": redis_s,
        "postgresql": pg_s,
    }
    rate = STREAMS / SEGMENT_S
    print(f"{n} segments in {wall:.1f} s, p50 {statistics.median(latencies) * 1000:.1f} ms each")
    print(f"engine CPU per segment (not control plane): {engine * 1000:.2f} ms")
    print(f"worker CPU per segment, engine included: {worker_total * 1000:.2f} ms")
    print(f"control-plane CPU per segment, and cores for {STREAMS} streams of {SEGMENT_S:g} s:")
    for name, cpu in costs.items():
        print(f"  {name:26s} {cpu * 1000:6.2f} ms  {cpu * rate:5.2f} cores")
    total = sum(costs.values())
    print(f"  {'total':26s} {total * 1000:6.2f} ms  {total * rate:5.2f} cores")
    print(
        f"through the gateway (POST /live, a cluster entry, {args.jobs // 2} segments), "
        "CPU per segment and cores for the same streams:"
    )
    for name, cpu in gateway.items():
        print(f"  {name:26s} {cpu * 1000:6.2f} ms  {cpu * rate:5.2f} cores")
    return 0


def through_gateway(
    cluster: Cluster, worker: int, r: redis.Redis, database: str, n: int
) -> dict[str, float]:
    """The same segments through ``farm gateway`` in front of the cluster (auth, credit
    hold and settlement, session log, FarmClient, the multipart answer): each component's
    CPU per segment, the gateway's own process among them."""
    import httpx
    import sqlalchemy as sa

    from tests.bench.bench_gateway_paths import _gateway, _key
    from tests.farm.harness import free_port

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(database)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    gateway_db = 4
    redis.Redis(db=gateway_db).flushdb()
    proc = None
    try:
        api_port = free_port()
        cluster.spawn("node", "--port", str(api_port), log="node-api.log")
        entry = {
            "kind": "cluster",
            "name": "own",
            "node_url": f"http://127.0.0.1:{api_port}",
            "broker_url": cluster.env["FARM_BROKER_URL"],
            "database_url": cluster.env["FARM_DATABASE_URL"],
            "blob_url": cluster.env["FARM_BLOB_URL"],
        }
        pg = f"{database}?options=-csearch_path%3D{schema}"
        proc, url = _gateway(cluster.home, pg, entry, gateway_db)
        key = _key(url)
        segment = make_segment(256, 144, 30, 0.5)
        headers = {
            "Content-Duration": "500",
            "Livepeer-Transcode-Configuration": '{"presets": ["P144p30fps16x9"]}',
            "Authorization": f"Bearer {key}",
            "Accept": "multipart/mixed",
        }
        jobs = sa.create_engine(cluster.env["FARM_DATABASE_URL"])
        with httpx.Client(timeout=60) as http:

            def post(seq: int) -> None:
                got = http.post(f"{url}/live/costs/{seq}.ts", content=segment, headers=headers)
                if got.status_code != 200:
                    raise RuntimeError(f"gateway: {got.status_code} {got.text}")

            for seq in range(5):  # warm-up
                post(seq)
            with jobs.connect() as conn:
                first = conn.execute(sa.text("SELECT count(*) FROM farm_jobs")).scalar_one()
            start = (tree_cpu(proc.pid), tree_cpu(worker), redis_cpu(r), postgres_cpu())
            for seq in range(5, 5 + n):
                post(seq)
            end = (tree_cpu(proc.pid), tree_cpu(worker), redis_cpu(r), postgres_cpu())
            with jobs.connect() as conn:
                rows = conn.execute(
                    sa.text("SELECT result FROM farm_jobs ORDER BY created_at OFFSET :n"),
                    {"n": first},
                ).scalars()
                engine = sum(
                    float((json.loads(x) if isinstance(x, str) else x)["timings"]["engine_cpu"])
                    for x in rows
                )
        jobs.dispose()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
        redis.Redis(db=gateway_db).flushdb()
    gw, worker_total, redis_s, pg_s = ((b - a) / n for a, b in zip(start, end, strict=True))
    return {
        "gateway (its process)": gw,
        "worker, less the engine": worker_total - engine / n,
        "redis": redis_s,
        "postgresql": pg_s,
    }


if __name__ == "__main__":
    raise SystemExit(main())

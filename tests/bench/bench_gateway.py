"""make bench-gateway: authenticated submissions per second through the gateway, beside a
bare FastAPI endpoint served the same way, with load from a second process.

A submission is ``POST /api/transcode`` with a Bearer API key: key lookup, Redis rate limit,
request validation, a concurrent-task check and the task row in PostgreSQL, then the task is
queued (its input URL answers 404 at once, so the background work stays small). The ratio
printed after them is gateway/bare for submissions per second. Then (``--segments``, 0 to
skip) the per-segment overhead of a ``livepeer`` pool entry against a ``cluster`` one, p50 and
p99 (tests.bench.bench_gateway_paths).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import redis
import sqlalchemy as sa

from tests.farm.harness import free_port, wait_for

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def serve_404() -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/none.mp4"


def up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def load(url: str, n: int, c: int, key: str | None, body: str) -> dict[str, float]:
    cmd = [
        sys.executable,
        "-m",
        "tests.bench.load",
        url,
        "--requests",
        str(n),
        "--concurrency",
        str(c),
        "--body",
        body,
    ]
    if key:
        cmd += ["--key", key]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--segments", type=int, default=40)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(PG)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    r = redis.Redis(db=6)
    r.flushdb()
    server, missing = serve_404()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            gport, bport = free_port(), free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
            env.update(
                {
                    "FARM_GATEWAY_DATABASE_URL": f"{PG}?options=-csearch_path%3D{schema}",
                    "FARM_GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/6",
                    "FARM_GATEWAY_BLOB_URL": f"file://{tmp}/blobs",
                    "FARM_RATE_LIMIT_PER_MINUTE": "100000000",
                    "FARM_RATE_BURST": "100000",
                    "FARM_MAX_CONCURRENT_TASKS": "1000000",
                    "FARM_ADMIN_TOKEN": "bench",
                    # One orchestrator, never reached: tasks are priced and accepted, and their
                    # background work ends at the input's 404 before any dispatch.
                    "FARM_ORCHESTRATORS": json.dumps(
                        [
                            {
                                "kind": "livepeer",
                                "name": "unused",
                                "address": f"https://127.0.0.1:{free_port()}",
                                "price_per_unit": 0,
                            }
                        ]
                    ),
                }
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "farm.cli", "gateway", "--port", str(gport)], env=env
                )
            )
            procs.append(
                subprocess.Popen([sys.executable, "-m", "tests.bench.bare_app", str(bport)])
            )
            gw, bare = f"http://127.0.0.1:{gport}", f"http://127.0.0.1:{bport}"
            wait_for(lambda: up(f"{gw}/docs"), timeout=60, what="gateway")
            wait_for(lambda: up(f"{bare}/docs"), timeout=60, what="bare app")
            key = httpx.post(
                f"{gw}/admin/keys",
                json={"name": "bench", "credits": 1},
                headers={"Authorization": "Bearer bench"},
            ).json()["key"]
            body = json.dumps({"input": {"url": missing}})
            load(f"{bare}/api/transcode", 200, args.concurrency, None, body)  # warm-up
            load(f"{gw}/api/transcode", 200, args.concurrency, key, body)
            b = load(f"{bare}/api/transcode", args.requests, args.concurrency, None, body)
            g = load(f"{gw}/api/transcode", args.requests, args.concurrency, key, body)
            time.sleep(1)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=20)
        server.shutdown()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        r.flushdb()
    print(
        f"machine: {os.cpu_count()} cores; load: {args.concurrency} connections from a "
        f"second process, {args.requests} requests each side"
    )
    print(
        f"bare FastAPI: {b['rps']:.0f} req/s, p50 {b['p50_ms']:.1f} ms, p99 {b['p99_ms']:.1f} ms"
        f" {b['statuses']}"
    )
    print(
        f"gateway submissions: {g['rps']:.0f} req/s, p50 {g['p50_ms']:.1f} ms, "
        f"p99 {g['p99_ms']:.1f} ms {g['statuses']}"
    )
    print(f"ratio gateway/bare submissions per second: {g['rps'] / b['rps']:.3f}")
    if args.segments > 0:
        from tests.bench.bench_gateway_paths import paths, report

        report(paths(args.segments, PG))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""make bench-farm: what the cluster adds to the engine, and how it scales with workers.

Overhead: 2-second segments submitted one at a time through Redis (broker, results and
registry) with jobs in PostgreSQL; overhead = the client's submit-to-result time minus the
engine's own time for that job. Scaling: segments per second through 1 and then 2 worker
processes on the media benchmark's ladder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import redis

from farm.client import FarmClient
from farm.media.profiles import VideoProfile, parse_profiles
from farm.media.synth import make_segment
from tests.farm.harness import Cluster, cluster_env

LADDER = [
    VideoProfile("720p", 1280, 720, 3_000_000, fps=30, gop="2"),
    VideoProfile("480p", 854, 480, 1_600_000, fps=30, gop="2"),
    VideoProfile("360p", 640, 360, 800_000, fps=30, gop="2"),
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def overhead(client: FarmClient, n: int) -> list[float]:
    segment = make_segment(640, 360, 30, 2.0)
    ladder = parse_profiles("P240p30fps16x9,P144p30fps16x9")
    samples = []
    for i in range(n + 3):
        t = time.perf_counter()
        job = client.submit(segment, ladder, duration=2.0)
        result = client.wait(job, timeout=60)
        total = time.perf_counter() - t
        if i >= 3:  # warm-up: worker imports, first connections
            samples.append(total - result.timings["engine"])
    return samples


def throughput(client: FarmClient, segments: list[bytes]) -> float:
    t = time.perf_counter()
    jobs = [client.submit(s, LADDER, duration=2.0) for s in segments]
    for job in jobs:
        client.wait(job, timeout=300)
    return len(segments) / (time.perf_counter() - t)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--database", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    db = 7
    r = redis.Redis(db=db)
    r.flushdb()
    with tempfile.TemporaryDirectory(prefix="bench-farm-") as tmp:
        home = Path(tmp)
        env = cluster_env(home, f"redis://127.0.0.1:6379/{db}", args.database)
        env["FARM_QUEUED_TIMEOUT_S"] = "600"
        env["FARM_HEARTBEAT_S"] = "2"  # the default (the test harness beats faster)
        cluster = Cluster(home, env)
        client = cluster.client()
        client.jobs.create_schema()
        try:
            first = cluster.start_worker(concurrency=1)
            samples = overhead(client, args.jobs)
            p50, p99 = statistics.median(samples), pct(samples, 0.99)
            print(
                f"overhead over {len(samples)} jobs (2 s 360p segment, 2 renditions): "
                f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
                f"min {min(samples) * 1000:.1f} ms",
                flush=True,
            )
            segments = [
                make_segment(1920, 1080, 30, 2.0, start=2.0 * k, seed=k, bitrate=6_500_000)
                for k in range(args.segments)
            ]
            throughput(client, segments[:2])  # warm-up
            one = throughput(client, segments)
            print(f"1 worker process: {one:.3f} segments/s", flush=True)
            cluster.start_worker(concurrency=1)
            two = throughput(client, segments)
            print(f"2 worker processes: {two:.3f} segments/s", flush=True)
            _ = first
        finally:
            cluster.stop()
            r.flushdb()
            r.close()
    print(f"machine: {os.cpu_count()} cores; jobs in {args.database.split(':')[0]}, broker Redis")
    print(f"scaling 2 workers / 1 worker: {two / one:.3f}")
    print(
        f"overhead p50 {p50 * 1000:.1f} ms (target <= 10 ms), "
        f"p99 {p99 * 1000:.1f} ms (target <= 15 ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

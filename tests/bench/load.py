"""A closed-loop HTTP load generator: C threads each sending requests back to back."""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import httpx


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--key", default=None)
    p.add_argument("--body", default="{}")
    args = p.parse_args()
    headers = {"Content-Type": "application/json"}
    if args.key:
        headers["Authorization"] = f"Bearer {args.key}"
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    per_thread = args.requests // args.concurrency

    def worker() -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(per_thread):
                t = time.perf_counter()
                r = client.post(args.url, content=args.body, headers=headers)
                dt = time.perf_counter() - t
                with lock:
                    latencies.append(dt)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    print(
        json.dumps(
            {
                "requests": len(latencies),
                "rps": len(latencies) / wall,
                "p50_ms": statistics.median(ordered) * 1000,
                "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1000,
                "statuses": statuses,
            }
        )
    )


if __name__ == "__main__":
    main()

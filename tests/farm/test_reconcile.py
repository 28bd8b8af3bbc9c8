"""The reconciler against real services: passes that race, and a single beat."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from farm import tasks
from farm.celery_app import create_app
from farm.jobs import JobStore
from farm.registry import Capabilities, Registry
from farm.settings import ClusterSettings

QUEUE = "transcode.cpu.h264"
SPEC = {"need": {"codec": "h264", "renditions": 1, "device": "cpu"}, "duration": 1.0}


@pytest.fixture
def app(tmp_path: Path, redis_url: str, postgres_url: str) -> Iterator[Celery]:
    settings = ClusterSettings(
        broker_url=redis_url,
        database_url=postgres_url,
        blob_url=f"file://{tmp_path / 'blobs'}",
        heartbeat_s=30.0,
        task_events=False,
    )
    app = create_app(settings)
    registry = Registry(redis_url, 30.0)
    registry.beat(Capabilities(worker="paused@test:1", queues=[QUEUE], capacity=1))
    registry.close()
    yield app
    tasks.resources(app).close()
    tasks._resources = None


def _messages(redis_url: str, queue: str) -> list[tuple[str, str]]:
    """(job id, task id) of each message waiting in a Redis broker's queue."""
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.lrange(queue, 0, -1)
    finally:
        client.close()
    out = []
    for item in raw:
        message = json.loads(item)  # type: ignore[arg-type]
        out.append((message["headers"]["argsrepr"].split("'")[1], message["headers"]["id"]))
    return out


def _overdue_jobs(store: JobStore, n: int) -> list[str]:
    ids = [f"race{i:02d}" for i in range(n)]
    for job_id in ids:
        store.create(
            job_id,
            kind="transcode",
            queue=QUEUE,
            spec=SPEC,
            task_id=f"{job_id}.1",
            timeout_s=18.0,
            queued_timeout_s=0.001,  # overdue at once: its message is taken to be lost
        )
    return ids


def test_two_racing_reconcile_passes_republish_each_job_once(app: Celery, redis_url: str) -> None:
    store = tasks.resources(app).jobs
    ids = _overdue_jobs(store, 30)
    barrier = threading.Barrier(2)
    counts: list[dict[str, int]] = []

    def reconcile() -> None:
        barrier.wait()
        counts.append(tasks.reconcile(app))

    threads = [threading.Thread(target=reconcile) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(c["republished"] for c in counts) == 30, counts
    messages = _messages(redis_url, QUEUE)
    per_job = Counter(job_id for job_id, _ in messages)
    assert sorted(per_job) == ids and set(per_job.values()) == {1}, per_job
    assert {task_id for _, task_id in messages} == {f"{j}.2" for j in ids}
    for job_id in ids:
        job = store.get(job_id)
        assert (job.task_id, job.publishes) == (f"{job_id}.2", 2)

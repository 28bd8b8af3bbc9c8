"""The reconciler against real services: passes that race, and a single beat."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from farm import tasks
from farm.beatlock import BEAT_LOCK_KEY
from farm.brokerwatch import META_KEY, broker_changed, lost_messages
from farm.embedded import EmbeddedRedis
from farm.jobs import JobStore
from farm.media.profiles import parse_profiles
from farm.media.synth import make_segment
from farm.reconcile import reconcile
from farm.registry import Capabilities, Heartbeat, Registry
from farm.settings import ClusterSettings
from farm.worker_app import create_worker_app
from tests.farm.harness import Cluster, cluster_env, wait_for

QUEUE = "transcode.cpu.h264"
GPU_QUEUE = "transcode.gpu.h264"
LADDER = parse_profiles("P144p30fps16x9")
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
    app = create_worker_app(settings)
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

    def one_pass() -> None:
        barrier.wait()
        counts.append(reconcile(app, tasks.resources(app)))

    threads = [threading.Thread(target=one_pass) for _ in range(2)]
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


def test_a_flushed_broker_has_its_queued_jobs_republished_at_once(
    tmp_path: Path, postgres_url: str
) -> None:
    # One Redis for broker, result backend and registry, as most clusters run it; flushed
    # whole while jobs wait in it. The queued timeout is far off: only noticing the flush can
    # bring the jobs back in time.
    broker = EmbeddedRedis(tmp_path / "redis", persist=False)
    broker.start()
    env = cluster_env(tmp_path, broker.url, postgres_url)
    env["FARM_QUEUED_TIMEOUT_S"] = "300"
    cluster = Cluster(tmp_path, env)
    # An NVENC worker that advertises and never consumes: its jobs wait in the broker.
    registry = cluster.registry()
    nvenc = Heartbeat(
        registry,
        lambda: Capabilities(
            worker="nvenc@test:1", queues=[GPU_QUEUE], capacity=4, gpu_codecs=["h264"]
        ),
    )
    nvenc.start()
    probe = redis.Redis(unix_socket_path=str(broker.socket))
    try:
        cluster.start_worker()
        cluster.start_beat()
        client = cluster.client()
        segment = make_segment(160, 90, 30, 1.0)
        jobs = [client.submit(segment, LADDER, duration=1.0, device="gpu") for _ in range(3)]
        assert probe.llen(GPU_QUEUE) == 3
        store = client.jobs
        wait_for(lambda: store.meta(META_KEY), timeout=30, what="the broker's identity recorded")
        flushed = time.monotonic()
        probe.flushall()
        wait_for(
            lambda: all(store.get(j.id).publishes == 2 for j in jobs) and probe.llen(GPU_QUEUE),
            timeout=60,
            what="the lost jobs republished",
        )
        recovered = time.monotonic() - flushed
        assert recovered < 15, (recovered, cluster.logs())
        messages = [json.loads(m)["headers"]["id"] for m in probe.lrange(GPU_QUEUE, 0, -1)]
        assert sorted(messages) == sorted(f"{j.id}.2" for j in jobs), cluster.logs()
        assert all(store.get(j.id).state == "queued" for j in jobs)
    finally:
        nvenc.stop()
        registry.close()
        probe.close()
        cluster.stop()
        broker.stop()


def test_a_second_beat_waits_for_the_first_and_takes_over_when_it_dies(
    tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    env = cluster_env(tmp_path, redis_url, postgres_url)
    env["FARM_BEAT_LOCK_S"] = "2"
    cluster = Cluster(tmp_path, env)
    probe = redis.Redis.from_url(redis_url)

    def holder() -> str:
        value = probe.get(BEAT_LOCK_KEY)
        return value.decode() if isinstance(value, bytes) else ""

    def beat(name: str) -> subprocess.Popen[bytes]:
        schedule = str(tmp_path / f"{name}-schedule")
        return cluster.spawn(
            "beat", "--schedule", schedule, "--loglevel", "INFO", log=f"{name}.log"
        )

    try:
        first = beat("beat-a")
        wait_for(lambda: f":{first.pid}:" in holder(), timeout=30, what="the first beat's lock")
        second = beat("beat-b")
        log_b = tmp_path / "beat-b.log"
        wait_for(
            lambda: log_b.exists() and "waiting to take over" in log_b.read_text(),
            timeout=30,
            what="the second beat to say it waits",
        )
        assert f":{first.pid}:" in log_b.read_text()
        wait_for(
            lambda: "beat: Starting" in (tmp_path / "beat-a.log").read_text(),
            timeout=30,
            what="the first beat to schedule",
        )
        assert "beat: Starting" not in log_b.read_text()
        cluster.kill9(first)
        wait_for(lambda: f":{second.pid}:" in holder(), timeout=30, what="the second to take over")
        wait_for(
            lambda: "beat: Starting" in log_b.read_text(),
            timeout=30,
            what="the second beat to schedule",
        )
        assert "taken over" in log_b.read_text()
    finally:
        probe.close()
        cluster.stop()


def test_a_broker_flush_is_noticed_once_and_names_the_jobs_it_lost(
    redis_url: str, postgres_url: str
) -> None:
    store = JobStore(postgres_url)
    store.create_schema()
    try:
        assert not broker_changed(store, redis_url)  # the first look: nothing to compare
        assert not broker_changed(store, redis_url)
        _overdue_jobs(store, 2)
        assert lost_messages(store, redis_url) == []
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        client.close()
        assert [broker_changed(store, redis_url) for _ in range(2)] == [True, False]
        assert sorted(j.id for j in lost_messages(store, redis_url)) == ["race00", "race01"]
        # Republished since: no longer lost.
        store.republished(store.get("race00"), "race00.2", QUEUE)
        assert [j.id for j in lost_messages(store, redis_url)] == ["race01"]
    finally:
        store.engine.dispose()


def test_a_job_in_the_own_queue_of_a_gone_worker_goes_to_its_capability_queue_at_once(
    app: Celery, redis_url: str
) -> None:
    # A stream's segment sent to the worker that kept its encoders (farm.router.route_stream),
    # which died before taking it: nobody else reads that queue, so the job is not left to
    # wait out its queued timeout. One in a live worker's own queue stays where it is.
    store = tasks.resources(app).jobs
    for job_id, queue in (("gone", "transcode@cpu@gone:9"), ("live", "transcode@paused@test:1")):
        store.create(
            job_id,
            kind="transcode",
            queue=queue,
            spec={**SPEC, "stream": "session/manifest"},
            task_id=f"{job_id}.1",
            timeout_s=18.0,
            queued_timeout_s=300.0,
        )
    counts = reconcile(app, tasks.resources(app))
    assert counts["republished"] == 1, counts
    assert _messages(redis_url, QUEUE) == [("gone", "gone.2")]
    gone, live = store.get("gone"), store.get("live")
    assert (gone.queue, gone.task_id, gone.state) == (QUEUE, "gone.2", "queued")
    assert (live.queue, live.publishes) == ("transcode@paused@test:1", 1)

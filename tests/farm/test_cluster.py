"""Whole flows through real services: Redis, PostgreSQL, RabbitMQ, the embedded default."""

from __future__ import annotations

import io
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
import redis

from chain.signing import keccak256
from farm.client import FarmClient, JobFailedError
from farm.embedded import EmbeddedRedis
from farm.errors import NoCapacity
from farm.media.profiles import parse_profiles
from farm.media.synth import make_segment
from farm.registry import Capabilities
from tests.farm.harness import Cluster, check_renditions, cluster_env, wait_for
from tests.proxy import TcpProxy

LADDER = parse_profiles("P240p30fps16x9,P144p30fps16x9")


@pytest.fixture
def segment() -> bytes:
    return make_segment(320, 240, 30, 1.0)


def _check_result(client: FarmClient, job_id: str) -> None:
    check_renditions(client, job_id, ["P240p30fps16x9", "P144p30fps16x9"])
    job = client.get(job_id, with_attempts=True)
    assert job.state == "done" and job.attempts == 1
    assert [a.outcome for a in job.attempt_log] == ["done"]


@pytest.fixture
def pg_cluster(tmp_path: Path, redis_url: str, postgres_url: str) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, cluster_env(tmp_path, redis_url, postgres_url))
    yield cluster
    cluster.stop()


def test_job_full_path_redis_postgres(pg_cluster: Cluster, segment: bytes) -> None:
    pg_cluster.start_worker()
    client = pg_cluster.client()
    job = client.submit(segment, LADDER, duration=1.0)
    assert job.queue == "transcode.cpu.h264"
    assert job.state == "queued"
    _check_result(client, job.id)
    assert all(r.keccak is None for r in client.wait(job.id).renditions)
    # Asked for, the worker hashes each rendition as it stores it (a node signs the hashes).
    hashed = client.wait(client.submit(segment, LADDER, duration=1.0, keccak=True))
    for r in hashed.renditions:
        assert r.keccak == keccak256(client.rendition_bytes(r)).hex()


def test_corrupt_input_fails_once_with_engine_message(pg_cluster: Cluster) -> None:
    pg_cluster.start_worker()
    client = pg_cluster.client()
    job = client.submit(b"\x47" + b"not a transport stream" * 50, LADDER)
    with pytest.raises(JobFailedError) as failed:
        client.wait(job.id, timeout=30)
    assert failed.value.code == "input_invalid"
    assert "not a media container" in str(failed.value)
    time.sleep(1.0)  # a retry loop would have started a second attempt by now
    final = client.get(job.id, with_attempts=True)
    assert final.attempts == 1 and final.state == "failed"
    assert final.attempt_log[0].error_code == "input_invalid"


def test_no_live_worker_is_a_clear_error(pg_cluster: Cluster, segment: bytes) -> None:
    client = pg_cluster.client()
    with pytest.raises(NoCapacity, match="no capacity for h264 transcode of 2 rendition"):
        client.submit(segment, LADDER)


def test_two_workers_both_take_jobs(pg_cluster: Cluster, segment: bytes) -> None:
    first = pg_cluster.start_worker()
    second = pg_cluster.start_worker()
    client = pg_cluster.client()
    jobs = [client.submit(segment, LADDER, duration=1.0) for _ in range(6)]
    workers = {client.wait(j.id, timeout=90).worker.split("/")[0] for j in jobs}
    names = {pg_cluster.worker_of(p).worker.split(":")[0] for p in (first, second)}  # type: ignore[union-attr]
    assert len(workers) == 2, f"only {workers} took jobs of {names}"


def test_kill9_worker_mid_transcode_completes_once_elsewhere(
    pg_cluster: Cluster,
) -> None:
    # A segment long enough to be caught mid-transcode on this machine.
    heavy = make_segment(1280, 720, 30, 4.0, audio=False)
    ladder = parse_profiles("P720p30fps16x9,P360p30fps16x9")
    doomed = pg_cluster.start_worker()
    pg_cluster.start_beat()
    client = pg_cluster.client()
    job = client.submit(heavy, ladder, duration=4.0)
    doomed_name = pg_cluster.worker_of(doomed).worker  # type: ignore[union-attr]
    wait_for(lambda: client.get(job.id).state == "running", timeout=30, what="job running")
    assert client.get(job.id).worker == doomed_name
    pg_cluster.kill9(doomed)
    survivor = pg_cluster.start_worker()
    result = client.wait(job.id, timeout=120)
    survivor_name = pg_cluster.worker_of(survivor).worker  # type: ignore[union-attr]
    final = client.get(job.id, with_attempts=True)
    assert final.state == "done"
    assert result.worker == survivor_name  # one name in the registry and the attempt log
    outcomes = [a.outcome for a in final.attempt_log]
    assert outcomes.count("done") == 1, outcomes
    assert "lost" in outcomes or "running" in outcomes
    assert final.publishes >= 2  # the reconciler republished it when the heartbeat stopped


def test_an_unroutable_job_waits_without_spending_attempts(
    tmp_path: Path, redis_url: str, postgres_url: str, segment: bytes
) -> None:
    env = cluster_env(tmp_path, redis_url, postgres_url)
    # The gone worker's heartbeat (three heartbeats, 1.5 s) expires well before the job is
    # overdue (3 s after it was submitted), so no pass can route it to that worker.
    env.update(FARM_QUEUED_TIMEOUT_S="3", FARM_MAX_ATTEMPTS="2", FARM_CAPACITY_WAIT_S="14")
    cluster = Cluster(tmp_path, env)
    try:
        # The reconciler runs before the job is submitted, so its capacity wait is spent in
        # reconcile passes, not in starting processes.
        cluster.start_worker()
        cluster.start_beat()
        # An NVENC worker advertised once and then gone: the job goes to the GPU queue, and
        # only CPU workers (which run the reconciler) are left.
        registry = cluster.registry()
        registry.beat(
            Capabilities(
                worker="gone@test:1", queues=["transcode.gpu.h264"], capacity=1, gpu_codecs=["h264"]
            )
        )
        registry.close()
        client = cluster.client()
        job = client.submit(segment, LADDER, duration=1.0, device="gpu")
        assert job.queue == "transcode.gpu.h264"
        with pytest.raises(JobFailedError) as failed:
            client.wait(job.id, timeout=60)
        final = client.get(job.id)
        assert final.error_code == "no_capacity", final.error
        assert "no live worker could take it" in (final.error or "")
        waits = sum(
            log.read_text().count(f"job {job.id} overdue, waiting")
            for log in tmp_path.glob("worker-*.log")
        )
        # Passes that found no worker did not count: more of them than attempts allowed,
        # and the job was never republished.
        assert waits > 2 and final.publishes == 1, (waits, final.publishes, cluster.logs())
        assert "no live worker could take it" in str(failed.value)
    finally:
        cluster.stop()


def test_broker_restart_loses_no_accepted_job(
    tmp_path: Path, postgres_url: str, segment: bytes
) -> None:
    broker = EmbeddedRedis(tmp_path / "redis", persist=False)
    broker.start()
    cluster = Cluster(tmp_path, cluster_env(tmp_path, broker.url, postgres_url))
    try:
        # A worker that is advertised but not consuming: the jobs wait in the broker.
        registry = cluster.registry()
        registry.beat(
            Capabilities(worker="paused@test:1", queues=["transcode.cpu.h264"], capacity=1)
        )
        registry.close()
        client = cluster.client()
        jobs = [client.submit(segment, LADDER, duration=1.0) for _ in range(3)]
        probe = redis.Redis(unix_socket_path=str(broker.socket))
        assert probe.llen("transcode.cpu.h264") == 3
        probe.close()
        broker.stop()  # no persistence: every queued message is gone
        broker.start()
        probe = redis.Redis(unix_socket_path=str(broker.socket))
        assert probe.llen("transcode.cpu.h264") == 0
        probe.close()
        cluster.start_worker()
        cluster.start_beat()
        for job in jobs:
            result = client.wait(job.id, timeout=90)
            assert len(result.renditions) == 2
            final = client.get(job.id, with_attempts=True)
            assert final.publishes == 2 and final.attempts == 1
    finally:
        cluster.stop()
        broker.stop()


def test_rabbitmq_broker(
    tmp_path: Path, amqp_url: str, redis_url: str, sqlite_url: str, segment: bytes
) -> None:
    vhost_free = amqp_url  # the default vhost; queues are named per farm
    cluster = Cluster(
        tmp_path,
        cluster_env(tmp_path, vhost_free, sqlite_url, backend=redis_url, registry=redis_url),
    )
    try:
        cluster.start_worker()
        client = cluster.client()
        job = client.submit(segment, LADDER, duration=1.0)
        _check_result(client, job.id)
    finally:
        cluster.stop()


def test_embedded_mode(tmp_path: Path, segment: bytes) -> None:
    broker = EmbeddedRedis(tmp_path / "redis")
    broker.start()
    cluster = Cluster(tmp_path, cluster_env(tmp_path, broker.url, f"sqlite:///{tmp_path}/farm.db"))
    try:
        cluster.start_worker()
        client = cluster.client()
        job = client.submit(segment, LADDER, duration=1.0)
        _check_result(client, job.id)
    finally:
        cluster.stop()
        broker.stop()


def test_gpus_all_runs_one_worker_process_per_gpu(pg_cluster: Cluster, segment: bytes) -> None:
    # Two GPUs declared by hand (no NVIDIA driver here): `--gpus all` pins one worker process
    # to each. Without NVENC they decode where NVDEC exists and take the CPU-encode queues.
    gpus = [
        {
            "index": i,
            "name": "NVIDIA H100",
            "uuid": f"GPU-{i}",
            "memory_total": 80 << 30,
            "memory_free": 80 << 30,
        }
        for i in range(2)
    ]
    pg_cluster.env["FARM_STATIC_GPUS"] = json.dumps(gpus)
    group = pg_cluster.spawn("worker", "--gpus", "all", log="gpu-group.log")
    live = wait_for(
        lambda: (
            [w for w in pg_cluster.live() if w.gpus]
            if len([w for w in pg_cluster.live() if w.gpus]) == 2
            else None
        ),
        timeout=60,
        what="two GPU worker processes",
    )
    assert sorted(w.gpus[0]["index"] for w in live) == [0, 1]  # type: ignore[union-attr]
    assert len({w.pid for w in live}) == 2  # type: ignore[union-attr]
    assert all("transcode.cpu.h264" in w.queues and not w.gpu_codecs for w in live)  # type: ignore[union-attr]
    client = pg_cluster.client()
    _check_result(client, client.submit(segment, LADDER, duration=1.0).id)
    group.send_signal(signal.SIGTERM)
    assert group.wait(timeout=60) == 0
    wait_for(
        lambda: not [w for w in pg_cluster.live() if w.gpus],
        timeout=10,
        what="both GPU workers to leave the registry",
    )


def test_damaged_first_attempt_is_retried_and_succeeds(
    tmp_path: Path, redis_url: str, sqlite_url: str, segment: bytes
) -> None:
    cluster = Cluster(tmp_path, cluster_env(tmp_path, redis_url, sqlite_url))
    try:
        cluster.start_worker(damage="truncate")  # it truncates every job's first attempt
        client = cluster.client()
        job = client.submit(segment, LADDER, duration=1.0)
        _check_result_any_attempts(client, job.id)
        final = client.get(job.id, with_attempts=True)
        assert [a.outcome for a in final.attempt_log] == ["failed", "done"]
        first = final.attempt_log[0]
        assert first.error_code == "verification_failed"
        assert "P240p30fps16x9" in (first.error or "")
    finally:
        cluster.stop()


def _check_result_any_attempts(client: FarmClient, job_id: str) -> None:
    result = client.wait(job_id, timeout=60)
    for ref in result.renditions:
        with av.open(io.BytesIO(client.rendition_bytes(ref))) as c:
            assert len(list(c.decode(video=0))) == ref.frames == 30


def test_a_failed_verification_is_retried_on_another_worker(
    tmp_path: Path, redis_url: str, sqlite_url: str, segment: bytes
) -> None:
    cluster = Cluster(tmp_path, cluster_env(tmp_path, redis_url, sqlite_url))
    try:
        broken = cluster.start_worker(damage="always:truncate")  # never a good rendition
        broken_name = cluster.worker_of(broken).worker  # type: ignore[union-attr]
        cluster.start_worker()
        client = cluster.client()
        jobs = [client.submit(segment, LADDER, duration=1.0) for _ in range(4)]
        for job in jobs:
            client.wait(job.id, timeout=90)
        retried = 0
        for job in jobs:
            log = client.get(job.id, with_attempts=True).attempt_log
            assert log[-1].outcome == "done"
            # The retry went to the good worker's own queue: never back to the broken one.
            assert [a.outcome for a in log[:-1]] in ([], ["failed"]), log
            assert not log[-1].worker.startswith(
                broken_name.split(":")[0] + "." + broken_name.split(":")[1]
            )
            retried += len(log) > 1
        assert retried, "the broken worker took none of the jobs"
    finally:
        cluster.stop()


def test_a_worker_retries_a_claim_the_database_was_down_for(
    tmp_path: Path, redis_url: str, postgres_url: str, segment: bytes
) -> None:
    # The worker reaches the job store through a proxy that is cut while the job waits; the
    # submitter reaches it directly. No beat runs: the worker itself must try again.
    proxy = TcpProxy.before(postgres_url)
    cluster = Cluster(tmp_path, cluster_env(tmp_path, redis_url, proxy.url(postgres_url)))
    try:
        cluster.start_worker()
        submitter = FarmClient(cluster.settings.model_copy(update={"database_url": postgres_url}))
        proxy.cut()
        job = submitter.submit(segment, LADDER, duration=1.0)
        wait_for(
            lambda: "job store unreachable" in cluster.logs(), timeout=30, what="a refused claim"
        )
        proxy.restore()
        result = submitter.wait(job.id, timeout=60)
        assert len(result.renditions) == 2
        final = submitter.get(job.id, with_attempts=True)
        assert final.publishes == 1 and [a.outcome for a in final.attempt_log] == ["done"]
        submitter.close()
    finally:
        cluster.stop()
        proxy.close()

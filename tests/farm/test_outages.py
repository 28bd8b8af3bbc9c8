"""A service the cluster depends on goes away for a few seconds and comes back: the worker's
job store (PostgreSQL) or its broker and registry (Redis), cut through a proxy for that
process only. Nothing accepted is lost or finished twice, and the worker resumes by itself."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from farm.client import FarmClient
from farm.errors import FarmError, ServiceUnavailable
from farm.media.profiles import parse_profiles
from farm.media.synth import make_segment
from farm.publish import job_timeout_s, time_limits
from farm.registry import Capabilities
from farm.resources import is_unreachable
from tests.farm.harness import Cluster, cluster_env, wait_for
from tests.proxy import TcpProxy

LADDER = parse_profiles("P240p30fps16x9,P144p30fps16x9")


@pytest.fixture
def segment() -> bytes:
    return make_segment(320, 240, 30, 1.0)


@pytest.fixture
def heavy() -> bytes:
    # Long enough to be caught mid-transcode on a small machine.
    return make_segment(1280, 720, 30, 4.0, audio=False)


@pytest.fixture
def pg_proxy(postgres_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy.before(postgres_url)
    yield proxy
    proxy.close()


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy.before(redis_url)
    yield proxy
    proxy.close()


def test_a_result_finished_while_the_database_was_down_is_recorded_once(
    tmp_path: Path, redis_url: str, postgres_url: str, pg_proxy: TcpProxy, heavy: bytes
) -> None:
    # No beat runs: the worker itself must record the result once the store is back, rather
    # than leave the job 'running' for the reconciler to transcode again.
    ladder = parse_profiles("P720p30fps16x9,P360p30fps16x9")
    cluster = Cluster(tmp_path, cluster_env(tmp_path, redis_url, pg_proxy.url(postgres_url)))
    submitter = FarmClient(cluster.settings.model_copy(update={"database_url": postgres_url}))
    try:
        cluster.start_worker()
        job = submitter.submit(heavy, ladder, duration=4.0)
        wait_for(lambda: submitter.get(job.id).state == "running", timeout=30, what="running")
        pg_proxy.cut()
        wait_for(
            lambda: "store unreachable" in cluster.logs(),
            timeout=30,
            what="a refused completion",
        )
        time.sleep(1.0)
        pg_proxy.restore()
        result = submitter.wait(job.id, timeout=30)
        assert len(result.renditions) == 2
        final = submitter.get(job.id, with_attempts=True)
        assert final.publishes == 1, cluster.logs()
        assert [a.outcome for a in final.attempt_log] == ["done"]
    finally:
        submitter.close()
        cluster.stop()


def test_a_result_is_kept_past_the_soft_limit_until_the_database_is_back(
    tmp_path: Path, redis_url: str, postgres_url: str, pg_proxy: TcpProxy, heavy: bytes
) -> None:
    # The database stays away longer than the soft limit (16 s for a 4 s segment) from the
    # claim on, but less than the job's deadline (26 s): the finished transcode is recorded
    # once it is back, not thrown away and transcoded again.
    ladder = parse_profiles("P720p30fps16x9,P360p30fps16x9")
    soft, deadline = time_limits(4.0)[0], job_timeout_s(4.0)
    cluster = Cluster(tmp_path, cluster_env(tmp_path, redis_url, pg_proxy.url(postgres_url)))
    submitter = FarmClient(cluster.settings.model_copy(update={"database_url": postgres_url}))
    try:
        cluster.start_worker()
        job = submitter.submit(heavy, ladder, duration=4.0)
        wait_for(lambda: submitter.get(job.id).state == "running", timeout=30, what="running")
        claimed = time.monotonic()
        pg_proxy.cut()
        wait_for(
            lambda: "store unreachable" in cluster.logs(),
            timeout=soft,
            what="a refused completion",
        )
        # The outage itself: past the soft limit, short of the deadline.
        time.sleep(max(0.0, claimed + soft + 2.0 - time.monotonic()))
        assert time.monotonic() - claimed < deadline - 4.0
        pg_proxy.restore()
        result = submitter.wait(job.id, timeout=30)
        assert len(result.renditions) == 2
        final = submitter.get(job.id, with_attempts=True)
        assert final.publishes == 1 and final.attempts == 1, cluster.logs()
        assert [a.outcome for a in final.attempt_log] == ["done"]
    finally:
        submitter.close()
        cluster.stop()


def test_a_worker_resumes_after_its_redis_was_cut(
    tmp_path: Path,
    redis_url: str,
    postgres_url: str,
    redis_proxy: TcpProxy,
    segment: bytes,
    heavy: bytes,
) -> None:
    through = redis_proxy.url(redis_url)
    cluster = Cluster(tmp_path, cluster_env(tmp_path, through, postgres_url))
    submitter = FarmClient(
        cluster.settings.model_copy(
            update={"broker_url": redis_url, "result_backend": redis_url, "registry_url": redis_url}
        )
    )
    try:
        worker = cluster.start_worker()
        # While idle.
        redis_proxy.cut()
        time.sleep(5.0)
        redis_proxy.restore()
        wait_for(lambda: cluster.worker_of(worker), timeout=15, what="the heartbeat to resume")
        job = submitter.submit(segment, LADDER, duration=1.0)
        assert len(submitter.wait(job.id, timeout=30).renditions) == 2
        # Mid-job.
        ladder = parse_profiles("P720p30fps16x9,P360p30fps16x9")
        job = submitter.submit(heavy, ladder, duration=4.0)
        wait_for(lambda: submitter.get(job.id).state == "running", timeout=30, what="running")
        redis_proxy.cut()
        time.sleep(5.0)
        redis_proxy.restore()
        result = submitter.wait(job.id, timeout=60)
        assert len(result.renditions) == 2
        wait_for(lambda: cluster.worker_of(worker), timeout=15, what="the heartbeat to resume")
        job2 = submitter.submit(segment, LADDER, duration=1.0)
        assert len(submitter.wait(job2.id, timeout=30).renditions) == 2
        final = submitter.get(job.id, with_attempts=True)
        assert [a.outcome for a in final.attempt_log] == ["done"], cluster.logs()
    finally:
        submitter.close()
        cluster.stop()


def test_a_job_the_broker_refused_is_a_retryable_error_and_never_runs(
    tmp_path: Path, redis_url: str, postgres_url: str, redis_proxy: TcpProxy, segment: bytes
) -> None:
    # The registry and job store answer; only the broker is gone.
    env = cluster_env(tmp_path, redis_proxy.url(redis_url), postgres_url, registry=redis_url)
    cluster = Cluster(tmp_path, env)
    registry = cluster.registry()
    registry.beat(Capabilities(worker="w@test:1", queues=["transcode.cpu.h264"], capacity=1))
    registry.close()
    client = cluster.client()
    redis_proxy.cut()
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="broker unreachable"):
        client.submit(segment, LADDER, duration=1.0, job_id="refused")
    assert time.monotonic() - started < 5
    # The caller was told to try again, elsewhere perhaps: the reconciler must not run the
    # job once the broker is back.
    job = client.get("refused")
    assert job.state == "failed" and job.error_code == "service_unavailable"
    redis_proxy.restore()
    assert client.submit(segment, LADDER, duration=1.0).state == "queued"
    cluster.stop()


def test_an_input_the_blob_store_refused_is_its_error_and_the_job_never_runs(
    tmp_path: Path, redis_url: str, postgres_url: str, redis_proxy: TcpProxy, segment: bytes
) -> None:
    # The input and the job row are written side by side: the row exists, the input not.
    env = cluster_env(tmp_path, redis_url, postgres_url, blob=redis_proxy.url(redis_url))
    cluster = Cluster(tmp_path, env)
    registry = cluster.registry()
    registry.beat(Capabilities(worker="w@test:1", queues=["transcode.cpu.h264"], capacity=1))
    registry.close()
    client = cluster.client()
    redis_proxy.cut()
    try:
        with pytest.raises(FarmError) as refused:
            client.submit(segment, LADDER, duration=1.0, job_id="no-input")
        job = client.get("no-input")
        assert (job.state, job.error_code) == ("failed", refused.value.code)
        assert job.error == str(refused.value)
        # Nothing was published: the broker holds no message for it.
        broker = redis.Redis.from_url(redis_url)
        assert not broker.llen("transcode.cpu.h264")
        broker.close()
    finally:
        redis_proxy.restore()
        cluster.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that stands for a host gone from the network: connections are accepted (by the
    kernel's backlog) and never answered."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        yield int(silent.getsockname()[1])


def test_a_database_that_does_not_answer_is_unreachable_within_seconds(
    tmp_path: Path, redis_url: str, postgres_url: str, silent_port: int, segment: bytes
) -> None:
    url = make_url(postgres_url).set(host="127.0.0.1", port=silent_port)
    cluster = Cluster(tmp_path, cluster_env(tmp_path, redis_url, url.render_as_string(False)))
    registry = cluster.registry()
    registry.beat(Capabilities(worker="w@test:1", queues=["transcode.cpu.h264"], capacity=1))
    registry.close()
    client = cluster.client()
    started = time.monotonic()
    try:
        with pytest.raises(DBAPIError) as refused:
            client.submit(segment, LADDER, duration=1.0)
        assert is_unreachable(refused.value)
        assert time.monotonic() - started < 15
    finally:
        cluster.stop()


def test_a_job_waits_out_a_blob_store_blink_without_spending_its_attempts(
    tmp_path: Path, redis_url: str, postgres_url: str, redis_proxy: TcpProxy, segment: bytes
) -> None:
    # Only the worker's blob store (Redis) goes away; its broker, registry and job store stay.
    env = cluster_env(tmp_path, redis_url, postgres_url, blob=redis_proxy.url(redis_url))
    cluster = Cluster(tmp_path, env)
    client = FarmClient(cluster.settings.model_copy(update={"blob_url": redis_url}))
    try:
        cluster.start_worker()
        redis_proxy.cut()
        job = client.submit(segment, LADDER, duration=1.0)
        wait_for(
            lambda: "blob store unreachable" in cluster.logs(), timeout=30, what="a failed fetch"
        )
        time.sleep(3.0)
        redis_proxy.restore()
        assert len(client.wait(job.id, timeout=30).renditions) == 2
        final = client.get(job.id, with_attempts=True)
        assert [a.outcome for a in final.attempt_log] == ["done"], cluster.logs()
    finally:
        client.close()
        cluster.stop()


def test_a_broker_that_does_not_answer_is_a_prompt_retryable_error(
    tmp_path: Path, redis_url: str, postgres_url: str, silent_port: int, segment: bytes
) -> None:
    broker = f"redis://127.0.0.1:{silent_port}/0"
    env = cluster_env(tmp_path, broker, postgres_url, backend=redis_url, registry=redis_url)
    cluster = Cluster(tmp_path, env)
    registry = cluster.registry()
    registry.beat(Capabilities(worker="w@test:1", queues=["transcode.cpu.h264"], capacity=1))
    registry.close()
    client = cluster.client()
    started = time.monotonic()
    try:
        with pytest.raises(ServiceUnavailable, match="broker unreachable"):
            client.submit(segment, LADDER, duration=1.0, job_id="unanswered")
        assert time.monotonic() - started < 15
        assert client.get("unanswered").state == "failed"
    finally:
        cluster.stop()

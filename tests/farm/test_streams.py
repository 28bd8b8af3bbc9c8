"""A stream's segments through a real cluster: they follow the worker that keeps the
stream's encoders open, and reach another worker when that one is gone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.client import FarmClient, JobResult
from farm.media.profiles import parse_profiles
from farm.media.synth import make_segment
from farm.queues import stream_queue
from farm.registry import Capabilities, Heartbeat
from tests.farm.harness import Cluster, check_renditions, cluster_env, wait_for

LADDER = parse_profiles("P240p30fps16x9,P144p30fps16x9")
NAMES = [p.name for p in LADDER]
CAPABILITY_QUEUE = "transcode.cpu.h264"


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, postgres_url: str) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, cluster_env(tmp_path, redis_url, postgres_url))
    yield cluster
    cluster.stop()


def _segment(n: int) -> bytes:
    return make_segment(320, 240, 30, 1.0, start=float(n), seed=n)


def _send(client: FarmClient, n: int, stream: str) -> tuple[str, JobResult]:
    job = client.submit(_segment(n), LADDER, duration=1.0, stream=stream)
    return job.queue, check_renditions(client, job.id, NAMES)


def test_a_streams_segments_stay_on_one_worker_and_reuse_its_encoders(cluster: Cluster) -> None:
    cluster.start_worker()
    cluster.start_worker()
    client = cluster.client()
    sent = [_send(client, n, "session-1/manifest") for n in range(4)]

    first_queue, first = sent[0]
    assert first_queue == CAPABILITY_QUEUE and not first.reused
    assert first.raw["encoders"] == {"reused": 0, "opened": 2, "fresh": 0}
    for queue, result in sent[1:]:
        assert queue == stream_queue(first.worker), cluster.logs()
        assert result.worker == first.worker
        assert result.reused, result.raw
        assert result.raw["encoders"] == {"reused": 2, "opened": 0, "fresh": 0}
    # Timestamps go on across the stream's segments.
    starts = [r.renditions[0].start for _, r in sent]
    assert starts == sorted(starts) and starts[-1] > starts[0]
    # A segment with no stream key is any job: the capability queue, nothing kept.
    plain = client.submit(_segment(4), LADDER, duration=1.0)
    assert plain.queue == CAPABILITY_QUEUE
    result = check_renditions(client, plain.id, NAMES)
    assert not result.reused and "encoders" not in result.raw


def test_a_streams_segment_left_in_a_dead_workers_queue_is_done_elsewhere(
    cluster: Cluster,
) -> None:
    first = cluster.start_worker()
    client = cluster.client()
    _, done = _send(client, 0, "session-2/manifest")
    gone = done.worker
    cluster.kill9(first)
    # The dead worker still looks live for a moment (its last heartbeat has not expired):
    # kept so here, the stream's next segment is sent to its own queue, where nobody reads.
    registry = cluster.registry()
    ghost = Heartbeat(
        registry,
        lambda: Capabilities(
            worker=gone,
            queues=[CAPABILITY_QUEUE, stream_queue(gone)],
            capacity=1,
            cpu_codecs=["h264"],
        ),
    )
    ghost.start()
    try:
        cluster.start_worker()
        job = client.submit(_segment(1), LADDER, duration=1.0, stream="session-2/manifest")
        assert job.queue == stream_queue(gone)
        cluster.start_beat()
        wait_for(
            lambda: (
                client.get(job.id).state == "queued"
                and client.get(job.id).queue == stream_queue(gone)
            ),
            timeout=5,
            what="the job still waiting in the dead worker's queue",
        )
    finally:
        ghost.stop()
        registry.close()
    # Its heartbeat gone, the reconciler sends the segment to the capability queue.
    result = check_renditions(client, job.id, NAMES)
    assert result.worker != gone and not result.reused
    final = client.get(job.id)
    assert (final.queue, final.publishes) == (CAPABILITY_QUEUE, 2), cluster.logs()
    # The stream goes on with the new worker's encoders.
    queue, after = _send(client, 2, "session-2/manifest")
    assert queue == stream_queue(result.worker) and after.reused


def test_a_worker_told_to_keep_no_encoders_takes_stream_segments_as_any_job(
    cluster: Cluster,
) -> None:
    env = {**cluster.env, "FARM_STREAM_ENCODERS": "false"}
    proc = cluster.spawn("worker", "--cpu", "--concurrency", "1", log="worker-plain.log", env=env)
    wait_for(lambda: cluster.worker_of(proc), timeout=30, what="the worker's first heartbeat")
    worker = cluster.worker_of(proc)
    assert worker is not None and stream_queue(worker.worker) not in worker.queues
    client = cluster.client()
    for n in range(2):
        queue, result = _send(client, n, "session-3/manifest")
        assert queue == CAPABILITY_QUEUE
        assert not result.reused and "encoders" not in result.raw

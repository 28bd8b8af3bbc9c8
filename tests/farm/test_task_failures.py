"""A transcode attempt that fails in a way nobody planned for is recorded as that attempt's
failure, with its cause, and the job retries or fails: it never stays running."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

from farm import tasks
from farm.context import WorkerContext, worker_context
from farm.errors import JobNotFound
from farm.media.damage import attempt_damage
from farm.media.engine import EngineOptions, transcode
from farm.media.profiles import VideoProfile, parse_profiles
from farm.media.result import TranscodeResult
from farm.media.synth import make_segment
from farm.settings import ClusterSettings
from farm.worker_app import create_worker_app

LADDER = parse_profiles("P144p30fps16x9")


@pytest.fixture
def app(tmp_path: Path, redis_url: str, postgres_url: str) -> Iterator[Celery]:
    settings = ClusterSettings(
        broker_url=redis_url,
        database_url=postgres_url,
        blob_url=f"file://{tmp_path / 'blobs'}",
        task_events=False,
        max_attempts=3,
    )
    app = create_worker_app(settings)
    yield app
    tasks.use_engine(app, None)
    tasks.resources(app).close()


def _submit(app: Celery, job_id: str) -> dict[str, Any]:
    res = tasks.resources(app)
    spec = {
        "input_key": f"jobs/{job_id}/in",
        "profiles": [p.to_json() for p in LADDER],
        "format": "mpegts",
        "duration": 1.0,
        "need": {"codec": "h264", "renditions": 1, "device": "any"},
    }
    res.blobs.put(spec["input_key"], make_segment(320, 240, 30, 1.0))
    res.jobs.create(
        job_id,
        kind="transcode",
        queue="transcode.cpu.h264",
        spec=spec,
        task_id=f"{job_id}.1",
        timeout_s=18.0,
    )
    return spec


def _run(app: Celery, job_id: str, spec: dict[str, Any]) -> None:
    """The task as a worker runs it (its retries run in turn, in this process)."""
    outcome = app.tasks["farm.transcode"].apply(args=[job_id, spec], task_id=f"{job_id}.1")
    assert isinstance(outcome.result, tasks.JobFailed), outcome.result


def test_a_blob_store_that_refuses_a_rendition_fails_the_attempt_with_its_cause(
    app: Celery, tmp_path: Path
) -> None:
    spec = _submit(app, "refused")
    # The renditions' directory cannot be made: the store answers with an OS error.
    (tmp_path / "blobs" / "jobs" / "refused" / "out").write_bytes(b"in the way")
    _run(app, "refused", spec)
    job = tasks.resources(app).jobs.get("refused", with_attempts=True)
    assert (job.state, job.error_code) == ("failed", "blob_store_failed"), job
    assert "Not a directory (NotADirectoryError)" in (job.error or "") and "refused/out" in (
        job.error or ""
    )
    assert [a.outcome for a in job.attempt_log] == ["failed"] * 3
    assert {a.error_code for a in job.attempt_log} == {"blob_store_failed"}
    assert "worker was lost" not in (job.error or "")


def test_an_unexpected_error_fails_the_attempt_with_its_class_and_message(app: Celery) -> None:
    def exploding(
        data: bytes, profiles: list[VideoProfile], opts: EngineOptions
    ) -> TranscodeResult:
        raise RuntimeError("the engine fell over")

    tasks.use_engine(app, exploding)
    spec = _submit(app, "boom")
    _run(app, "boom", spec)
    job = tasks.resources(app).jobs.get("boom", with_attempts=True)
    assert (job.state, job.error_code) == ("failed", "worker_error"), job
    assert job.error == "RuntimeError: the engine fell over"
    assert [(a.outcome, a.error) for a in job.attempt_log] == [
        ("failed", "RuntimeError: the engine fell over")
    ] * 3


def test_a_late_attempt_does_not_rewrite_a_done_jobs_renditions(app: Celery) -> None:
    res = tasks.resources(app)
    # The winner is the second attempt, claimed while the first transcodes.
    key = tasks.output_key("late", LADDER[0].name, "mpegts", 2)

    def finished_elsewhere_meanwhile(
        data: bytes, profiles: list[VideoProfile], opts: EngineOptions
    ) -> TranscodeResult:
        # While this attempt transcodes, another one stores its rendition and wins the job.
        res.blobs.put(key, b"the winner's rendition")
        res.jobs.start_attempt("late", "late.1", "elsewhere/1")
        assert res.jobs.complete("late", "late.1", "elsewhere/1", {"renditions": [key]})
        return transcode(data, profiles, opts)

    tasks.use_engine(app, finished_elsewhere_meanwhile)
    spec = _submit(app, "late")
    outcome = app.tasks["farm.transcode"].apply(args=["late", spec], task_id="late.1")
    assert outcome.result == {"job_id": "late", "skipped": True, "state": "superseded"}
    assert res.blobs.get(key) == b"the winner's rendition"
    # The late attempt stored its own rendition apart, under its own attempt's key.
    assert res.blobs.get(tasks.output_key("late", LADDER[0].name, "mpegts", 1))[:1] == b"\x47"
    job = res.jobs.get("late")
    assert (job.state, job.completed_by) == ("done", "elsewhere/1:late.1")


def test_only_a_worker_of_this_cluster_hands_a_failed_job_back() -> None:
    # Another live worker consumes the job's queue: a local worker that failed the job's last
    # attempt hands the retry to it; a remote transcoder, whose stores are the node API and
    # which cannot read the registry, keeps it.
    other = SimpleNamespace(worker="other:1", queues=["transcode.cpu.h264"])
    cluster = SimpleNamespace(registry=SimpleNamespace(live=lambda: [other]))
    task = SimpleNamespace(request=SimpleNamespace(delivery_info={"routing_key": other.queues[0]}))
    local = WorkerContext(ClusterSettings(), cluster, cluster, instance="me:1")  # type: ignore[arg-type]
    assert tasks._hand_back(task, local, "me:1", 0)  # type: ignore[arg-type]
    assert not tasks._hand_back(task, local, "me:1", 2)  # type: ignore[arg-type]
    remote = replace(local, stores=SimpleNamespace())
    assert not tasks._hand_back(task, remote, "me:1", 0)  # type: ignore[arg-type]


def test_a_failed_stream_segment_retries_on_its_capability_queue() -> None:
    # Taken from this worker's own queue (the stream's encoders were here), the retry goes
    # where other workers read, so it can be handed back; other retries keep their queue.
    other = SimpleNamespace(worker="other:1", queues=["transcode.cpu.h264"])
    cluster = SimpleNamespace(registry=SimpleNamespace(live=lambda: [other]))
    local = WorkerContext(ClusterSettings(), cluster, cluster, instance="me:1")  # type: ignore[arg-type]
    spec = {"need": {"codec": "h264", "renditions": 1, "device": "any"}}

    def task(queue: str) -> Any:
        return SimpleNamespace(request=SimpleNamespace(delivery_info={"routing_key": queue}))

    assert tasks._retry_queue(task("transcode@me:1"), local, spec) == "transcode.cpu.h264"
    assert tasks._retry_queue(task("transcode.cpu.h264"), local, spec) is None
    remote = replace(local, stores=SimpleNamespace())
    assert tasks._retry_queue(task("transcode@me:1"), remote, spec) is None


def test_a_failed_attempt_retries_in_the_own_queue_of_another_worker() -> None:
    # Sent to the capability queue, the retry could be taken by this worker again while the
    # others are busy (a hand-back finds only it idle): sent to another worker's own queue,
    # it runs there, on the least loaded one that serves the job's route.
    def worker(name: str, load: int, own: bool = True) -> SimpleNamespace:
        queues = ["transcode.cpu.h264", *([f"transcode@{name}"] if own else [])]
        return SimpleNamespace(worker=name, queues=queues, load=load)

    live = [worker("me:1", 0), worker("busy:1", 2), worker("idle:1", 0), worker("old:1", 0, False)]
    cluster = SimpleNamespace(registry=SimpleNamespace(live=lambda: live))
    local = WorkerContext(ClusterSettings(), cluster, cluster, instance="me:1")  # type: ignore[arg-type]
    spec = {"need": {"codec": "h264", "renditions": 1, "device": "any"}}

    def task(queue: str) -> Any:
        return SimpleNamespace(request=SimpleNamespace(delivery_info={"routing_key": queue}))

    for queue in ("transcode.cpu.h264", "transcode@me:1"):
        assert tasks._retry_queue(task(queue), local, spec) == "transcode@idle:1"
    live[2].load = 5
    assert tasks._retry_queue(task("transcode.cpu.h264"), local, spec) == "transcode@busy:1"
    del live[1:3]  # only a worker without an own queue is left beside this one
    assert tasks._retry_queue(task("transcode.cpu.h264"), local, spec) is None
    assert tasks._retry_queue(task("transcode@me:1"), local, spec) == "transcode.cpu.h264"
    remote = replace(local, stores=SimpleNamespace())
    assert tasks._retry_queue(task("transcode.cpu.h264"), remote, spec) is None


def test_a_context_damage_hook_fails_the_first_attempt_and_the_retry_is_clean(app: Celery) -> None:
    worker_context(app).damage = attempt_damage("truncate")
    spec = _submit(app, "damaged")
    outcome = app.tasks["farm.transcode"].apply(args=["damaged", spec], task_id="damaged.1")
    assert outcome.result["job_id"] == "damaged" and len(outcome.result["renditions"]) == 1
    job = tasks.resources(app).jobs.get("damaged", with_attempts=True)
    assert job.state == "done"
    assert [(a.outcome, a.error_code) for a in job.attempt_log] == [
        ("failed", "verification_failed"),
        ("done", None),
    ]


def test_a_task_whose_job_is_not_in_the_table_is_dropped_with_a_warning(
    app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    """A message from before the job table was restored (or from another cluster on the same
    broker) has no row to claim: it is skipped, not raised as an unexpected error."""
    spec = _submit(app, "kept")
    with caplog.at_level("WARNING", logger="farm.tasks"):
        outcome = app.tasks["farm.transcode"].apply(args=["gone", spec], task_id="gone.1")
    assert outcome.successful(), outcome.traceback
    assert outcome.result == {"job_id": "gone", "skipped": True, "state": "missing"}
    assert "skipping gone.1: no job gone in the job table" in caplog.text
    # The job table is as it was: nothing made up for the missing job.
    jobs = tasks.resources(app).jobs
    assert jobs.get("kept").state == "queued"
    with pytest.raises(JobNotFound):
        jobs.get("gone")

"""The job table on SQLite and PostgreSQL: exactly-once completion, attempts, reconciling."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from farm.jobs import JobNotFound, JobStore
from farm.jobs.models import utcnow


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> JobStore:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    s = JobStore(url)
    s.create_schema()
    request.addfinalizer(s.engine.dispose)
    return s


def _job(store: JobStore, job_id: str = "j1", timeout_s: float = 10.0) -> None:
    store.create(
        job_id,
        kind="transcode",
        queue="transcode.cpu.h264",
        spec={"need": {"codec": "h264", "renditions": 1, "device": "any"}},
        task_id=f"{job_id}.1",
        timeout_s=timeout_s,
        queued_timeout_s=5.0,
    )


def test_complete_exactly_once_under_concurrency(store: JobStore) -> None:
    _job(store)
    store.start_attempt("j1", "j1.1", "w1", "w1")
    store.start_attempt("j1", "j1.1", "w2", "w2")
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def finish(i: int) -> None:
        barrier.wait()
        wins.append(store.complete("j1", "j1.1", f"w{i}", {"n": i}))

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1
    job = store.get("j1", with_attempts=True)
    assert job.state == "done" and job.result is not None
    assert [a.outcome for a in job.attempt_log] == ["lost", "done"]


def test_final_job_takes_no_new_attempt(store: JobStore) -> None:
    _job(store)
    store.start_attempt("j1", "j1.1", "w1")
    assert store.attempt_failed("j1", "j1.1", "w1", "input_invalid", "bad", final=True)
    assert store.start_attempt("j1", "j1.1", "w2").status == "final"
    assert not store.complete("j1", "j1.1", "w2", {})
    assert store.get("j1").state == "failed"


def test_overdue_and_orphaned_jobs(store: JobStore) -> None:
    _job(store, "queued")
    _job(store, "running")
    store.start_attempt("running", "running.1", "w", "worker-a")
    later = utcnow() + timedelta(seconds=6)
    assert [j.id for j in store.overdue(later)] == ["queued"]
    assert [j.id for j in store.orphaned({"worker-a"})] == []
    assert [j.id for j in store.orphaned({"worker-b"})] == ["running"]
    assert store.republished("queued", "queued.2", "transcode.cpu.h264")
    job = store.get("queued")
    assert (job.task_id, job.publishes, job.state) == ("queued.2", 2, "queued")


def test_waiting_for_capacity_is_not_a_publish(store: JobStore) -> None:
    _job(store, "orphan")
    store.start_attempt("orphan", "orphan.1", "w", "worker-a")
    before = store.get("orphan")
    assert before.updated_at is not None and before.updated_at.tzinfo is not None
    assert store.await_capacity("orphan")
    job = store.get("orphan")
    # Queued again without its lost worker, same task and publish count, and still dated from
    # when it last ran, so the reconciler knows how long it has waited.
    assert (job.state, job.worker, job.task_id, job.publishes) == ("queued", None, "orphan.1", 1)
    assert job.updated_at == before.updated_at
    assert [j.id for j in store.overdue()] == []  # a new deadline
    assert [j.id for j in store.overdue(utcnow() + timedelta(seconds=6))] == ["orphan"]
    store.fail("orphan", "no_capacity", "nothing can take it")
    assert not store.await_capacity("orphan")
    assert store.get("orphan").state == "failed"


def test_unknown_job(store: JobStore) -> None:
    with pytest.raises(JobNotFound):
        store.get("nope")

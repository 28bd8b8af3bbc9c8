"""The job table on SQLite and PostgreSQL: exactly-once completion, attempts, reconciling."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
        wins.append(store.complete("j1", "j1.1", f"w{1 + i % 2}", {"n": i}))

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1
    job = store.get("j1", with_attempts=True)
    assert job.state == "done" and job.result is not None
    # Whichever attempt won, the log agrees with completed_by: the winner's attempt is done,
    # even the one the second claim had marked lost.
    winner = f"w{1 + job.result['n'] % 2}"
    assert job.completed_by == f"{winner}:j1.1"
    by_worker = {a.worker: a.outcome for a in job.attempt_log}
    assert by_worker[winner] == "done" and by_worker["w2"] == "done"


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
    seen = store.get("queued")
    assert store.republished(seen, "queued.2", "transcode.cpu.h264")
    job = store.get("queued")
    assert (job.task_id, job.publishes, job.state) == ("queued.2", 2, "queued")


def test_republish_is_a_compare_and_set_on_the_generation_seen(store: JobStore) -> None:
    _job(store)
    seen = store.get("j1")
    # Two reconcilers read the same generation: one republishes it, the other is refused.
    assert store.republished(seen, "j1.2", "transcode.cpu.h264")
    assert not store.republished(seen, "j1.2", "transcode.cpu.h264")
    assert (store.get("j1").task_id, store.get("j1").publishes) == ("j1.2", 2)
    # The superseded message's claim is refused; the current one's is taken.
    assert store.start_attempt("j1", "j1.1", "w1", "a").status == "stale"
    # A worker claims the job after a reconciler read it: that reconciler's republish is
    # refused, so the job does not run twice.
    seen = store.get("j1")
    assert store.start_attempt("j1", "j1.2", "w2", "b").status == "started"
    assert not store.republished(seen, "j1.3", "transcode.cpu.h264")
    assert store.get("j1").task_id == "j1.2"
    store.complete("j1", "j1.2", "w2", {})
    assert not store.republished(store.get("j1"), "j1.3", "transcode.cpu.h264")


def test_the_winning_attempt_is_done_even_after_it_was_marked_lost(store: JobStore) -> None:
    _job(store)
    store.start_attempt("j1", "j1.1", "w1", "a")
    assert store.republished(store.get("j1"), "j1.2", "transcode.cpu.h264")
    store.start_attempt("j1", "j1.2", "w2", "b")  # marks w1's attempt lost
    assert store.complete("j1", "j1.1", "w1", {"n": 1})  # yet it finishes first
    assert not store.complete("j1", "j1.2", "w2", {"n": 2})
    job = store.get("j1", with_attempts=True)
    assert job.completed_by == "w1:j1.1"
    assert [(a.worker, a.outcome) for a in job.attempt_log] == [("w1", "done"), ("w2", "done")]


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


def test_a_retry_sent_to_a_workers_own_queue_is_found_there(store: JobStore) -> None:
    # A failed attempt's retry sent to another worker's own queue: the row says so, so the
    # reconciler's sweep of gone workers' own queues finds it. A job no longer queued keeps
    # its row as it is.
    _job(store)
    store.start_attempt("j1", "j1.1", "w1")
    assert store.attempt_failed("j1", "j1.1", "w1", "verification_failed", "cut", final=False)
    assert store.waits_in("j1", "transcode@cpu@w2:1")
    assert [j.id for j in store.queued_in("transcode@")] == ["j1"]
    assert store.get("j1").queue == "transcode@cpu@w2:1"
    store.start_attempt("j1", "j1.1", "w2")
    assert not store.waits_in("j1", "transcode@cpu@w3:1")
    assert store.get("j1").queue == "transcode@cpu@w2:1"
    assert not store.waits_in("nope", "transcode@cpu@w3:1")


def test_unknown_job(store: JobStore) -> None:
    with pytest.raises(JobNotFound):
        store.get("nope")


def test_processes_that_create_the_tables_at_once_all_succeed(postgres_url: str) -> None:
    # Workers, the node and the gateway each create the tables they use when they start;
    # started together on a fresh database, two CREATE TABLEs of one table used to race on
    # PostgreSQL's catalogue and one process failed (pg_type_typname_nsp_index).
    from chain.queue import TicketQueue
    from gateway.ledger import Ledger

    stores = [JobStore(postgres_url) for _ in range(4)]
    ledgers = [Ledger(postgres_url) for _ in range(2)]
    creators = [s.create_schema for s in stores]
    creators += [ledger.create_schema for ledger in ledgers]
    creators += [TicketQueue(stores[0].engine).create_schema for _ in range(2)]
    start = threading.Barrier(len(creators))

    def create(make: Callable[[], None]) -> None:
        start.wait()
        make()

    with ThreadPoolExecutor(len(creators)) as pool:
        for future in [pool.submit(create, make) for make in creators]:
            future.result()
    _job(stores[0])
    assert stores[1].get("j1").state == "queued"
    for engine in [s.engine for s in stores] + [ledger.engine for ledger in ledgers]:
        engine.dispose()

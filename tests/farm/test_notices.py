"""Job notices on real Redis (and the job table on PostgreSQL): a waiter wakes on its job's
notice, a notice that comes first is kept for it, the listener outlives its connection being
dropped, and a client whose notice is lost still reads the job from its row."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from farm.client import FarmClient, JobFailedError
from farm.media.profiles import parse_profiles
from farm.media.synth import make_segment
from farm.notices import Announcer, NoticeBoard
from farm.queues import transcode_queue
from farm.registry import Capabilities, Registry
from farm.settings import ClusterSettings


@pytest.fixture
def board(redis_url: str) -> Iterator[NoticeBoard]:
    board = NoticeBoard(redis_url)
    assert board.start(timeout=5.0)
    yield board
    board.close()


@pytest.fixture
def announcer(redis_url: str) -> Iterator[Announcer]:
    announcer = Announcer(redis_url)
    yield announcer
    announcer.close()


def test_a_waiter_wakes_on_its_jobs_notice(board: NoticeBoard, announcer: Announcer) -> None:
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(board.wait("job-1", 10.0)))
    waiter.start()
    time.sleep(0.2)
    announcer.announce(board.channel, "job-2", "done", {"n": 2})  # someone else's
    announcer.announce(board.channel, "job-1", "done", {"n": 1})
    waiter.join(timeout=5.0)
    assert got == [{"job_id": "job-1", "state": "done", "result": {"n": 1}}]
    # The other job's notice waits for its own waiter.
    assert board.wait("job-2", 0.01) == {"job_id": "job-2", "state": "done", "result": {"n": 2}}
    # Each notice is handed out once.
    assert board.wait("job-2", 0.05) is None


def test_a_failure_notice_carries_no_result(board: NoticeBoard, announcer: Announcer) -> None:
    announcer.announce(board.channel, "job-f", "failed")
    assert _eventually(lambda: board.wait("job-f", 0.5)) == {
        "job_id": "job-f",
        "state": "failed",
        "result": None,
    }


def test_other_channels_and_malformed_notices_are_ignored(
    board: NoticeBoard, announcer: Announcer, redis_url: str
) -> None:
    announcer.announce(None, "job-x", "done", {})  # a job submitted without a channel
    announcer.announce("celery-task-meta-x", "job-x", "done", {})  # not a notice channel
    raw = redis.Redis.from_url(redis_url)
    try:
        for junk in (b"not json", b"[1, 2]", b'{"state": "done"}', b'{"job_id": 7}'):
            raw.publish(board.channel, junk)
    finally:
        raw.close()
    announcer.announce(board.channel, "job-ok", "done", {"ok": True})
    assert _eventually(lambda: board.wait("job-ok", 0.5))["result"] == {"ok": True}
    assert board.wait("job-x", 0.05) is None


def test_the_listener_resubscribes_after_its_connection_is_dropped(
    board: NoticeBoard, announcer: Announcer, redis_url: str
) -> None:
    raw = redis.Redis.from_url(redis_url)
    try:
        mine = [c for c in raw.client_list() if c.get("name") == board.client_name]
        assert len(mine) == 1
        raw.client_kill_filter(_id=mine[0]["id"])
    finally:
        raw.close()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        announcer.announce(board.channel, "job-after", "done", {"back": True})
        notice = board.wait("job-after", 0.3)
        if notice is not None:
            assert notice["result"] == {"back": True}
            return
    pytest.fail("the notice listener did not come back after its connection was dropped")


def test_an_announcer_without_redis_does_not_raise() -> None:
    announcer = Announcer("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        announcer.announce("farm:done:nobody", "job", "done", {})
    finally:
        announcer.close()


def test_a_board_that_cannot_subscribe_says_so() -> None:
    board = NoticeBoard("redis://127.0.0.1:1/0")
    try:
        assert board.start(timeout=0.5) is False
        assert not board.listening
        assert board.wait("job", 0.05) is None
    finally:
        board.close()


def _eventually(get: object, tries: int = 10) -> dict[str, object]:
    for _ in range(tries):
        got = get()  # type: ignore[operator]
        if got is not None:
            return got  # type: ignore[no-any-return]
    pytest.fail("no notice came")


# -- the client: a notice wakes its waiter, and a lost one costs only the row's next read --


@pytest.fixture
def client(redis_url: str, postgres_url: str, tmp_path: Path) -> Iterator[FarmClient]:
    settings = ClusterSettings(
        broker_url=redis_url, database_url=postgres_url, blob_url=f"file://{tmp_path}"
    )
    client = FarmClient(settings)
    client.jobs.create_schema()
    # A live CPU worker in the registry, so the job is routed and published (none runs it).
    registry = Registry(redis_url)
    registry.beat(
        Capabilities(worker="w1", queues=[transcode_queue("h264", gpu=False)], capacity=1)
    )
    registry.close()
    yield client
    client.close()


def _finish(client: FarmClient, job_id: str) -> dict[str, object]:
    """What the worker that finishes a job records, as farm.tasks does."""
    payload = {
        "job_id": job_id,
        "renditions": [],
        "encoded_pixels": 0,
        "decoded_pixels": 0,
        "worker": "w1",
        "timings": {"engine": 0.0},
    }
    client.jobs.start_attempt(job_id, f"{job_id}.1", "w1", "w1")
    assert client.jobs.complete(job_id, f"{job_id}.1", "w1", payload, {})
    return payload


def test_a_submitted_job_names_its_clients_channel_and_wakes_on_its_notice(
    client: FarmClient, redis_url: str
) -> None:
    job = client.submit(make_segment(160, 90, 30, 0.5), parse_profiles("P144p30fps16x9"))
    assert job.spec["notify"].startswith("farm:done:")
    payload = _finish(client, job.id)
    announcer = Announcer(redis_url)
    later = threading.Timer(0.2, announcer.announce, (job.spec["notify"], job.id, "done", payload))
    try:
        started = time.monotonic()
        later.start()
        result = client.wait(job, timeout=10)
        woke = time.monotonic() - started
    finally:
        later.join()  # the waiter may wake before the publish's own reply is read
        announcer.close()
    assert result.job_id == job.id and result.worker == "w1"
    assert woke < 0.9  # the notice, not the row's once-a-second read


def test_a_job_whose_notice_is_lost_is_read_from_its_row(client: FarmClient) -> None:
    job = client.submit(make_segment(160, 90, 30, 0.5), parse_profiles("P144p30fps16x9"))
    later = threading.Timer(0.2, _finish, (client, job.id))  # recorded, never announced
    later.start()
    result = client.wait(job, timeout=10)
    later.join()
    assert result.job_id == job.id and result.worker == "w1"


def test_a_failure_notice_ends_the_wait_with_the_rows_error(
    client: FarmClient, redis_url: str
) -> None:
    job = client.submit(make_segment(160, 90, 30, 0.5), parse_profiles("P144p30fps16x9"))
    client.jobs.fail(job.id, "input_invalid", "not a video")
    announcer = Announcer(redis_url)
    try:
        announcer.announce(job.spec["notify"], job.id, "failed")
    finally:
        announcer.close()
    with pytest.raises(JobFailedError) as raised:
        client.wait(job, timeout=10)
    assert raised.value.code == "input_invalid"


def test_only_the_first_start_waits_while_redis_cannot_be_reached() -> None:
    board = NoticeBoard("redis://127.0.0.1:1/0")
    try:
        assert board.start(timeout=0.3) is False
        started = time.monotonic()
        assert board.start(timeout=5.0) is False  # the listener is retrying: no wait
        assert time.monotonic() - started < 1.0
    finally:
        board.close()

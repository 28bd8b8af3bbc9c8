"""The job store's psycopg lane on PostgreSQL: errors as SQLAlchemy's, connections kept,
dead ones replaced, nothing shared with a forked child."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, TimeoutError

from farm.jobs import JobExists, JobStore
from farm.jobs.lane import Lane
from farm.runtime import is_unreachable

_BACKEND = "SELECT pg_backend_pid()"


@pytest.fixture
def lane(postgres_url: str) -> Iterator[Lane]:
    lane = Lane(make_url(postgres_url), idle_ping_s=60.0)
    lane.rows("CREATE TABLE kept (id int PRIMARY KEY)", {})
    yield lane
    lane.close()


def _terminate(postgres_url: str, pid: int) -> None:
    url = make_url(postgres_url).set(drivername="postgresql", query={})
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_rows_and_a_kept_connection(lane: Lane) -> None:
    assert lane.rows("INSERT INTO kept VALUES (%(id)s)", {"id": 1}) == []
    assert lane.rows("SELECT id FROM kept WHERE id = %(id)s", {"id": 1}) == [(1,)]
    first = lane.rows(_BACKEND, {})
    assert lane.rows(_BACKEND, {}) == first  # the connection used last is used again


def test_an_error_is_sqlalchemys_and_the_connection_stays(lane: Lane) -> None:
    lane.rows("INSERT INTO kept VALUES (%(id)s)", {"id": 1})
    before = lane.rows(_BACKEND, {})
    with pytest.raises(IntegrityError) as caught:
        lane.rows("INSERT INTO kept VALUES (%(id)s)", {"id": 1})
    assert not is_unreachable(caught.value)
    assert isinstance(caught.value.orig, psycopg.errors.UniqueViolation)
    assert lane.rows(_BACKEND, {}) == before
    # Autocommit: the failed statement left no transaction open behind it.
    assert lane.rows("INSERT INTO kept VALUES (%(id)s) RETURNING id", {"id": 2}) == [(2,)]


def test_a_connection_killed_in_use_fails_as_unreachable_then_is_replaced(
    lane: Lane, postgres_url: str
) -> None:
    ((pid,),) = lane.rows(_BACKEND, {})
    _terminate(postgres_url, pid)
    with pytest.raises(OperationalError) as caught:
        lane.rows(_BACKEND, {})  # used at once: no ping, so the statement meets the dead socket
    assert is_unreachable(caught.value)
    ((again,),) = lane.rows(_BACKEND, {})
    assert again != pid


def test_a_lost_server_drops_every_kept_connection_at_once(lane: Lane, postgres_url: str) -> None:
    """After one statement meets a dead connection, the others kept are not tried in turn."""
    sleepers = [
        threading.Thread(target=lane.rows, args=("SELECT pg_sleep(0.3)", {})) for _ in range(3)
    ]
    for t in sleepers:
        t.start()
    for t in sleepers:
        t.join()
    kept = [conn.info.backend_pid for conn, _ in lane._idle]
    assert len(kept) == 3
    for pid in kept:
        _terminate(postgres_url, pid)
    with pytest.raises(OperationalError):
        lane.rows(_BACKEND, {})  # no ping (used a moment ago): this one meets the dead socket
    ((fresh,),) = lane.rows(_BACKEND, {})
    assert fresh not in kept


def test_a_connection_that_died_while_idle_is_pinged_out(postgres_url: str) -> None:
    lane = Lane(make_url(postgres_url), idle_ping_s=0.0)
    try:
        ((pid,),) = lane.rows(_BACKEND, {})
        _terminate(postgres_url, pid)
        ((again,),) = lane.rows(_BACKEND, {})  # no error: the ping found it dead first
        assert again != pid
    finally:
        lane.close()


def test_an_unreachable_database_is_an_operational_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    lane = Lane(make_url(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"))
    with pytest.raises(OperationalError) as caught:
        lane.rows(_BACKEND, {})
    assert is_unreachable(caught.value)


def test_a_forked_child_opens_its_own_connection(lane: Lane) -> None:
    ((parent,),) = lane.rows(_BACKEND, {})
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            ((mine,),) = lane.rows(_BACKEND, {})
            lane.close()
            os.write(write, str(mine).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        reported = int(f.read())
    os.waitpid(child, 0)
    assert reported != parent
    assert lane.rows(_BACKEND, {}) == [(parent,)]  # the child neither used nor closed it


def test_the_store_closes_its_lane_with_its_engine(postgres_url: str) -> None:
    store = JobStore(postgres_url)
    store.create_schema()
    spec = {"need": {"codec": "h264", "renditions": 1, "device": "any"}}
    store.create("j1", kind="transcode", queue="q", spec=spec, task_id="j1.1", timeout_s=5)
    with pytest.raises(JobExists):
        store.create("j1", kind="transcode", queue="q", spec=spec, task_id="j1.1", timeout_s=5)
    assert store.get("j1").spec == spec
    kept = list(store._lane._idle)  # type: ignore[union-attr]
    assert kept
    store.engine.dispose()
    assert all(conn.closed for conn, _ in kept)


def test_a_burst_waits_for_a_connection_within_the_limit(postgres_url: str) -> None:
    lane = Lane(make_url(postgres_url), limit=1, wait_s=0.2)
    busy = threading.Thread(target=lane.rows, args=("SELECT pg_sleep(1)", {}))
    try:
        busy.start()
        time.sleep(0.3)  # the one connection is taken
        with pytest.raises(TimeoutError):
            lane.rows(_BACKEND, {})
        busy.join()
        assert lane.rows("SELECT 1", {}) == [(1,)]  # free again once the first is done
    finally:
        busy.join()
        lane.close()

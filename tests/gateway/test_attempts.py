"""The one retry loop's verdicts, on a real pool and a real session log: the caller's input
stops it without suspending anyone, a full orchestrator is passed over and kept, and any other
failure suspends the orchestrator and moves on."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from farm.errors import InputInvalid, InsufficientCapacity, NoCapacity
from farm.jobs import make_engine
from gateway.attempts import Work, attempt, classify
from gateway.errors import NoOrchestrators, TranscodeFailed
from gateway.models import GatewayBase
from gateway.pool import Pool, PoolEntry
from gateway.pricing import attempt_price, highest_price
from gateway.sessions import SessionLog
from gateway.settings import OrchestratorConfig


@pytest.fixture
def world(postgres_url: str) -> Iterator[tuple[Pool, SessionLog]]:
    engine = make_engine(postgres_url)
    GatewayBase.metadata.create_all(engine)
    configs = [
        OrchestratorConfig(
            name=name,
            node_url="http://127.0.0.1:1",
            broker_url="redis://127.0.0.1:1/0",
            database_url="sqlite://",
            blob_url="file:///nonexistent",
            price_per_unit=price,
            pixels_per_unit=1,
        )
        for name, price in (("a", 2), ("b", 3), ("c", 5))
    ]
    pool = Pool(configs, suspend_s=60)
    for o in pool.orchestrators:
        o.healthy, o.capacity = True, 4
    log = SessionLog(engine)
    log.open("s", "live", None)
    yield pool, log
    pool.stop()
    engine.dispose()


class Answers:
    """Each orchestrator's answer to a try, by name: an error raised, or else a value."""

    def __init__(self, errors: dict[str, BaseException]) -> None:
        self.errors = errors
        self.tried: list[str] = []
        self.suspended: list[str] = []

    def work(self, **kw: object) -> Work[str]:
        return Work(
            run=self.run,
            refused=TranscodeFailed,
            label="segment s/7",
            session_id="s",
            seq=7,
            price=attempt_price,
            billed=lambda value: (100, 42),
            duration_s=2.0,
            suspended=lambda o: self.suspended.append(o.name),
            **kw,  # type: ignore[arg-type]
        )

    def run(self, o: PoolEntry, number: int) -> str:
        self.tried.append(o.name)
        if o.name in self.errors:
            raise self.errors[o.name]
        return f"done on {o.name} at try {number}"


def _by_name(pool: Pool, name: str) -> PoolEntry:
    o = pool.by_name(name)
    assert o is not None
    return o


def _go(pool: Pool, log: SessionLog, answers: Answers, **kw: object) -> str:
    done = attempt(pool, log, answers.work(**kw), max_tries=3, deadline=time.monotonic() + 30)
    return done.value


def test_the_verdicts() -> None:
    assert classify(InputInvalid("not a container")).permanent
    assert classify(NoCapacity("full")).busy and classify(InsufficientCapacity("full")).busy
    other = classify(RedisConnectionError("refused"))
    assert not other.permanent and not other.busy and other.code == "ConnectionError"


def test_the_callers_input_stops_at_once_and_suspends_nobody(
    world: tuple[Pool, SessionLog],
) -> None:
    pool, log = world
    answers = Answers({name: InputInvalid("not a media container") for name in "abc"})
    with pytest.raises(TranscodeFailed, match="not a media container"):
        _go(pool, log, answers)
    assert len(answers.tried) == 1 and answers.suspended == []
    assert not any(o.suspended() for o in pool.orchestrators)
    (row,) = log.get("s")["attempts"]
    assert (row["seq"], row["attempt"], row["outcome"]) == (7, 1, "failed")
    assert row["error_code"] == "input_invalid"


def test_a_full_orchestrator_is_passed_over_and_kept(world: tuple[Pool, SessionLog]) -> None:
    pool, log = world
    answers = Answers({"a": NoCapacity("no live worker"), "b": InsufficientCapacity("busy")})
    value = _go(pool, log, answers, prefer="a", tier=lambda o: "abc".index(o.name))
    assert answers.tried == ["a", "b", "c"] and value == "done on c at try 3"
    assert not any(o.suspended() for o in pool.orchestrators) and answers.suspended == []
    assert _by_name(pool, "a").success == 1.0  # being full is not failing
    rows = log.get("s")["attempts"]
    assert [(r["orchestrator"], r["outcome"]) for r in rows] == [
        ("a", "failed"),
        ("b", "failed"),
        ("c", "done"),
    ]
    assert [r["error_code"] for r in rows[:2]] == ["no_capacity", "insufficient_capacity"]
    done = rows[2]
    assert (done["price_per_unit"], done["pixels"], done["cost"]) == (5, 100, 42)


def test_any_other_failure_suspends_and_moves_on(world: tuple[Pool, SessionLog]) -> None:
    pool, log = world
    refused = RedisConnectionError("Error 111 connecting to 10.1.2.3:6379. Refused.")
    answers = Answers({"a": refused, "b": refused})
    value = _go(pool, log, answers, tier=lambda o: "abc".index(o.name))
    assert value == "done on c at try 3"
    assert answers.suspended == ["a", "b"]
    assert [o.name for o in pool.orchestrators if o.suspended()] == ["a", "b"]
    assert _by_name(pool, "a").success < 1.0
    errors = [r["error"] for r in log.get("s")["attempts"] if r["outcome"] == "failed"]
    assert len(errors) == 2 and not any("10.1.2.3" in e for e in errors)


def test_out_of_orchestrators_is_no_orchestrators_with_retry_after(
    world: tuple[Pool, SessionLog],
) -> None:
    pool, log = world
    answers = Answers({name: RedisConnectionError("refused") for name in "abc"})
    with pytest.raises(NoOrchestrators) as e:
        _go(pool, log, answers, tier=lambda o: None if o.name == "c" else 0)
    assert sorted(answers.tried) == ["a", "b"]  # c was not eligible
    assert str(e.value).endswith(": ConnectionError") and "2 attempt(s)" in str(e.value)
    assert e.value.retry_after is not None and e.value.retry_after >= 1


def test_one_price_decides_what_is_charged_and_logged(world: tuple[Pool, SessionLog]) -> None:
    pool, _ = world
    assert attempt_price(_by_name(pool, "b")) == (3, 1)
    assert attempt_price(_by_name(pool, "b"), (7, 2)) == (7, 2)  # a request's own price
    assert attempt_price(None) == (0, 1)
    assert highest_price(pool.orchestrators) == (5, 1)

"""The retry loop's verdicts: the caller's input never suspends an orchestrator, and what the
caller is told never holds the farm's job ids or the gateway's addresses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from farm.client import JobFailedError
from farm.jobs import make_engine
from farm.jobs.models import utcnow
from farm.jobs.store import JobView
from farm.media.profiles import VideoProfile
from gateway.dispatch import Dispatcher, Segment, SegmentOutcome
from gateway.errors import NoOrchestrators, TranscodeFailed
from gateway.models import GatewayBase
from gateway.pool import Pool, PoolEntry
from gateway.sessions import SessionLog
from gateway.settings import OrchestratorConfig


def _failed_job(code: str, error: str) -> JobFailedError:
    job_id = uuid.uuid4().hex
    now = utcnow()
    view = JobView(
        id=job_id,
        kind="transcode",
        state="failed",
        queue="transcode.cpu.h264",
        spec={},
        task_id=f"{job_id}.1",
        attempts=3,
        publishes=1,
        result=None,
        error_code=code,
        error=error.format(job=job_id),
        created_at=now,
        finished_at=now,
        completed_by=None,
    )
    return JobFailedError(view)


class _Scripted(Dispatcher):
    """The real retry loop, with each orchestrator's answer given by the test (the one seam:
    a job's outcome on a cluster, which these tests need to choose)."""

    def __init__(self, pool: Pool, log: SessionLog, answers: dict[str, BaseException]) -> None:
        super().__init__(pool, log, max_attempts=3)
        self.answers = answers
        self.tried: list[str] = []

    def try_on(
        self,
        o: PoolEntry,
        segment: Segment,
        deadline: float,
        attempt: int,
        *,
        keep_session: bool = True,
    ) -> SegmentOutcome:
        self.tried.append(o.name)
        raise self.answers[o.name]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Pool, SessionLog]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'gw.db'}")
    GatewayBase.metadata.create_all(engine)
    configs = [
        OrchestratorConfig(
            name=name,
            node_url="http://127.0.0.1:1",
            broker_url="redis://127.0.0.1:1/0",
            database_url="sqlite://",
            blob_url="file:///nonexistent",
        )
        for name in ("a", "b")
    ]
    pool = Pool(configs, suspend_s=60)
    for o in pool.orchestrators:
        o.healthy, o.capacity = True, 4
    log = SessionLog(engine)
    log.open("s", "live", None)
    yield pool, log
    engine.dispose()


PROFILE = [VideoProfile("low", 256, 144, 300_000)]


@pytest.mark.parametrize(
    "code",
    ["input_invalid", "profile_invalid", "input_corrupt", "unsupported_codec", "input_missing"],
)
def test_the_callers_input_suspends_no_orchestrator(
    world: tuple[Pool, SessionLog], code: str
) -> None:
    pool, log = world
    failure = _failed_job(code, "job {job} failed on input: not a media container")
    d = _Scripted(pool, log, {"a": failure, "b": failure})
    with pytest.raises(TranscodeFailed) as e:
        d.run(Segment("s", 0, b"x", PROFILE, 2.0))
    assert failure.job.id not in str(e.value)
    assert "not a media container" in str(e.value)
    assert len(d.tried) == 1  # not retried elsewhere
    assert not any(o.suspended() for o in pool.orchestrators)
    attempt = log.get("s")["attempts"][-1]
    assert attempt["error_code"] == code and failure.job.id not in attempt["error"]


def test_an_orchestrators_failure_suspends_it_and_tells_no_ids_or_addresses(
    world: tuple[Pool, SessionLog],
) -> None:
    pool, log = world
    crashed = _failed_job("job_failed", "job {job}: gave up: jobs/{job}/out/low.ts unwritable")
    unreachable = RedisConnectionError("Error 111 connecting to 10.1.2.3:6379. Refused.")
    d = _Scripted(pool, log, {"a": crashed, "b": unreachable})
    with pytest.raises(NoOrchestrators) as e:
        d.run(Segment("s", 0, b"x", PROFILE, 2.0))
    message = str(e.value)
    assert crashed.job.id not in message and "10.1.2.3" not in message
    assert message.endswith("last: b: ConnectionError") or message.endswith("last: a: job_failed")
    assert all(o.suspended() for o in pool.orchestrators)
    errors = " ".join(a["error"] for a in log.get("s")["attempts"])
    assert crashed.job.id not in errors and "10.1.2.3" not in errors


def test_a_segment_only_the_engine_can_take_goes_only_to_farm_clusters(
    world: tuple[Pool, SessionLog],
) -> None:
    # A codec go-livepeer does not decode, a kept display matrix or a primer: a network
    # orchestrator would fail it or return it wrong, so it is never tried there.
    pool, log = world
    network = OrchestratorConfig(name="net", kind="livepeer", address="https://127.0.0.1:1")

    def up(configs: list[OrchestratorConfig]) -> Pool:
        made = Pool(configs, suspend_s=60)
        for o in made.orchestrators:
            o.healthy, o.capacity = True, 4
        return made

    mixed = up([network, *(o.config for o in pool.orchestrators)])
    assert mixed.has_clusters() and pool.has_clusters()
    assert not Pool([network]).has_clusters() and not Pool([]).has_clusters()
    segment = Segment("s", 0, b"x", PROFILE, 2.0, engine_only=True)
    assert not segment.takes(mixed.by_name("net"))  # type: ignore[arg-type]
    assert all(segment.takes(o) for o in pool.orchestrators)
    down = {o.name: RedisConnectionError("refused") for o in mixed.orchestrators}
    anywhere = _Scripted(mixed, log, down)
    with pytest.raises(NoOrchestrators):
        anywhere.run(Segment("s", 0, b"x", PROFILE, 2.0))
    assert "net" in anywhere.tried  # a segment any orchestrator can take is tried there
    d = _Scripted(up([network, *(o.config for o in pool.orchestrators)]), log, down)
    with pytest.raises(NoOrchestrators):
        d.run(segment)
    assert d.tried and "net" not in d.tried
    d = _Scripted(up([network]), log, down)
    with pytest.raises(NoOrchestrators):
        d.run(segment)
    assert d.tried == []

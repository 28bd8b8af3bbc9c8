"""Job persistence: written before publishing, finished exactly once, reconciled on a beat."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Engine,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from chain.schema import create_tables
from farm import metrics
from farm.errors import JobExists, JobNotFound
from farm.jobs import pg
from farm.jobs.lane import Lane
from farm.jobs.models import Attempt, Base, Job, JobState, Meta, utcnow

__all__ = [
    "AttemptView",
    "JobExists",
    "JobNotFound",
    "JobStore",
    "JobView",
    "StartOutcome",
    "make_engine",
]


@dataclass(frozen=True, slots=True)
class StartOutcome:
    """What claiming a job for an attempt found: started, stale, final or exhausted."""

    status: str
    attempts: int

    @property
    def started(self) -> bool:
        return self.status == "started"


@dataclass(frozen=True, slots=True)
class AttemptView:
    """One attempt, detached from the database session."""

    task_id: str
    worker: str
    outcome: str
    started_at: datetime
    finished_at: datetime | None
    error_code: str | None
    error: str | None
    timings: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as read from the table, detached from the database session."""

    id: str
    kind: str
    state: str
    queue: str
    spec: dict[str, Any]
    task_id: str
    attempts: int
    publishes: int
    result: dict[str, Any] | None
    error_code: str | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    completed_by: str | None
    worker: str | None = None
    attempt_log: tuple[AttemptView, ...] = ()
    #: When the job was last published, claimed or finished: since then it has waited.
    updated_at: datetime | None = None

    @property
    def final(self) -> bool:
        return self.state in JobState.FINAL


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine; SQLite gets WAL and a busy timeout so workers can share it."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    # A database host that drops off the network answers no connection attempt: without a
    # bound, every caller (a submit, a claim, the reconciler) would wait on the kernel's TCP
    # retries for minutes instead of hearing that the store is unreachable.
    connect_args = {} if "connect_timeout" in make_url(url).query else {"connect_timeout": 5}
    engine = create_engine(url, pool_size=5, max_overflow=5, connect_args=connect_args)
    _ping_when_idle(engine, IDLE_PING_S)
    return engine


#: A pooled connection unused for this long is pinged before it is handed out again.
IDLE_PING_S = 1.0


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    """SQLAlchemy's ``pool_pre_ping``, but only for a connection that sat idle in the pool.

    A ping is a round trip, and a busy worker checks a connection out three times per
    segment; one it used a moment ago is as good as the ping would say. A connection that
    waited (a quiet process, or a database that restarted meanwhile) is pinged, and a dead
    one is replaced before anyone uses it. A database that drops while connections are busy
    fails the statements in flight, as it would with a ping, and SQLAlchemy then discards
    the whole pool.
    """

    @event.listens_for(engine, "connect")
    def _connected(_dbapi: Any, record: Any) -> None:
        record.info["farm_used_at"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi: Any, record: Any) -> None:
        if record is not None:
            record.info["farm_used_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _handed_out(dbapi: Any, record: Any, _proxy: Any) -> None:
        used_at = record.info.get("farm_used_at")
        if used_at is not None and time.monotonic() - used_at < idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi)
        except engine.dialect.loaded_dbapi.Error as e:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError(f"idle connection is dead: {e}") from e


def _view(job: Job, with_attempts: bool = False) -> JobView:
    attempts: tuple[AttemptView, ...] = ()
    if with_attempts:
        attempts = tuple(
            AttemptView(
                a.task_id,
                a.worker,
                a.outcome,
                a.started_at,
                a.finished_at,
                a.error_code,
                a.error,
                a.timings,
            )
            for a in job.attempt_log
        )
    return JobView(
        id=job.id,
        kind=job.kind,
        state=job.state,
        queue=job.queue,
        spec=job.spec,
        task_id=job.task_id,
        attempts=job.attempts,
        publishes=job.publishes,
        result=job.result,
        error_code=job.error_code,
        error=job.error,
        created_at=job.created_at,
        finished_at=job.finished_at,
        completed_by=job.completed_by,
        worker=job.worker,
        attempt_log=attempts,
        # SQLite hands back naive datetimes; every time here is UTC.
        updated_at=job.updated_at.replace(tzinfo=UTC)
        if job.updated_at.tzinfo is None
        else job.updated_at,
    )


class JobStore:
    """The job table behind a small interface the farm uses."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        self.engine = (
            make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._postgres = self.engine.dialect.name == "postgresql"
        #: The per-segment statements on PostgreSQL (farm.jobs.pg), on psycopg directly;
        #: its connections close with the engine's (``engine.dispose()``).
        self._lane: Lane | None = None
        if self._postgres:
            lane = self._lane = Lane(self.engine.url, idle_ping_s=IDLE_PING_S)
            event.listen(self.engine, "engine_disposed", lambda _engine: lane.close())

    def create_schema(self) -> None:
        create_tables(Base.metadata, self.engine)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def create(
        self,
        job_id: str,
        *,
        kind: str,
        queue: str,
        spec: dict[str, Any],
        task_id: str,
        timeout_s: float,
        queued_timeout_s: float = 60.0,
    ) -> JobView:
        """Record an accepted job; call before publishing its task.

        ``timeout_s`` bounds a run; ``queued_timeout_s`` bounds the wait in the queue. Past
        either, the reconciler republishes the job.
        """
        now = utcnow()
        values = {
            "id": job_id,
            "kind": kind,
            "state": JobState.QUEUED,
            "queue": queue,
            "spec": spec,
            "task_id": task_id,
            "attempts": 0,
            "publishes": 1,
            "timeout_s": timeout_s,
            "queued_timeout_s": queued_timeout_s,
            "created_at": now,
            "updated_at": now,
            "deadline_at": now + timedelta(seconds=queued_timeout_s),
        }
        try:
            if self._lane is not None:
                pg.create(self._lane, values)
            else:
                with self.engine.begin() as conn:
                    conn.execute(_INSERT_JOB, values)
        except IntegrityError as e:
            raise JobExists(f"job {job_id!r} exists") from e
        return JobView(
            id=job_id,
            kind=kind,
            state=JobState.QUEUED,
            queue=queue,
            spec=spec,
            task_id=task_id,
            attempts=0,
            publishes=1,
            result=None,
            error_code=None,
            error=None,
            created_at=now,
            finished_at=None,
            completed_by=None,
        )

    def get(self, job_id: str, with_attempts: bool = False) -> JobView:
        with self._session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise JobNotFound(f"no job {job_id!r}")
            return _view(job, with_attempts)

    def last_error(self, job_id: str) -> str | None:
        """The error its last failed attempt recorded."""
        return self.get(job_id).error

    def start_attempt(
        self,
        job_id: str,
        task_id: str,
        worker: str,
        instance: str | None = None,
        max_attempts: int | None = None,
        run_timeout_s: float = 60.0,
    ) -> StartOutcome:
        """Claim the job for a new attempt, in one statement that also checks the message.

        The claim fails (and nothing changes) when the job is final or when ``task_id`` is not
        the job's current message (a superseded or redelivered copy). ``instance`` is the
        worker's name in the capability registry: when its heartbeat stops, the reconciler
        republishes the job without waiting for the deadline.
        """
        now = utcnow()
        if self._lane is not None:
            attempts_now, state, lost = pg.claim(
                self._lane,
                job_id=job_id,
                task_id=task_id,
                worker=worker,
                instance=instance,
                now=now,
                deadline=now + timedelta(seconds=run_timeout_s),
            )
            if attempts_now is None:
                if state is None:
                    raise JobNotFound(f"no job {job_id!r}")
                return StartOutcome("final" if state in JobState.FINAL else "stale", 0)
            metrics.attempts_lost(lost)
            if max_attempts is not None and attempts_now > max_attempts:
                return StartOutcome("exhausted", attempts_now)
            return StartOutcome("started", attempts_now)
        with self._session() as s:
            claimed = _exec(
                s,
                update(Job)
                .where(Job.id == job_id, Job.task_id == task_id, Job.state.not_in(JobState.FINAL))
                .values(
                    state=JobState.RUNNING,
                    attempts=Job.attempts + 1,
                    updated_at=now,
                    deadline_at=now + timedelta(seconds=run_timeout_s),
                    worker=instance,
                )
                .returning(Job.attempts),
            ).first()
            if claimed is None:
                row = s.execute(select(Job.state).where(Job.id == job_id)).first()
                if row is None:
                    raise JobNotFound(f"no job {job_id!r}")
                return StartOutcome("final" if row[0] in JobState.FINAL else "stale", 0)
            attempts = int(claimed[0])
            # An attempt still marked running lost its worker (killed, evicted, timed out).
            if attempts > 1:
                lost = _exec(
                    s,
                    update(Attempt)
                    .where(Attempt.job_id == job_id, Attempt.outcome == "running")
                    .values(
                        outcome="lost",
                        finished_at=now,
                        error_code="worker_lost",
                        error="the worker stopped before finishing this attempt",
                    ),
                ).rowcount
                metrics.attempts_lost(lost)
            s.execute(
                insert(Attempt).values(
                    job_id=job_id, task_id=task_id, worker=worker, started_at=now, outcome="running"
                )
            )
            if max_attempts is not None and attempts > max_attempts:
                return StartOutcome("exhausted", attempts)
            return StartOutcome("started", attempts)

    def _finish_attempt(
        self,
        s: Session,
        job_id: str,
        task_id: str,
        worker: str,
        outcome: str,
        code: str | None,
        error: str | None,
        timings: dict[str, Any] | None,
    ) -> None:
        s.execute(
            update(Attempt)
            .where(
                Attempt.job_id == job_id,
                Attempt.task_id == task_id,
                Attempt.worker == worker,
                Attempt.outcome == "running",
            )
            .values(
                outcome=outcome, error_code=code, error=error, finished_at=utcnow(), timings=timings
            )
        )

    def complete(
        self,
        job_id: str,
        task_id: str,
        worker: str,
        result: dict[str, Any],
        timings: dict[str, Any] | None = None,
    ) -> bool:
        """Record the result; True only for the first attempt to finish (exactly once)."""
        if self._lane is not None:
            return pg.complete(
                self._lane,
                job_id=job_id,
                task_id=task_id,
                worker=worker,
                result=result,
                timings=timings,
                now=utcnow(),
            )
        with self._session() as s:
            won = _exec(
                s,
                update(Job)
                .where(Job.id == job_id, Job.state.not_in(JobState.FINAL))
                .values(
                    state=JobState.DONE,
                    result=result,
                    finished_at=utcnow(),
                    updated_at=utcnow(),
                    completed_by=f"{worker}:{task_id}",
                    error_code=None,
                    error=None,
                ),
            ).rowcount
            # As on PostgreSQL (farm.jobs.pg): the winner's attempt is done even if marked lost.
            mine = (
                select(func.max(Attempt.id))
                .where(
                    Attempt.job_id == job_id, Attempt.task_id == task_id, Attempt.worker == worker
                )
                .scalar_subquery()
            )
            outcomes = ("running", "lost") if won else ("running",)
            s.execute(
                update(Attempt)
                .where(Attempt.id == mine, Attempt.outcome.in_(outcomes))
                .values(outcome="done", finished_at=utcnow(), timings=timings)
            )
            return bool(won)

    def attempt_failed(
        self, job_id: str, task_id: str, worker: str, code: str, error: str, *, final: bool
    ) -> bool:
        """Record a failed attempt; with ``final`` the job fails (if nothing finished it)."""
        with self._session() as s:
            self._finish_attempt(s, job_id, task_id, worker, "failed", code, error, None)
            values: dict[str, Any] = {"updated_at": utcnow(), "error_code": code, "error": error}
            if final:
                values.update(state=JobState.FAILED, finished_at=utcnow())
            else:
                # The retry message is queued again; bound its wait like a new job's.
                job = s.get(Job, job_id)
                wait = job.queued_timeout_s if job is not None else 60.0
                values.update(
                    state=JobState.QUEUED,
                    worker=None,
                    deadline_at=utcnow() + timedelta(seconds=wait),
                )
            return bool(
                _exec(
                    s,
                    update(Job)
                    .where(Job.id == job_id, Job.state.not_in(JobState.FINAL))
                    .values(**values),
                ).rowcount
            )

    def fail(self, job_id: str, code: str, error: str) -> bool:
        """Fail a job that is not final (used by the reconciler and the submitter)."""
        with self._session() as s:
            return bool(
                _exec(
                    s,
                    update(Job)
                    .where(Job.id == job_id, Job.state.not_in(JobState.FINAL))
                    .values(
                        state=JobState.FAILED,
                        error_code=code,
                        error=error,
                        finished_at=utcnow(),
                        updated_at=utcnow(),
                    ),
                ).rowcount
            )

    def overdue(self, now: datetime | None = None, limit: int = 100) -> list[JobView]:
        """Jobs queued or running past their deadline."""
        now = now or utcnow()
        with self._session() as s:
            jobs = s.scalars(
                select(Job)
                .where(Job.state.in_((JobState.QUEUED, JobState.RUNNING)), Job.deadline_at < now)
                .order_by(Job.deadline_at)
                .limit(limit)
            ).all()
            return [_view(j) for j in jobs]

    def republished(
        self, seen: JobView, task_id: str, queue: str, spec: dict[str, Any] | None = None
    ) -> bool:
        """Record a republish under a new task id (and a new spec, when given), as a
        compare-and-set on the generation ``seen`` was read at: its task id, publish count and
        attempt count. False, and nothing changes, when the job went final or moved on since
        (another reconciler republished it, or a worker claimed it): of two callers that saw
        the same generation, exactly one republishes it."""
        now = utcnow()
        with self._session() as s:
            wait = s.execute(select(Job.queued_timeout_s).where(Job.id == seen.id)).scalar()
            if wait is None:
                return False
            values: dict[str, Any] = {
                "task_id": task_id,
                "queue": queue,
                "state": JobState.QUEUED,
                "publishes": Job.publishes + 1,
                "updated_at": now,
                "worker": None,
                "deadline_at": now + timedelta(seconds=wait),
            }
            if spec is not None:
                values["spec"] = spec
            won = _exec(
                s,
                update(Job)
                .where(
                    Job.id == seen.id,
                    Job.task_id == seen.task_id,
                    Job.publishes == seen.publishes,
                    Job.attempts == seen.attempts,
                    Job.state.not_in(JobState.FINAL),
                )
                .values(**values),
            ).rowcount
            return bool(won)

    def await_capacity(self, job_id: str) -> bool:
        """Give an overdue job that no live worker can take more time, without counting a
        publish: it is queued again (a worker it had is gone) with a new deadline, and its
        ``updated_at`` is left alone, so it still says since when the job has waited.
        False if the job went final meanwhile."""
        with self._session() as s:
            job = s.get(Job, job_id, with_for_update=_for_update(self.engine))
            if job is None or job.state in JobState.FINAL:
                return False
            job.state = JobState.QUEUED
            job.worker = None
            job.deadline_at = utcnow() + timedelta(seconds=job.queued_timeout_s)
            return True

    def orphaned(self, live: set[str], limit: int = 100) -> list[JobView]:
        """Running jobs whose worker is no longer in the registry (it died or was evicted)."""
        with self._session() as s:
            jobs = s.scalars(
                select(Job)
                .where(Job.state == JobState.RUNNING, Job.worker.is_not(None))
                .order_by(Job.updated_at)
                .limit(limit * 10)
            ).all()
            return [_view(j) for j in jobs if j.worker not in live][:limit]

    def queued(self, before: datetime, limit: int = 1000) -> list[JobView]:
        """Jobs waiting in a queue, last published (or retried) before ``before``, oldest
        first, whatever their deadline."""
        with self._session() as s:
            jobs = s.scalars(
                select(Job)
                .where(Job.state == JobState.QUEUED, Job.updated_at < before)
                .order_by(Job.updated_at)
                .limit(limit)
            ).all()
            return [_view(j) for j in jobs]

    def waits_in(self, job_id: str, queue: str) -> bool:
        """Record that a queued job's message now waits in ``queue`` (a retry sent to another
        worker's own queue), so the reconciler finds it there if that worker goes."""
        with self._session() as s:
            return bool(
                _exec(
                    s,
                    update(Job)
                    .where(Job.id == job_id, Job.state == JobState.QUEUED)
                    .values(queue=queue, updated_at=utcnow()),
                ).rowcount
            )

    def queued_in(self, prefix: str, limit: int = 100) -> list[JobView]:
        """Jobs waiting in a queue whose name starts with ``prefix`` (workers' own queues),
        oldest first."""
        with self._session() as s:
            jobs = s.scalars(
                select(Job)
                .where(Job.state == JobState.QUEUED, Job.queue.startswith(prefix, autoescape=True))
                .order_by(Job.updated_at)
                .limit(limit)
            ).all()
            return [_view(j) for j in jobs]

    def meta(self, key: str) -> str | None:
        """A shared fact (see :class:`~farm.jobs.models.Meta`), or None."""
        with self._session() as s:
            return s.execute(select(Meta.value).where(Meta.key == key)).scalar()

    def swap_meta(self, key: str, old: str | None, new: str) -> bool:
        """Set ``key`` to ``new`` if it is ``old`` now (None: not set): a compare-and-set, so
        of several processes that saw the same ``old`` exactly one succeeds."""
        try:
            with self._session() as s:
                if old is None:
                    s.execute(insert(Meta).values(key=key, value=new, updated_at=utcnow()))
                    return True
                return bool(
                    _exec(
                        s,
                        update(Meta)
                        .where(Meta.key == key, Meta.value == old)
                        .values(value=new, updated_at=utcnow()),
                    ).rowcount
                )
        except IntegrityError:
            return False  # another process set it first

    def counts(self) -> dict[str, int]:
        with self._session() as s:
            rows = s.execute(select(Job.state, func.count()).group_by(Job.state)).all()
            return {state: int(n) for state, n in rows}

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except OperationalError:
            return False


#: Built once: a statement made per call costs a segment more than the round trip does.
_INSERT_JOB = insert(Job)


def _exec(s: Session, statement: Any) -> CursorResult[Any]:
    return cast(CursorResult[Any], s.execute(statement))


def _for_update(engine: Engine) -> bool:
    return engine.dialect.name != "sqlite"

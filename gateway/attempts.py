"""The one retry loop: every kind of work (a segment, an AI request, a cross-check) is tried
on the pool's orchestrators in turn, the way go-livepeer's broadcaster retries a segment and
``processAIRequest`` an AI request.

Each try's failure is classified once, here:

- **permanent** (:func:`is_permanent`: the farm refused the caller's input, or a failed job's
  code names a :class:`~farm.errors.PermanentError`): no other orchestrator would answer
  otherwise, so it is not retried, and the orchestrator, which did its job, is not suspended;
- **busy** (a :data:`~farm.errors.CAPACITY_ERRORS` code: no free worker, a full runner): the
  next orchestrator is tried and this one stays in the pool, its record untouched;
- **anything else** (a failed job, a timeout, an unreachable broker): the orchestrator is
  suspended and the next one tried.

Every try is folded into the pool's scores and written to the session log; out of
orchestrators, tries or time, the work fails with :class:`~gateway.errors.NoOrchestrators`.
What differs between kinds of work (how one try runs, which orchestrators are eligible and in
what order, what the log says) is the :class:`Work` they pass.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from celery.exceptions import CeleryError
from kombu.exceptions import KombuError
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from farm.client import JobFailedError, JobTimeout
from farm.errors import CAPACITY_ERRORS, FarmError, PermanentError, error_class
from gateway import metrics
from gateway.errors import NoOrchestrators
from gateway.pool import Pool, PoolEntry
from gateway.pricing import Price
from gateway.sessions import SessionLog

__all__ = ["Tried", "Verdict", "Work", "attempt", "classify", "is_permanent", "public_message"]

log = logging.getLogger(__name__)

#: Failures of a try that another orchestrator may not have (besides the farm's own errors).
INFRA_ERRORS = (OSError, RedisError, KombuError, CeleryError, SQLAlchemyError)
_JOB_ID = re.compile(r"[0-9a-f]{32}")

T = TypeVar("T")


def is_permanent(e: BaseException) -> bool:
    """Whether an attempt failed on the caller's input, so that no other orchestrator can fix
    it (go-livepeer's non-retryable errors): never retried elsewhere, never a reason to
    suspend. The farm refused the input before a job ran, or a failed job's code names a
    :class:`~farm.errors.PermanentError`."""
    return isinstance(e, PermanentError) or (
        isinstance(e, FarmError) and issubclass(error_class(e.code), PermanentError)
    )


def public_message(e: BaseException) -> str:
    """What a caller (and the session log it can read) is told about a failed attempt: the
    job's own error without the farm's job id, and nothing of the gateway's infrastructure
    (addresses, hosts) for any other failure; the operator's log has the whole of it."""
    if isinstance(e, JobFailedError):
        message = e.job.error or e.code
    elif isinstance(e, JobTimeout):
        message = "the orchestrator did not finish in time"
    elif isinstance(e, FarmError) and not isinstance(e, INFRA_ERRORS):
        message = str(e)
    else:
        message = f"the orchestrator could not be reached ({e.__class__.__name__})"
    # Farm job ids (and blob keys made of them) are uuid4 hex.
    return _JOB_ID.sub("<job>", message)


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one failed try is treated: its error code, and what the loop does next."""

    code: str
    #: The caller's input: stop, do not suspend.
    permanent: bool
    #: The orchestrator is full: try the next, do not suspend.
    busy: bool


def classify(e: BaseException) -> Verdict:
    """The one place a failed try is judged permanent, busy or the orchestrator's fault."""
    code = str(getattr(e, "code", None) or e.__class__.__name__)
    permanent = is_permanent(e)
    busy = not permanent and issubclass(error_class(code), CAPACITY_ERRORS)
    return Verdict(code, permanent, busy)


@dataclass(frozen=True, slots=True)
class Work(Generic[T]):
    """What one kind of work tells the loop: how to try it, where, and what to log."""

    #: One try on an orchestrator, given the try's number (from 1).
    run: Callable[[PoolEntry, int], T]
    #: Raised with the public message when the caller's input is refused.
    refused: Callable[[str], Exception]
    #: For the operator's log, e.g. ``"segment s/3"``.
    label: str
    #: The session log row's session and sequence number; no session: tries are not logged
    #: there (a cross-check logs its verdict itself).
    session_id: str | None = None
    seq: int = 0
    #: The price a try on an orchestrator is charged and logged at.
    price: Callable[[PoolEntry], Price] = lambda o: (0, 1)
    #: The (pixels or units, credits) a success is logged with.
    billed: Callable[[T], tuple[int, int]] = lambda value: (0, 0)
    #: Seconds of media the work holds (the pool's latency score); 0: none.
    duration_s: float = 0.0
    #: Eligibility and order (see :meth:`Pool.walk`): a tier per orchestrator, lowest first,
    #: None leaving one out; and the orchestrator to try first while it is a candidate.
    tier: Callable[[PoolEntry], int | None] | None = None
    prefer: str | None = None
    #: Called after an orchestrator is suspended (a stream ends its session there).
    suspended: Callable[[PoolEntry], None] | None = None


@dataclass(frozen=True, slots=True)
class Tried(Generic[T]):
    """Work done: the orchestrator that did it, after how many tries, and its value."""

    orchestrator: PoolEntry
    attempts: int
    value: T


def attempt(
    pool: Pool,
    sessions: SessionLog | None,
    work: Work[T],
    *,
    max_tries: int,
    deadline: float,
) -> Tried[T]:
    """Try ``work`` on the pool's orchestrators in turn, each once, within ``max_tries`` and
    ``deadline`` (monotonic)."""
    last_error = "no healthy orchestrator"
    tries = 0
    for o in pool.walk(max_tries, deadline, work.tier, prefer=work.prefer):
        tries += 1
        if tries > 1:
            metrics.orchestrator_swap(last_error)
        started = time.monotonic()
        try:
            value = work.run(o, tries)
        except (FarmError, *INFRA_ERRORS) as e:
            verdict = classify(e)
            latency = time.monotonic() - started
            log.info("%s attempt %s on %s failed: %s", work.label, tries, o.name, e)
            _log(sessions, work, tries, o, latency, error=(verdict.code, public_message(e)))
            if verdict.permanent:
                # The orchestrator did its job: the input is the caller's to fix.
                pool.record(o, True, latency, work.duration_s)
                raise work.refused(public_message(e)) from e
            last_error = f"{o.name}: {verdict.code}"
            if verdict.busy:
                continue  # being full is not failing
            pool.record(o, False, latency, work.duration_s)
            pool.suspend(o, f"{last_error}: {e}")
            if work.suspended is not None:
                work.suspended(o)
            continue
        latency = time.monotonic() - started
        pool.record(o, True, latency, work.duration_s)
        _log(sessions, work, tries, o, latency, billed=work.billed(value))
        return Tried(o, tries, value)
    raise NoOrchestrators(
        f"no orchestrator finished {work.label} after {tries} attempt(s); last: {last_error}"
    ).with_retry_after(pool.retry_after())


def _log(
    sessions: SessionLog | None,
    work: Work[T],
    number: int,
    o: PoolEntry,
    latency: float,
    *,
    billed: tuple[int, int] = (0, 0),
    error: tuple[str, str] | None = None,
) -> None:
    if sessions is None or work.session_id is None:
        return
    sessions.attempt(
        work.session_id,
        work.seq,
        number,
        o.name,
        latency,
        "done" if error is None else "failed",
        price=work.price(o),
        pixels=billed[0],
        cost=billed[1],
        error_code=None if error is None else error[0][:64],
        error=None if error is None else error[1][:2000],
    )

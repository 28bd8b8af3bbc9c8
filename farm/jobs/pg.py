"""PostgreSQL single-statement forms of the three writes every segment makes.

Recording a job, claiming it and recording its result: the claim and the result each touch
two tables, and on PostgreSQL both happen in one statement (data-modifying CTEs) run in
autocommit mode: one round trip instead of four, and the same atomicity, since a single
statement is its own transaction. All three run on psycopg directly (farm.jobs.lane). The
generic path in :mod:`farm.jobs.store` does the same work in an explicit transaction on other
databases.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from farm.jobs.lane import Lane

__all__ = ["claim", "complete", "create"]

_CREATE = """
INSERT INTO farm_jobs (id, kind, state, queue, spec, task_id, attempts, publishes, timeout_s,
                       queued_timeout_s, created_at, updated_at, deadline_at)
VALUES (%(id)s, %(kind)s, %(state)s, %(queue)s, CAST(%(spec)s AS json), %(task_id)s,
        %(attempts)s, %(publishes)s, %(timeout_s)s, %(queued_timeout_s)s, %(created_at)s,
        %(updated_at)s, %(deadline_at)s)
"""

# A claim commits without waiting for its WAL flush (synchronous_commit off for this one
# transaction): only a crash of the database server itself can lose it, within
# wal_writer_delay, and then the job is as it was before the claim, which the reconciler and
# the attempt's own completion (a durable commit, which flushes every earlier one) both
# handle. The job row before publish and the completion stay durable.
_CLAIM = """
WITH claimed AS (
    UPDATE farm_jobs
       SET state = 'running', attempts = attempts + 1, updated_at = %(now)s,
           deadline_at = %(deadline)s, worker = %(instance)s
     WHERE id = %(job_id)s AND task_id = %(task_id)s AND state NOT IN ('done', 'failed')
       AND set_config('synchronous_commit', 'off', true) IS NOT NULL
    RETURNING attempts
), lost AS (
    UPDATE farm_attempts
       SET outcome = 'lost', finished_at = %(now)s, error_code = 'worker_lost',
           error = 'the worker stopped before finishing this attempt'
     WHERE job_id = %(job_id)s AND outcome = 'running' AND EXISTS (SELECT 1 FROM claimed)
    RETURNING 1
), added AS (
    INSERT INTO farm_attempts (job_id, task_id, worker, started_at, outcome)
    SELECT %(job_id)s, %(task_id)s, %(worker)s, %(now)s, 'running' FROM claimed
)
SELECT attempts, (SELECT state FROM farm_jobs WHERE id = %(job_id)s), (SELECT count(*) FROM lost)
  FROM claimed
UNION ALL
SELECT NULL, state, 0 FROM farm_jobs WHERE id = %(job_id)s AND NOT EXISTS (SELECT 1 FROM claimed)
"""

# The winner's attempt is "done" even when a later claim marked it "lost" meanwhile (the
# reconciler gave up on it, yet it finished first), so the attempt log agrees with
# completed_by; a losing attempt that was still running is "done" too, and one marked lost
# stays lost.
_COMPLETE = """
WITH won AS (
    UPDATE farm_jobs
       SET state = 'done', result = CAST(%(result)s AS json), finished_at = %(now)s,
           updated_at = %(now)s, completed_by = %(completed_by)s, error_code = NULL, error = NULL
     WHERE id = %(job_id)s AND state NOT IN ('done', 'failed')
    RETURNING id
), finished AS (
    UPDATE farm_attempts
       SET outcome = 'done', finished_at = %(now)s, timings = CAST(%(timings)s AS json)
     WHERE id = (SELECT max(id) FROM farm_attempts
                  WHERE job_id = %(job_id)s AND task_id = %(task_id)s AND worker = %(worker)s)
       AND (outcome = 'running' OR (outcome = 'lost' AND EXISTS (SELECT 1 FROM won)))
)
SELECT count(*) FROM won
"""


def create(lane: Lane, values: dict[str, Any]) -> None:
    """Insert the job's row (``values``: its columns, ``spec`` a dict), a durable commit."""
    lane.rows(_CREATE, {**values, "spec": json.dumps(values["spec"])})


def claim(
    lane: Lane,
    *,
    job_id: str,
    task_id: str,
    worker: str,
    instance: str | None,
    now: datetime,
    deadline: datetime,
) -> tuple[int | None, str | None, int]:
    """(attempts, None, lost) when claimed, ``lost`` the earlier attempts it found still
    running (their worker died); (None, state, 0) when not; (None, None, 0) when no such job."""
    rows = lane.rows(
        _CLAIM,
        {
            "job_id": job_id,
            "task_id": task_id,
            "worker": worker,
            "instance": instance,
            "now": now,
            "deadline": deadline,
        },
    )
    if not rows:
        return None, None, 0
    row = rows[0]
    if row[0] is None:
        return None, str(row[1]), 0
    return int(row[0]), None, int(row[2])


def complete(
    lane: Lane,
    *,
    job_id: str,
    task_id: str,
    worker: str,
    result: dict[str, Any],
    timings: dict[str, Any] | None,
    now: datetime,
) -> bool:
    """Record the result; True when this call finished the job."""
    rows = lane.rows(
        _COMPLETE,
        {
            "job_id": job_id,
            "task_id": task_id,
            "worker": worker,
            "now": now,
            "result": json.dumps(result),
            "timings": json.dumps(timings),
            "completed_by": f"{worker}:{task_id}",
        },
    )
    return bool(rows and rows[0][0])

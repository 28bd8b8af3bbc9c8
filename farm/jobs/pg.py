"""PostgreSQL single-statement forms of the two writes every segment makes.

Claiming a job and recording its result each touch two tables. On PostgreSQL both happen in
one statement (data-modifying CTEs) run in autocommit mode: one round trip instead of four,
and the same atomicity, since a single statement is its own transaction. The generic path in
:mod:`farm.jobs.store` does the same work in an explicit transaction on other databases.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

__all__ = ["claim", "complete"]

# A claim commits without waiting for its WAL flush (synchronous_commit off for this one
# transaction): only a crash of the database server itself can lose it, within
# wal_writer_delay, and then the job is as it was before the claim, which the reconciler and
# the attempt's own completion (a durable commit, which flushes every earlier one) both
# handle. The job row before publish and the completion stay durable.
_CLAIM = text("""
WITH claimed AS (
    UPDATE farm_jobs
       SET state = 'running', attempts = attempts + 1, updated_at = :now,
           deadline_at = :deadline, worker = :instance
     WHERE id = :job_id AND task_id = :task_id AND state NOT IN ('done', 'failed')
       AND set_config('synchronous_commit', 'off', true) IS NOT NULL
    RETURNING attempts
), lost AS (
    UPDATE farm_attempts
       SET outcome = 'lost', finished_at = :now, error_code = 'worker_lost',
           error = 'the worker stopped before finishing this attempt'
     WHERE job_id = :job_id AND outcome = 'running' AND EXISTS (SELECT 1 FROM claimed)
    RETURNING 1
), added AS (
    INSERT INTO farm_attempts (job_id, task_id, worker, started_at, outcome)
    SELECT :job_id, :task_id, :worker, :now, 'running' FROM claimed
)
SELECT attempts, (SELECT state FROM farm_jobs WHERE id = :job_id), (SELECT count(*) FROM lost)
  FROM claimed
UNION ALL
SELECT NULL, state, 0 FROM farm_jobs WHERE id = :job_id AND NOT EXISTS (SELECT 1 FROM claimed)
""")

# The winner's attempt is "done" even when a later claim marked it "lost" meanwhile (the
# reconciler gave up on it, yet it finished first), so the attempt log agrees with
# completed_by; a losing attempt that was still running is "done" too, and one marked lost
# stays lost.
_COMPLETE = text("""
WITH won AS (
    UPDATE farm_jobs
       SET state = 'done', result = CAST(:result AS json), finished_at = :now,
           updated_at = :now, completed_by = :completed_by, error_code = NULL, error = NULL
     WHERE id = :job_id AND state NOT IN ('done', 'failed')
    RETURNING id
), finished AS (
    UPDATE farm_attempts
       SET outcome = 'done', finished_at = :now, timings = CAST(:timings AS json)
     WHERE id = (SELECT max(id) FROM farm_attempts
                  WHERE job_id = :job_id AND task_id = :task_id AND worker = :worker)
       AND (outcome = 'running' OR (outcome = 'lost' AND EXISTS (SELECT 1 FROM won)))
)
SELECT count(*) FROM won
""")


def claim(
    conn: Connection,
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
    row = conn.execute(
        _CLAIM,
        {
            "job_id": job_id,
            "task_id": task_id,
            "worker": worker,
            "instance": instance,
            "now": now,
            "deadline": deadline,
        },
    ).first()
    if row is None:
        return None, None, 0
    if row[0] is None:
        return None, str(row[1]), 0
    return int(row[0]), None, int(row[2])


def complete(
    conn: Connection,
    *,
    job_id: str,
    task_id: str,
    worker: str,
    result: dict[str, Any],
    timings: dict[str, Any] | None,
    now: datetime,
) -> bool:
    """Record the result; True when this call finished the job."""
    won = conn.execute(
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
    ).scalar()
    return bool(won)

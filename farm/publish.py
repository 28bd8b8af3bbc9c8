"""Publishing jobs to the Celery queues: the transcode task, with time limits from the
segment's duration, and the AI task; one message shape each."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from celery import Celery

from farm.media.profiles import VideoProfile
from farm.queues import codec_of
from farm.router import Need
from farm.timeouts import segment_timeout

__all__ = [
    "AI_TASK",
    "TRANSCODE_TASK",
    "job_timeout_s",
    "need_of",
    "publish",
    "publish_ai",
    "time_limits",
]

TRANSCODE_TASK = "farm.transcode"
AI_TASK = "farm.ai"


def time_limits(duration_s: float | None) -> tuple[float, float]:
    """(soft, hard) limits. The soft limit bounds the transcode: go-livepeer's max(8 s,
    4 x duration). The hard limit comes after the job's deadline (job_timeout_s): a worker
    keeps a finished result until the job store records it, up to that deadline, and is not
    killed while it waits; only a transcode that ignores its soft limit is."""
    return segment_timeout(duration_s), job_timeout_s(duration_s) + 2.0


def job_timeout_s(duration_s: float | None) -> float:
    """How long one run of a job may take before the reconciler republishes it: the soft
    limit and 10 s to store and record its result."""
    return segment_timeout(duration_s) + 10.0


def need_of(profiles: Sequence[VideoProfile], device: str = "any") -> Need:
    """The routing need of a ladder: its codec (one per job) and its rendition count."""
    codecs = {codec_of(p.encoder) for p in profiles}
    codec = "h264" if "h264" in codecs or len(codecs) != 1 else next(iter(codecs))
    return Need(codec=codec, renditions=len(profiles), device=device)


def publish(app: Celery, *, queue: str, job_id: str, task_id: str, spec: dict[str, Any]) -> None:
    """Send the transcode task for a job; the spec is the whole message (no media)."""
    soft, hard = time_limits(spec.get("duration"))
    _send(
        app,
        TRANSCODE_TASK,
        queue=queue,
        job_id=job_id,
        task_id=task_id,
        spec=spec,
        soft_time_limit=math.ceil(soft),
        time_limit=math.ceil(hard),
    )


def publish_ai(app: Celery, *, queue: str, job_id: str, task_id: str, spec: dict[str, Any]) -> None:
    """Send the AI task for a job; the spec holds blob keys, never file bytes."""
    _send(app, AI_TASK, queue=queue, job_id=job_id, task_id=task_id, spec=spec)


def _send(
    app: Celery,
    name: str,
    *,
    queue: str,
    job_id: str,
    task_id: str,
    spec: dict[str, Any],
    **limits: int,
) -> None:
    """A job whose submitter listens for its notice (farm.notices) has no result in Celery's
    backend: nothing would read it, and storing it is a write on the job's path. Nothing
    reads the handle Celery returns either, so it is a bare one: Celery's own would fetch
    the calling thread's result backend, which it builds anew in every thread."""
    notified = bool(spec.get("notify"))
    app.send_task(
        name,
        args=[job_id, spec],
        task_id=task_id,
        queue=queue,
        ignore_result=notified,
        result_cls=_Sent if notified else None,
        add_to_parent=not notified,  # a task that publishes another keeps no trail of it
        **limits,
    )


class _Sent:
    """What ``send_task`` answers for a task nobody will ask about: its id and nothing else."""

    __slots__ = ("id", "ignored")

    def __init__(self, task_id: str) -> None:
        self.id = task_id
        self.ignored = True

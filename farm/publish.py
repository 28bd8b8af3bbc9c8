"""Publishing jobs to the Celery queues: the transcode task, with time limits from the
segment's duration, and the AI task; one message shape each.

On a Redis broker, a job whose submitter hears of it by notice (farm.notices) is written to
its queue here, as Celery's own producer would write it (:class:`_RedisQueues`): Celery's
``send_task`` spends about 1 ms of CPU per publish after an idle wait (routing, the message's
representation for monitors, the producer pool, signals), where one LPUSH of the same message
spends about 0.5.
"""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import threading
import uuid
import weakref
from collections.abc import Sequence
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from redis.backoff import ConstantBackoff
from redis.retry import Retry

from farm.media.profiles import VideoProfile
from farm.queues import codec_of
from farm.router import Need
from farm.timeouts import segment_timeout

__all__ = [
    "AI_TASK",
    "TRANSCODE_TASK",
    "close_queues",
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
    queues = _redis_queues(app) if notified else None
    if queues is not None:
        queues.send(name, queue=queue, task_id=task_id, args=[job_id, spec], **limits)
        return
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


#: Each app's direct writer to its Redis broker's queues (None: its broker is not Redis).
_QUEUES: weakref.WeakKeyDictionary[Celery, _RedisQueues | None] = weakref.WeakKeyDictionary()
_QUEUES_LOCK = threading.Lock()


def close_queues(app: Celery) -> None:
    """Close ``app``'s direct connection to its broker's queues, if it made one (a later
    publish makes it again)."""
    with _QUEUES_LOCK:
        queues = _QUEUES.pop(app, None)
    if queues is not None:
        queues.client.close()


def _redis_queues(app: Celery) -> _RedisQueues | None:
    with _QUEUES_LOCK:
        if app not in _QUEUES:
            _QUEUES[app] = _RedisQueues.for_app(app)
        return _QUEUES[app]


class _RedisQueues:
    """Writes task messages onto a Redis broker's queues exactly as Celery's producer does:
    Celery's message protocol 2 (headers, and a JSON body of args, kwargs and the empty
    workflow) in kombu's Redis envelope (base64 body, delivery info and tag), pushed on the
    list named after the queue (priority 0, the only one the farm uses). Workers, Flower and
    the reconciler see no difference. What Celery would add for a caller that reads the
    result (reply_to, the parent task's trail) is left out: only jobs reported by notice come
    here, sent with ``ignore_result``.

    The connection's bounds and retries are the app's: ``broker_transport_options``'
    socket timeouts and ``task_publish_retry_policy``'s retries, for connection errors only,
    as kombu's publish retries them. A failure is kombu's OperationalError, as from
    ``send_task``."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    @classmethod
    def for_app(cls, app: Celery) -> _RedisQueues | None:
        url = app.conf.broker_url or ""
        if not url.startswith(("redis://", "rediss://")) or ";" in url:
            return None  # another transport, or failover between brokers: Celery's producer
        options = app.conf.broker_transport_options or {}
        policy = app.conf.task_publish_retry_policy or {}
        retries = int(policy.get("max_retries", 3) or 0)
        client = redis.Redis.from_url(
            url,
            socket_timeout=options.get("socket_timeout"),
            socket_connect_timeout=options.get("socket_connect_timeout"),
            retry=Retry(
                ConstantBackoff(float(policy.get("interval_step", 0.2))),
                retries,
                supported_errors=(redis.ConnectionError,),
            ),
        )
        return cls(client)

    def send(self, name: str, *, queue: str, task_id: str, args: list[Any], **limits: int) -> None:
        body = json.dumps(
            [args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
        )
        headers: dict[str, Any] = {
            "lang": "py",
            "task": name,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [limits.get("time_limit"), limits.get("soft_time_limit")],
            "root_id": task_id,
            "parent_id": None,
            # For monitors (Flower shows it): the args as sent, cut as Celery cuts its repr.
            "argsrepr": json.dumps(args)[:1024],
            "kwargsrepr": "{}",
            "origin": f"gen{os.getpid()}@{_HOST}",
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        }
        message = {
            "body": base64.b64encode(body.encode()).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "correlation_id": task_id,
                "reply_to": None,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        try:
            self.client.lpush(queue, json.dumps(message))
        except redis.RedisError as e:
            raise OperationalError(f"publishing to {queue}: {e}") from e


_HOST = socket.gethostname()

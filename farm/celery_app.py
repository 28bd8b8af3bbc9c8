"""The Celery app of one orchestrator cluster: configuration, queues and the beat schedule."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Queue

from farm.queues import CHAIN_QUEUE, CONTROL_QUEUE
from farm.settings import ClusterSettings

__all__ = ["create_app"]

_app: Celery | None = None


def create_app(settings: ClusterSettings | None = None) -> Celery:
    """A Celery app for this cluster: its configuration, queues and beat schedule, and no
    tasks. A submitter, beat and Flower send and show tasks by name, so they load neither
    the tasks nor the chain libraries; a process that runs tasks uses create_worker_app."""
    settings = settings or ClusterSettings()
    app = Celery("farm", broker=settings.broker_url, backend=settings.result_backend)
    transport: dict[str, Any] = {}
    if settings.broker_url.startswith(("redis", "rediss")):
        # Unacked messages of a worker that vanished come back after this long; the
        # reconciler republishes overdue jobs sooner.
        transport["visibility_timeout"] = 3600
    backend: dict[str, Any] = {}
    if (settings.result_backend or "").startswith(("redis", "rediss")):
        # Celery retries a result-store connection 20 times a second apart and then declares
        # the app dead for good; a caller should hear of a Redis blink at once, retry it, and
        # fall back on the job table (see FarmClient.wait_for).
        backend["retry_policy"] = {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 0.5,
        }
    app.conf.update(
        result_backend_transport_options=backend,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=settings.task_events,
        result_expires=3600,
        task_default_queue=CONTROL_QUEUE,
        task_queues=[Queue(CONTROL_QUEUE), Queue(CHAIN_QUEUE)],
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport,
        worker_hijack_root_logger=False,
        beat_schedule={
            "farm.reconcile": {
                "task": "farm.reconcile",
                "schedule": settings.reconcile_s,
                "options": {"queue": CONTROL_QUEUE, "expires": settings.reconcile_s},
            }
        },
    )
    from farm.chain_tasks import chain_schedule

    app.conf.beat_schedule.update(chain_schedule(settings))
    return app


def __getattr__(name: str) -> Celery:
    """``farm.celery_app.app`` (what ``celery -A farm.celery_app inspect ...`` looks up): the
    producer app for the cluster the environment configures, built on first use rather than
    at import."""
    global _app
    if name not in ("app", "celery"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        _app = create_app()
    return _app

"""One process's link to a cluster, as a submitter sees it: a Celery app tuned for publishing,
the cluster's stores, the live workers, and waiting for a job's result.

The transcode client (farm.client) and the AI client (farm.ai.client) each hold one; what they
share is here, so neither goes through the other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import SQLAlchemyError

from farm.celery_app import create_app
from farm.errors import FarmError, JobError, ServiceUnavailable
from farm.jobs import JobStore, JobView
from farm.notices import NoticeBoard
from farm.publish import close_queues
from farm.registry import Capabilities
from farm.resources import Resources
from farm.settings import ClusterSettings

__all__ = ["ClusterLink", "JobFailedError", "JobTimeout"]

log = logging.getLogger(__name__)


class JobFailedError(JobError):
    """Raised by a client's ``wait`` when the job failed; ``code`` is the job's error code."""

    def __init__(self, job: JobView) -> None:
        super().__init__(f"job {job.id} failed: {job.error}")
        self.code = job.error_code or "job_failed"
        self.job = job


class JobTimeout(JobError):
    """Raised by a client's ``wait`` when the job is not final in time."""

    code = "wait_timeout"


def _backend_lost(e: RuntimeError) -> bool:
    """Whether Celery's result consumer raised ``e`` because it could not reconnect to the
    result backend (it says the app must be restarted; it recovers on the next call)."""
    return isinstance(e.__cause__, OSError | RedisConnectionError | OperationalError)


def _forget(result: Any) -> None:
    """Stop listening for ``result`` now. Celery does it when the object is collected, where
    a result backend that lost its connection (a Redis restart) raises, unseen, from
    ``__del__`` at whatever moment the collector runs."""
    backend, result.backend = result.backend, None
    try:
        backend.remove_pending_result(result)
    except Exception as e:  # the backend reconnects on its next use
        log.debug("result %s: could not stop listening: %s", result.id, e)


class ClusterLink:
    """A submitter's connection to one cluster: its settings, Celery app and stores."""

    def __init__(self, settings: ClusterSettings, app: Celery | None = None) -> None:
        self.settings = settings
        self.app = app or create_app(self.settings)
        if app is None and self.settings.broker_url.startswith(("redis", "rediss")):
            # A broker host that stops answering must not hold a submit for minutes: a
            # publish is one small write, so a few seconds without a reply mean it is gone.
            self.app.conf.broker_transport_options = {
                **self.app.conf.broker_transport_options,
                "socket_connect_timeout": 3,
                "socket_timeout": 3,
            }
            self.app.conf.task_publish_retry_policy = {
                "max_retries": 1,
                "interval_start": 0,
                "interval_step": 0.2,
                "interval_max": 0.2,
            }
        self.res = Resources(self.settings)
        self._live: tuple[float, list[Capabilities]] = (0.0, [])
        self._notices: NoticeBoard | None = None

    @property
    def jobs(self) -> JobStore:
        return self.res.jobs

    def live_workers(self, fresh: bool = False, within: float = 0.25) -> list[Capabilities]:
        # Heartbeats live for three beats; reading them once per quarter beat is fresh enough
        # and keeps a registry scan off every submission of a busy client.
        now = time.monotonic()
        if fresh or now - self._live[0] > self.settings.heartbeat_s * within:
            self._live = (now, self.res.registry.live())
        return self._live[1]

    def refresh_live(self) -> None:
        """Read the live workers again if they are half as old as a submission allows: a
        waiter calls this while its job runs, so that its next submission does not scan the
        registry first. A registry that cannot be read now is left to that submission."""
        with suppress(FarmError):
            self.live_workers(within=0.125)

    def ask_for_notice(self, spec: dict[str, Any]) -> None:
        """Name this client's notice channel in a job's spec, when it listens there."""
        notify = self.notice_channel()
        if notify is not None:
            spec["notify"] = notify

    def notice_channel(self) -> str | None:
        """This client's notice channel once it listens there (farm.notices), for the spec of
        each job it submits; None while Redis cannot be reached, and its jobs then report
        through Celery's result backend."""
        board = self._notices
        if board is None:
            board = self._notices = NoticeBoard(self.settings.redis_registry_url())
        return board.channel if board.listening or board.start() else None

    @contextmanager
    def publishing(self, job_id: str) -> Iterator[None]:
        """Around the first publish of a recorded job: a broker or result backend that cannot
        be reached is ServiceUnavailable, and the job is failed. The caller is told to try
        again (perhaps on another orchestrator), so the reconciler must not run the job behind
        its back once the broker is back."""
        try:
            yield
        except (OperationalError, OSError, RuntimeError) as e:
            # RuntimeError: Celery's result consumer gave up subscribing to the job's result.
            if isinstance(e, RuntimeError) and not _backend_lost(e):
                raise
            raise self._unpublished(job_id, e) from e

    def _unpublished(self, job_id: str, e: Exception) -> ServiceUnavailable:
        error = ServiceUnavailable(f"broker unreachable: {e.__cause__ or e}")
        self.never_published(job_id, error)
        return error

    def never_published(self, job_id: str, error: BaseException) -> None:
        """Fail a recorded job that was not published, so the reconciler never runs it."""
        code = getattr(error, "code", None) or "input_unstored"
        try:
            self.jobs.fail(job_id, str(code), str(error))
        except SQLAlchemyError as store_error:
            log.warning("job %s was not published and could not be failed: %s", job_id, store_error)

    def wait_for(
        self, job: str | JobView, timeout: float, finished: Callable[[dict[str, Any]], bool]
    ) -> tuple[JobView, dict[str, Any] | None]:
        """Block until the job is final: (view, the task's payload when ``finished`` accepts
        it, else None and the final row). Raises JobTimeout.

        Wakes on the job's notice (farm.notices) or, for a job submitted without one, on the
        result backend's notification, rather than polling the job table; the table is read
        when neither has an answer within a second (a lost notice, a lost backend).
        """
        deadline = time.monotonic() + timeout
        view = self.jobs.get(job) if isinstance(job, str) else job
        while not view.final:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeout(f"job {view.id} still {view.state} after {timeout:g} s")
            notify = view.spec.get("notify")
            if notify is not None:
                board = self._notices
                if board is None or board.channel != notify:
                    # Another client's job (one before a restart): only its row tells.
                    time.sleep(min(remaining, 0.1))
                    view = self.jobs.get(view.id)
                    continue
                notice = board.wait(view.id, min(remaining, 1.0))
                result = notice.get("result") if notice is not None else None
                if isinstance(result, dict) and finished(result):
                    return view, result
                view = self.jobs.get(view.id)
                continue
            payload: Any = None
            result = self.app.AsyncResult(view.task_id)
            try:
                payload = result.get(
                    timeout=min(remaining, 1.0), propagate=False, disable_sync_subtasks=False
                )
            except CeleryTimeout:
                pass
            except (OSError, FarmError, RedisConnectionError, OperationalError):
                # The backend restarted or blinked; the job table still has the truth.
                time.sleep(min(0.2, max(remaining, 0)))
            finally:
                _forget(result)
            if isinstance(payload, dict) and finished(payload):
                # The task returns exactly what it recorded, after recording it.
                return view, payload
            view = self.jobs.get(view.id)
            if payload is not None and not view.final:
                time.sleep(0.05)  # a result for a superseded message; the row decides
        return view, None

    def close(self) -> None:
        """Release broker, backend and database connections."""
        if self._notices is not None:
            self._notices.close()
            self._notices = None
        self.res.close()
        close_queues(self.app)
        self.app.close()

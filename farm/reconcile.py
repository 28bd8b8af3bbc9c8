"""The reconciler: what brings back a job whose message, worker or broker was lost."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from celery import Celery

from farm import metrics
from farm.ai.routing import route_ai
from farm.ai.stream import streams_of
from farm.brokerwatch import lost_messages
from farm.errors import InsufficientCapacity, NoCapacity
from farm.jobs import JobView
from farm.publish import publish, publish_ai
from farm.queues import STREAM_QUEUE_PREFIX, stream_queue_owner
from farm.registry import Capabilities
from farm.resources import Resources
from farm.router import Need, route_transcode

__all__ = ["reconcile"]

log = logging.getLogger(__name__)


def reconcile(app: Celery, res: Resources) -> dict[str, int]:
    """Republish jobs queued or running past their deadline, running on a worker that is
    gone, queued in the own queue of a worker that is gone (a stream's segment sent to the
    worker that kept its encoders, farm.router.route_stream), or queued in a broker that
    lost them; fail those out of attempts. A republished job goes to its capability queue.

    Beat runs it on the control queue (farm.tasks); a node with no local worker runs it
    itself (farm.remote.api). Two passes at once republish each job once: the job row's
    publish count is the guard (JobStore.republished).
    """
    counts = {"republished": 0, "failed": 0, "unroutable": 0}
    live = res.registry.live()
    names = {w.worker for w in live}
    stuck = {j.id: j for j in res.jobs.overdue()}
    stuck.update({j.id: j for j in res.jobs.orphaned(names)})
    # Nobody else consumes a worker's own queue: its jobs need not wait out their timeout.
    stuck.update(
        {
            j.id: j
            for j in res.jobs.queued_in(STREAM_QUEUE_PREFIX)
            if stream_queue_owner(j.queue) not in names
        }
    )
    # A flushed or restarted broker lost every queued message: those jobs need not wait out
    # their queued timeout.
    lost = lost_messages(res.jobs, res.settings.broker_url)
    if lost:
        log.warning("republishing %d queued job(s) the broker lost", len(lost))
    stuck.update({j.id: j for j in lost})
    for job in stuck.values():
        if job.kind == "ai":
            outcome = _republish_ai(app, res, job, live)
            counts[outcome] = counts.get(outcome, 0) + 1
            continue
        if job.publishes > res.settings.max_attempts:
            if res.jobs.fail(
                job.id,
                "max_attempts",
                f"not completed after {job.publishes} publishes; "
                f"last error: {job.error or 'worker lost or broker lost the task'}",
            ):
                counts["failed"] += 1
                metrics.job_failed("max_attempts")
            continue
        need = Need(**job.spec["need"])
        try:
            route = route_transcode(need, live)
        except NoCapacity as e:
            counts["unroutable"] += 1
            since = job.updated_at or job.created_at
            waited = (datetime.now(UTC) - since).total_seconds()
            if waited <= res.settings.capacity_wait_s:
                # Not an attempt: the job waits, queued, for a worker that can take it.
                log.warning("job %s overdue, waiting %.0f s for capacity: %s", job.id, waited, e)
                res.jobs.await_capacity(job.id)
            elif res.jobs.fail(
                job.id, NoCapacity.code, f"no live worker could take it for {waited:.0f} s: {e}"
            ):
                counts["failed"] += 1
                metrics.job_failed(NoCapacity.code)
            continue
        task_id = f"{job.id}.{job.publishes + 1}"
        if res.jobs.republished(job, task_id, route.queue):
            publish(app, queue=route.queue, job_id=job.id, task_id=task_id, spec=job.spec)
            counts["republished"] += 1
            metrics.job_republished()
            log.info("republished overdue job %s to %s as %s", job.id, route.queue, task_id)
    return counts


def _republish_ai(app: Celery, res: Resources, job: JobView, live: list[Capabilities]) -> str:
    """The reconciler's step for an overdue AI job: route it afresh, or fail it when nothing
    can take it. Returns "republished", "failed" or "skipped"."""
    spec = {**job.spec, "tried": [], "reasons": job.spec.get("reasons", [])}
    if job.publishes > res.settings.max_attempts + len(spec["reasons"]):
        message = f"not completed after {job.publishes} publishes; last error: {job.error}"
        if not res.jobs.fail(job.id, "max_attempts", message):
            return "skipped"
        metrics.ai_job_failed(spec["pipeline"], spec["model_id"], "max_attempts")
        return "failed"
    try:
        route = route_ai(spec["pipeline"], spec["model_id"], live)
    except NoCapacity as e:
        if res.jobs.fail(job.id, InsufficientCapacity.code, str(e)):
            metrics.ai_job_failed(spec["pipeline"], spec["model_id"], InsufficientCapacity.code)
            if spec.get("params", {}).get("stream"):
                streams_of(app, res).error(job.id, InsufficientCapacity.code, str(e))
            return "failed"
        return "skipped"
    task_id = f"{job.id}.{job.publishes + 1}"
    if not res.jobs.republished(job, task_id, route.queue, spec=spec):
        return "skipped"
    publish_ai(app, queue=route.queue, job_id=job.id, task_id=task_id, spec=spec)
    metrics.job_republished()
    return "republished"

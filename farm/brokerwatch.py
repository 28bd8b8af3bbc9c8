"""Noticing a broker that lost its messages: flushed, or restarted without them.

The job table knows which jobs are queued; the broker may not any more. A Redis broker
carries an epoch key the reconciler sets when it is missing; the broker's identity is that
key's value with the server's run id (new on every restart). The reconciler keeps the last
identity it saw in the job table (``farm_meta``): when it changes, every queued job is
republished at once instead of after its queued timeout. Republishing is a compare-and-set
(JobStore.republished), so a job a message did survive for runs once: the older message's
claim is refused as stale.

RabbitMQ keeps durable queues across restarts, and offers no such identity: there, queued
jobs are republished after ``FARM_QUEUED_TIMEOUT_S`` as before.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

import redis

from farm.jobs import JobStore, JobView
from farm.jobs.models import utcnow
from farm.registry import redis_py_url

__all__ = ["EPOCH_KEY", "broker_changed", "broker_identity", "lost_messages"]

log = logging.getLogger(__name__)

_REDIS = ("redis://", "rediss://", "redis+socket://")
#: The broker key whose absence means the broker lost its data.
EPOCH_KEY = "farm:broker:epoch"
#: Where the job table keeps the broker identity the reconciler last saw.
META_KEY = "broker"
#: And when the reconciler last found the broker changed (ISO 8601, UTC).
LOST_AT_KEY = "broker_lost_at"


def broker_identity(broker_url: str) -> str | None:
    """The broker instance's identity now (``run_id/epoch``), setting the epoch key when it
    is missing; None for a broker that has none (not Redis)."""
    if not broker_url.startswith(_REDIS):
        return None
    client = redis.Redis.from_url(redis_py_url(broker_url), socket_timeout=5)
    try:
        client.set(EPOCH_KEY, uuid.uuid4().hex, nx=True)
        epoch = client.get(EPOCH_KEY)
        try:
            run_id = client.info("server").get("run_id", "")
        except redis.ResponseError:  # INFO refused (an ACL, a managed Redis): the epoch alone
            run_id = ""
    finally:
        client.close()
    return f"{run_id}/{epoch.decode() if isinstance(epoch, bytes) else epoch}"


def broker_changed(jobs: JobStore, broker_url: str) -> bool:
    """True for the one caller that first sees a broker other than the one last recorded
    (flushed or restarted); False when it is the same, when none was recorded yet (this is
    the first look), or when the broker cannot be asked now."""
    try:
        now = broker_identity(broker_url)
    except redis.RedisError as e:
        log.warning("cannot read the broker's identity: %s", e)
        return False
    if now is None:
        return False
    seen = jobs.meta(META_KEY)
    if seen == now:
        return False
    if not jobs.swap_meta(META_KEY, seen, now):
        return False  # another reconciler saw the change first
    if seen is None:
        return False
    log.warning("the broker was flushed or restarted (was %s, now %s)", seen, now)
    jobs.swap_meta(LOST_AT_KEY, jobs.meta(LOST_AT_KEY), utcnow().isoformat())
    return True


def lost_messages(jobs: JobStore, broker_url: str) -> list[JobView]:
    """Queued jobs whose message the broker lost: those not published again since the
    broker was last found flushed or restarted (checked now). A job no worker could take yet
    stays in this list until it is republished, so a registry that shares the broker's Redis
    and was flushed with it delays it only until the workers' next heartbeat."""
    if not broker_url.startswith(_REDIS):
        return []
    broker_changed(jobs, broker_url)
    lost_at = jobs.meta(LOST_AT_KEY)
    if lost_at is None:
        return []
    return jobs.queued(before=datetime.fromisoformat(lost_at))

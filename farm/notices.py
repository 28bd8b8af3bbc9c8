"""Completion notices: how a submitter hears that its job is final, without polling.

The job row is the truth; a notice only wakes the one waiting for it. Each submitting client
listens on one Redis channel of its own (``farm:done:<id>``), subscribed once before its first
submit, and names that channel in the jobs it submits (``spec["notify"]``). The attempt that
finishes a job publishes one notice there after its row is recorded: the job's result when it
is done, or just its state when it failed.

This replaces Celery's result backend on the segment path, which subscribed, unsubscribed,
subscribed again and read a key for every job on the client, and stored each result a second
time on the worker. A notice that is lost (Redis restarting, the listener reconnecting, a
client that is gone) costs only latency: a waiter reads the job row at least once a second.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

import redis

from farm.registry import redis_py_url

__all__ = ["NOTICE_PREFIX", "Announcer", "NoticeBoard", "notice_channel"]

log = logging.getLogger(__name__)

NOTICE_PREFIX = "farm:done:"
#: How long a notice nobody has waited for yet is kept (a caller that submits, does other
#: work, then waits).
_KEEP_S = 120.0
_MAX_KEPT = 10_000


def notice_channel(owner: str) -> str:
    return NOTICE_PREFIX + owner


class Announcer:
    """The worker's side: publish a job's notice (best effort; the row already has it)."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(
            redis_py_url(url), socket_timeout=2, socket_connect_timeout=2
        )

    def announce(
        self, channel: Any, job_id: str, state: str, result: dict[str, Any] | None = None
    ) -> None:
        if not isinstance(channel, str) or not channel.startswith(NOTICE_PREFIX):
            return  # a job submitted without a notice channel, or a malformed spec
        notice = {"job_id": job_id, "state": state, "result": result}
        try:
            self._redis.publish(channel, json.dumps(notice, separators=(",", ":")))
        except redis.RedisError as e:
            log.info("job %s: notice not sent (the waiter reads the row): %s", job_id, e)

    def close(self) -> None:
        self._redis.close()


class NoticeBoard:
    """The submitter's side: one listener thread on this client's channel, and the notices it
    has received, kept until waited for (or for two minutes)."""

    def __init__(self, url: str, owner: str | None = None) -> None:
        self.url = url
        self.channel = notice_channel(owner or uuid.uuid4().hex)
        self._lock = threading.Lock()
        self._notices: dict[str, tuple[float, dict[str, Any]]] = {}
        self._waiters: dict[str, threading.Event] = {}
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pubsub: Any = None

    @property
    def client_name(self) -> str:
        """The listener's name in Redis's CLIENT LIST."""
        return self.channel.replace(":", "-")

    @property
    def listening(self) -> bool:
        thread = self._thread  # none in a process forked from the one that started it
        return self._subscribed.is_set() and thread is not None and thread.is_alive()

    def start(self, timeout: float = 2.0) -> bool:
        """Start listening and wait up to ``timeout`` for the subscription; False when Redis
        could not be reached. Only the call that starts the listener waits: while it is
        reconnecting, later calls answer at once, so submissions are not held up by it."""
        with self._lock:
            started = self._thread is None or not self._thread.is_alive()
            if started:
                self._stopping.clear()
                self._subscribed.clear()
                self._thread = threading.Thread(
                    target=self._listen, name="farm-notices", daemon=True
                )
                self._thread.start()
        return self._subscribed.wait(timeout if started else 0)

    def wait(self, job_id: str, timeout: float) -> dict[str, Any] | None:
        """The job's notice, or None when none came within ``timeout`` seconds."""
        with self._lock:
            kept = self._notices.pop(job_id, None)
            if kept is not None:
                return kept[1]
            event = self._waiters.setdefault(job_id, threading.Event())
        try:
            event.wait(timeout)
        finally:
            with self._lock:
                if self._waiters.get(job_id) is event:
                    del self._waiters[job_id]
                kept = self._notices.pop(job_id, None)
        return kept[1] if kept is not None else None

    def close(self) -> None:
        self._stopping.set()
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception as e:  # closing a connection the thread may be reading
                log.debug("closing the notice listener: %s", e)
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def _received(self, raw: bytes) -> None:
        try:
            notice = json.loads(raw)
            job_id = notice["job_id"]
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring a malformed job notice on %s", self.channel)
            return
        if not isinstance(job_id, str):
            return
        now = time.monotonic()
        with self._lock:
            self._notices[job_id] = (now, notice)
            event = self._waiters.get(job_id)
            if (
                len(self._notices) > _MAX_KEPT
                or next(iter(self._notices.values()))[0] < now - _KEEP_S
            ):
                self._prune(now)
        if event is not None:
            event.set()

    def _prune(self, now: float) -> None:
        for key in [k for k, (at, _) in self._notices.items() if at < now - _KEEP_S]:
            del self._notices[key]
        while len(self._notices) > _MAX_KEPT:
            del self._notices[next(iter(self._notices))]

    def _listen(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            client = redis.Redis.from_url(
                redis_py_url(self.url),
                socket_connect_timeout=2,
                health_check_interval=10,
                client_name=self.client_name,
            )
            pubsub = client.pubsub(ignore_subscribe_messages=False)
            self._pubsub = pubsub
            try:
                pubsub.subscribe(self.channel)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._subscribed.set()
                        delay = 0.1
                    elif message["type"] == "message":
                        self._received(message["data"])
            except Exception as e:
                # A Redis or socket error, or (closed under the reader by close()) whatever
                # redis-py raises from a connection it no longer has: the listener must
                # outlive it, since waiters fall back to the row only while it is away.
                if self._stopping.is_set():
                    break
                log.warning("job notices on %s interrupted, reconnecting: %s", self.channel, e)
            finally:
                self._subscribed.clear()
                try:
                    pubsub.close()
                    client.close()
                except Exception as e:  # already broken
                    log.debug("closing the notice connection: %s", e)
            self._stopping.wait(delay)
            delay = min(delay * 2, 2.0)
